import Foundation
import Testing

/// Archives written by the tar writers layers come from, when the tools are installed.
enum PeerArchives {
    /// The writers and tools `make` runs; it also needs root (owners above 65535).
    static let requirements: [Requirement] = [.root(because: "the peer archives hold files owned by uid 3000000"),
                                              .tools("bash", "tar", "bsdtar", "python3", "setfattr")]

    /// A tree with a file with a user xattr, a 9 GiB sparse file with two data regions, a path
    /// and a symlink target longer than 100 bytes, a file owned by uid 3000000, written by GNU
    /// tar (gnu, oldgnu, posix with each sparse version, ustar), bsdtar (pax, ustar) and Python
    /// (pax, gnu, ustar). The formats that cannot hold a file get the tree without it.
    static func make(in dir: String) throws -> [String] {
        let script = #"""
        set -euo pipefail
        out=$1; cd "$out"
        mkdir -p full/dir small/dir
        long=$(printf 'l%.0s' {1..60})/$(printf 'm%.0s' {1..70})
        for t in full small; do
          printf 'hello\n' > $t/dir/file; setfattr -n user.comment -v hi $t/dir/file
          mkdir -p "$t/$long"; echo x > "$t/$long/f"
          touch $t/bigid; chown 3000000:3000001 $t/bigid 2>/dev/null || true
        done
        ln -s "$long/f" full/longlink
        truncate -s 9G full/sparse
        printf middle | dd of=full/sparse bs=1 seek=4294967296 conv=notrunc status=none
        printf end | dd of=full/sparse bs=1 seek=$((9*1024*1024*1024-3)) conv=notrunc status=none
        tar --format=gnu --sparse --xattrs -cf gnutar-gnu.tar -C full .
        tar --format=oldgnu --sparse -cf gnutar-oldgnu.tar -C full .
        for v in 0.0 0.1 1.0; do tar --format=posix --sparse --sparse-version=$v --xattrs -cf gnutar-posix-$v.tar -C full .; done
        tar --format=ustar -cf gnutar-ustar.tar -C small dir
        bsdtar --format=pax -cf bsdtar-pax.tar -C full .
        bsdtar --format=ustar -cf bsdtar-ustar.tar -C small dir
        python3 - "$out" <<'PY'
        import sys, tarfile, io
        out = sys.argv[1]
        long = "long/" + "d" * 80 + "/" + "f" * 90 + "-caf\u00e9.txt"
        for fmt, name in ((tarfile.PAX_FORMAT, "python-pax.tar"), (tarfile.GNU_FORMAT, "python-gnu.tar"), (tarfile.USTAR_FORMAT, "python-ustar.tar")):
            with tarfile.open(out + "/" + name, "w", format=fmt) as t:
                d = tarfile.TarInfo("dir"); d.type = tarfile.DIRTYPE; d.mode = 0o755; t.addfile(d)
                f = tarfile.TarInfo("dir/file"); f.size = 6; f.mtime = 1700000000.5 if fmt == tarfile.PAX_FORMAT else 1700000000
                if fmt == tarfile.PAX_FORMAT: f.pax_headers = {"SCHILY.xattr.user.comment": "hi"}
                t.addfile(f, io.BytesIO(b"hello\n"))
                if fmt != tarfile.USTAR_FORMAT:
                    l = tarfile.TarInfo(long); l.size = 2; l.uid = 3000000; l.gid = 3000001; t.addfile(l, io.BytesIO(b"x\n"))
                    s = tarfile.TarInfo("link"); s.type = tarfile.SYMTYPE; s.linkname = long; t.addfile(s)
        PY
        rm -rf full small
        """#
        let result = try run(try requireTool("bash"), ["-c", script, "peer-archives", dir])
        try #require(result.status == 0, "peer archives: \(result.stderr)")
        return try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tar") }.sorted().map { dir + "/" + $0 }
    }
}
