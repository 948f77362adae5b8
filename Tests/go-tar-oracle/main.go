// Command go-tar-oracle reads tar archives with Go's archive/tar, the reader containerd, Docker
// and umoci use, and says for each whether Go accepts it. LayerKit's differential test
// (TarStrictnessTests) runs it over a corpus and compares its answers with LayerKit's.
//
// Usage: go-tar-oracle [-v] FILE...
//
//	go-tar-oracle -write DIR
//
// For each FILE, one line: "accept" or "reject<TAB><Go's error>". An archive is accepted when
// Next returns io.EOF after every entry was read, data included (as an extractor does: a sparse
// file's map is checked against its data only when the data is read). With -v, each entry is
// also printed (type, name, link, size, mode, owner, mtime, device, xattrs), for debugging.
//
// With -write, it writes archives made by Go's tar.Writer into DIR instead (go-pax.tar,
// go-gnu.tar, go-ustar.tar), for the tests of archives every reader must accept.
//
// Built offline with Debian's Go: GO111MODULE=off go build -o DIR/go-tar-oracle main.go
package main

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-write" {
		if err := writeSamples(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "go-tar-oracle:", err)
			os.Exit(1)
		}
		return
	}
	verbose := false
	files := os.Args[1:]
	if len(files) > 0 && files[0] == "-v" {
		verbose = true
		files = files[1:]
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, name := range files {
		if err := check(name, verbose, out); err != nil {
			fmt.Fprintf(out, "reject\t%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintln(out, "accept")
		}
	}
}

func check(name string, verbose bool, out *bufio.Writer) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	// A plain reader: no Seek, so skipped data is read like a pipe's.
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if verbose {
			describe(hdr, out)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return err
		}
	}
}

func describe(hdr *tar.Header, out *bufio.Writer) {
	var xattrs []string
	for key, value := range hdr.PAXRecords {
		if strings.HasPrefix(key, "SCHILY.xattr.") {
			xattrs = append(xattrs, fmt.Sprintf("%q=%q", strings.TrimPrefix(key, "SCHILY.xattr."), value))
		}
	}
	sort.Strings(xattrs)
	fmt.Fprintf(out, "#\ttype=%q name=%q link=%q size=%d mode=%o uid=%d gid=%d mtime=%d.%09d dev=%d,%d xattrs=[%s]\n",
		hdr.Typeflag, hdr.Name, hdr.Linkname, hdr.Size, hdr.Mode, hdr.Uid, hdr.Gid,
		hdr.ModTime.Unix(), hdr.ModTime.Nanosecond(), hdr.Devmajor, hdr.Devminor, strings.Join(xattrs, " "))
}

// writeSamples writes archives with Go's writer: the formats containerd and Docker produce.
func writeSamples(dir string) error {
	long := "long/" + strings.Repeat("d", 80) + "/" + strings.Repeat("f", 90) + "-caf\u00e9.txt"
	when := time.Unix(1700000000, 123456789)
	type sample struct {
		file    string
		format  tar.Format
		headers []*tar.Header
	}
	samples := []sample{
		{"go-pax.tar", tar.FormatPAX, []*tar.Header{
			{Typeflag: tar.TypeDir, Name: "long/", Mode: 0o755, ModTime: when},
			{Typeflag: tar.TypeReg, Name: long, Mode: 0o644, Size: 5, ModTime: when, Uid: 3000000, Gid: 3000001,
				PAXRecords: map[string]string{"SCHILY.xattr.user.comment": "hello", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
			{Typeflag: tar.TypeSymlink, Name: "link", Linkname: long, Mode: 0o777, ModTime: when},
			{Typeflag: tar.TypeLink, Name: "hard", Linkname: long, ModTime: when},
			{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: when},
		}},
		{"go-gnu.tar", tar.FormatGNU, []*tar.Header{
			{Typeflag: tar.TypeReg, Name: long, Mode: 0o644, Size: 5, ModTime: time.Unix(-100000, 0), Uid: 3000000, Gid: 3000001},
			{Typeflag: tar.TypeSymlink, Name: "link", Linkname: long, Mode: 0o777, ModTime: time.Unix(1700000000, 0)},
			{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o600, ModTime: time.Unix(1700000000, 0)},
		}},
		{"go-ustar.tar", tar.FormatUSTAR, []*tar.Header{
			{Typeflag: tar.TypeDir, Name: "a/" + strings.Repeat("p", 90) + "/", Mode: 0o755, ModTime: time.Unix(1700000000, 0)},
			{Typeflag: tar.TypeReg, Name: "a/" + strings.Repeat("p", 90) + "/" + strings.Repeat("n", 90), Mode: 0o4755, Size: 5, ModTime: time.Unix(1700000000, 0)},
		}},
	}
	for _, s := range samples {
		f, err := os.Create(filepath.Join(dir, s.file))
		if err != nil {
			return err
		}
		tw := tar.NewWriter(f)
		for _, h := range s.headers {
			h.Format = s.format
			if err := tw.WriteHeader(h); err != nil {
				return fmt.Errorf("%s: %s: %w", s.file, h.Name, err)
			}
			if h.Size > 0 {
				if _, err := tw.Write([]byte("data\n")); err != nil {
					return err
				}
			}
		}
		if err := tw.Close(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
