// snapshotter-tool: containerd's own client code driving `layertool snapshotter` (directly
// through snapshots/proxy, or through a containerd daemon), for the Swift tests.
//
//	snapshotter-tool pull --containerd SOCK --snapshotter NAME [--namespace NS] REF
//	    containerd's Pull with its unpacker (WithPullUnpack: the path CRI, nerdctl and BuildKit
//	    take, which labels each layer's snapshot with containerd.io/snapshot.ref) from a
//	    plain-HTTP registry; prints the image's chainID.
//	snapshotter-tool stress --address SOCK [--clients N] [--rounds R]
//	    N clients, each on its own connection, Prepare/Commit/View/Remove at once on a shared base.
//	snapshotter-tool sequence --address SOCK
//	    a fixed, re-runnable sequence (prepare, write, commit, prepare on it, commit, view, check
//	    the files through a real mount, remove); exits 3 when the server goes away mid-way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/opencontainers/image-spec/identity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) < 2 {
		fail(2, "usage: snapshotter-tool pull|stress|sequence ...")
	}
	var err error
	switch os.Args[1] {
	case "pull":
		err = pull(os.Args[2:])
	case "stress":
		err = stress(os.Args[2:])
	case "sequence":
		err = sequence(os.Args[2:])
	default:
		fail(2, "unknown command %q", os.Args[1])
	}
	if err != nil {
		if isServerGone(err) {
			fail(3, "server gone: %v", err)
		}
		fail(1, "%v", err)
	}
}

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "snapshotter-tool: "+format+"\n", args...)
	os.Exit(code)
}

// isServerGone: the connection broke or no server listens (the error containerd's proxy sees).
func isServerGone(err error) bool {
	if s, ok := status.FromError(errors.Unwrap(err)); ok && s.Code() == codes.Unavailable && !strings.Contains(s.Message(), "layertool") {
		return true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable && !strings.Contains(s.Message(), "layertool") {
		return true
	}
	return errdefs.IsUnavailable(err) || strings.Contains(err.Error(), "connection refused") ||
		strings.Contains(err.Error(), "transport is closing") || strings.Contains(err.Error(), "error reading from server")
}

func connect(address string) (snapshots.Snapshotter, func(), error) {
	conn, err := grpc.Dial(dialer.DialAddress(address), grpc.WithInsecure(), grpc.WithContextDialer(dialer.ContextDialer))
	if err != nil {
		return nil, nil, err
	}
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "layertool"), func() { conn.Close() }, nil
}

// MARK: pull

func pull(args []string) error {
	flags := flag.NewFlagSet("pull", flag.ExitOnError)
	address := flags.String("containerd", "", "containerd's socket")
	snapshotter := flags.String("snapshotter", "layertool", "snapshotter")
	namespace := flags.String("namespace", "default", "namespace")
	flags.Parse(args)
	if flags.NArg() != 1 {
		return errors.New("pull needs one image reference")
	}
	client, err := containerd.New(*address, containerd.WithTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), *namespace)
	resolver := docker.NewResolver(docker.ResolverOptions{PlainHTTP: true})
	start := time.Now()
	image, err := client.Pull(ctx, flags.Arg(0), containerd.WithPullUnpack, containerd.WithPullSnapshotter(*snapshotter),
		containerd.WithResolver(resolver))
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	diffIDs, err := image.RootFS(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("pulled %s in %.3f s; chainID %s\n", image.Name(), elapsed.Seconds(), identity.ChainID(diffIDs))
	return nil
}

// MARK: stress

func stress(args []string) error {
	flags := flag.NewFlagSet("stress", flag.ExitOnError)
	address := flags.String("address", "", "the snapshotter's socket")
	clients := flags.Int("clients", 6, "concurrent clients")
	rounds := flags.Int("rounds", 10, "rounds per client")
	flags.Parse(args)
	ctx := namespaces.WithNamespace(context.Background(), "stress")

	sn, closeBase, err := connect(*address)
	if err != nil {
		return err
	}
	defer closeBase()
	if _, err := sn.Prepare(ctx, "base-active", ""); err != nil {
		return fmt.Errorf("prepare base: %w", err)
	}
	if err := writeInto(ctx, sn, "base-active", "base", "base\n"); err != nil {
		return err
	}
	if err := sn.Commit(ctx, "base", "base-active"); err != nil {
		return fmt.Errorf("commit base: %w", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, *clients*2)
	var duplicateWins, duplicateLosses int
	var counts sync.Mutex
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			client, closeClient, err := connect(*address)
			if err != nil {
				errs <- err
				return
			}
			defer closeClient()
			for r := 0; r < *rounds; r++ {
				key := fmt.Sprintf("c%d-r%d", c, r)
				if _, err := client.Prepare(ctx, key, "base"); err != nil {
					errs <- fmt.Errorf("client %d: prepare %s: %w", c, key, err)
					return
				}
				// Every client also races every other for one shared key per round: one wins.
				if _, err := client.Prepare(ctx, fmt.Sprintf("shared-r%d", r), "base"); err == nil {
					counts.Lock()
					duplicateWins++
					counts.Unlock()
				} else if errdefs.IsAlreadyExists(err) {
					counts.Lock()
					duplicateLosses++
					counts.Unlock()
				} else {
					errs <- fmt.Errorf("client %d: prepare shared-r%d: %w", c, r, err)
					return
				}
				if err := writeInto(ctx, client, key, "file", key); err != nil {
					errs <- fmt.Errorf("client %d: %w", c, err)
					return
				}
				name := "committed-" + key
				if err := client.Commit(ctx, name, key); err != nil {
					errs <- fmt.Errorf("client %d: commit %s: %w", c, key, err)
					return
				}
				if err := client.Remove(ctx, "base"); err == nil || !errdefs.IsFailedPrecondition(err) {
					errs <- fmt.Errorf("client %d: removing base (which has children) gave %v, expected failed precondition", c, err)
					return
				}
				if r%2 == 1 {
					if err := client.Remove(ctx, name); err != nil {
						errs <- fmt.Errorf("client %d: remove %s: %w", c, name, err)
						return
					}
				} else if info, err := client.Stat(ctx, name); err != nil || info.Kind != snapshots.KindCommitted || info.Parent != "base" {
					errs <- fmt.Errorf("client %d: stat %s: %+v, %v", c, name, info, err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	if duplicateWins != *rounds || duplicateLosses != *rounds*(*clients-1) {
		return fmt.Errorf("shared keys: %d prepares won and %d lost, expected %d and %d", duplicateWins, duplicateLosses, *rounds, *rounds*(*clients-1))
	}
	// What is left: base, the even rounds' commits, the shared actives.
	var committed, active int
	if err := sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		switch info.Kind {
		case snapshots.KindCommitted:
			committed++
		case snapshots.KindActive:
			active++
		}
		return nil
	}); err != nil {
		return err
	}
	wantCommitted := 1 + *clients*((*rounds+1)/2)
	if committed != wantCommitted || active != *rounds {
		return fmt.Errorf("left %d committed and %d active snapshots, expected %d and %d", committed, active, wantCommitted, *rounds)
	}
	// Each surviving commit still reads back its own file over the base.
	for c := 0; c < *clients; c++ {
		for r := 0; r < *rounds; r += 2 {
			key := fmt.Sprintf("c%d-r%d", c, r)
			if err := checkView(ctx, sn, "committed-"+key, map[string]string{"base": "base\n", "file": key}); err != nil {
				return err
			}
		}
	}
	fmt.Printf("stress: %d clients x %d rounds: %d committed, %d active left, consistent\n", *clients, *rounds, committed, active)
	return nil
}

// writeInto writes name=content into an active snapshot, mounted as containerd would.
func writeInto(ctx context.Context, sn snapshots.Snapshotter, key, name, content string) error {
	mounts, err := sn.Mounts(ctx, key)
	if err != nil {
		return fmt.Errorf("mounts of %s: %w", key, err)
	}
	return withMount(mounts, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
	})
}

// checkView mounts a view of `name` and compares the files it should hold.
func checkView(ctx context.Context, sn snapshots.Snapshotter, name string, files map[string]string) error {
	view := "view-of-" + name
	mounts, err := sn.View(ctx, view, name)
	if err != nil {
		return fmt.Errorf("view %s: %w", name, err)
	}
	defer sn.Remove(ctx, view)
	return withMount(mounts, func(dir string) error {
		for file, want := range files {
			got, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				return fmt.Errorf("view of %s: %w", name, err)
			}
			if string(got) != want {
				return fmt.Errorf("view of %s: %s holds %q, expected %q", name, file, got, want)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "must-fail"), []byte("x"), 0o644); err == nil {
			return fmt.Errorf("view of %s is writable", name)
		}
		return nil
	})
}

func withMount(mounts []mount.Mount, body func(dir string) error) error {
	dir, err := os.MkdirTemp("", "snapshotter-tool-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return fmt.Errorf("mount %+v: %w", mounts, err)
	}
	defer mount.UnmountAll(dir, 0)
	return body(dir)
}

// MARK: sequence

func sequence(args []string) error {
	flags := flag.NewFlagSet("sequence", flag.ExitOnError)
	address := flags.String("address", "", "the snapshotter's socket")
	flags.Parse(args)
	ctx := namespaces.WithNamespace(context.Background(), "sequence")
	sn, closeConn, err := connect(*address)
	if err != nil {
		return err
	}
	defer closeConn()
	exists := func(name string) (bool, error) {
		_, err := sn.Stat(ctx, name)
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}
	step := func(name string, run func() error) error {
		if err := run(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Println("done:", name)
		return nil
	}
	prepareWriteCommit := func(active, parent, committed, file, content string) error {
		if done, err := exists(committed); err != nil || done {
			return err
		}
		if there, err := exists(active); err != nil {
			return err
		} else if !there {
			if err := step("prepare "+active, func() error { _, err := sn.Prepare(ctx, active, parent); return err }); err != nil {
				return err
			}
		}
		if err := step("write "+file, func() error { return writeInto(ctx, sn, active, file, content) }); err != nil {
			return err
		}
		return step("commit "+committed, func() error { return sn.Commit(ctx, committed, active) })
	}
	if err := prepareWriteCommit("a1", "", "c1", "one", "1\n"); err != nil {
		return err
	}
	if err := prepareWriteCommit("a2", "c1", "c2", "two", "2\n"); err != nil {
		return err
	}
	if there, err := exists("view-of-c2"); err != nil {
		return err
	} else if there {
		if err := step("remove the view left by the last run", func() error { return sn.Remove(ctx, "view-of-c2") }); err != nil {
			return err
		}
	}
	if err := step("view c2", func() error { return checkView(ctx, sn, "c2", map[string]string{"one": "1\n", "two": "2\n"}) }); err != nil {
		return err
	}
	for _, name := range []string{"a3", "c2"} {
		if name == "a3" {
			if there, err := exists("a3"); err != nil {
				return err
			} else if !there {
				if err := step("prepare a3", func() error { _, err := sn.Prepare(ctx, "a3", "c1"); return err }); err != nil {
					return err
				}
			}
		}
		if err := step("remove "+name, func() error { return sn.Remove(ctx, name) }); err != nil {
			return err
		}
	}
	var names []string
	if err := sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		names = append(names, fmt.Sprintf("%s(%v)", info.Name, info.Kind))
		return nil
	}); err != nil {
		return err
	}
	if len(names) != 1 || names[0] != "c1(Committed)" {
		return fmt.Errorf("left %v, expected only c1(Committed)", names)
	}
	fmt.Println("sequence complete")
	return nil
}
