// containerd's snapshotter conformance suite (snapshots/testsuite, from Debian's containerd 1.6
// Go sources) run against `layertool snapshotter`, reached the way containerd reaches a proxy
// plugin: snapshots/proxy over a gRPC connection to its unix socket.
//
// Each case gets its own server on its own store (the suite's root dir for that case); the
// cleanup stops it with SIGTERM and checks it exits 0 and removes its socket.
//
//	LAYERTOOL=/path/to/layertool ./conformance.test -test.v
package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/pkg/dialer"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func TestLayertoolSnapshotter(t *testing.T) {
	binary := os.Getenv("LAYERTOOL")
	if binary == "" {
		t.Fatal("LAYERTOOL must name the layertool binary")
	}
	testsuite.SnapshotterSuite(t, "Layertool", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		socket := filepath.Join(filepath.Dir(root), "snapshotter.sock")
		logPath := filepath.Join(filepath.Dir(root), "snapshotter.log")
		logFile, err := os.Create(logPath)
		if err != nil {
			return nil, nil, err
		}
		server := exec.Command(binary, "snapshotter", "--root", root, "--address", socket)
		server.Stdout = logFile
		server.Stderr = logFile
		if err := server.Start(); err != nil {
			logFile.Close()
			return nil, nil, err
		}
		stop := func() error {
			defer logFile.Close()
			if err := server.Process.Signal(syscall.SIGTERM); err != nil {
				return err
			}
			done := make(chan error, 1)
			go func() { done <- server.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					return fmt.Errorf("layertool snapshotter exited with %v; its log:\n%s", err, readFile(logPath))
				}
			case <-time.After(60 * time.Second):
				server.Process.Kill()
				<-done
				return fmt.Errorf("layertool snapshotter did not stop within 60 s of SIGTERM; its log:\n%s", readFile(logPath))
			}
			if _, err := os.Lstat(socket); err == nil {
				return fmt.Errorf("layertool snapshotter left its socket %s behind", socket)
			}
			return nil
		}
		if err := waitForSocket(socket, 60*time.Second); err != nil {
			stop()
			return nil, nil, fmt.Errorf("%v; its log:\n%s", err, readFile(logPath))
		}
		conn, err := grpc.Dial(dialer.DialAddress(socket), grpc.WithInsecure(), grpc.WithContextDialer(dialer.ContextDialer))
		if err != nil {
			stop()
			return nil, nil, err
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "layertool")
		return sn, func() error {
			conn.Close()
			return stop()
		}, nil
	})
}

func waitForSocket(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if conn, err := dialer.ContextDialer(context.Background(), path); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no server answered on %s within %v", path, limit)
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}
