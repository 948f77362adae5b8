import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// One set of union semantics, run against both drivers with the same expected output: kernel
// overlayfs (redirect_dir=off, metacopy=off, index=off) and the FUSE union. Each case builds its
// lower layers, mounts, runs a shell script in the merged dir that prints what it observes, and
// unmounts; the printed observations must be exactly the expected ones for both drivers.

private struct SemanticsCase: CustomTestStringConvertible, Sendable {
    let name: String
    /// Scripts that build each lower layer (top first), run as root with cwd = the layer dir.
    let lowers: [String]
    /// The script run in the merged dir (`show`, `xattrs` available).
    let changes: String
    let expected: String
    var testDescription: String { name }
}

private let cases: [SemanticsCase] = [
    SemanticsCase(
        name: "read-through: the upper, then the lowers top first",
        lowers: ["echo top > a; mkdir d; echo 1 > d/x",
                 "echo bottom > a; echo b2 > b; mkdir d; echo 2 > d/y"],
        changes: "cat a b d/x d/y; ls d",
        expected: "top\nb2\n1\n2\nx\ny\n"),
    SemanticsCase(
        name: "copy-up keeps content, owner, mode, times and xattrs",
        lowers: ["""
            mkdir -m 750 dir; chown 7:8 dir; echo data > dir/f; chown 1234:5678 dir/f; chmod 640 dir/f
            setfattr -n user.color -v blue dir/f; touch -d @1000000000 dir/f
            echo g > g; echo h > h; echo i > i; touch -d @1000000000 g h i
            """],
        changes: """
            echo more >> dir/f; show dir dir/f; xattrs dir/f | grep -v '^#'; cat dir/f
            chmod 600 g; show g; stat -c %Y g
            chown 42:43 h; show h; stat -c %Y h
            touch -m -d @2000000000 i; stat -c %Y i
            setfattr -n user.k -v v g; xattrs g | grep -v '^#'
            """,
        expected: """
            dir: dir 750 7:8
            dir/f: file 640 1234:5678 size=10 nlink=1 ec1ed3a51175
            user.color="blue"
            data
            more
            g: file 600 0:0 size=2 nlink=1 f5302386464f
            1000000000
            h: file 644 42:43 size=2 nlink=1 01fbdc44ef81
            1000000000
            2000000000
            user.k="v"

            """),
    SemanticsCase(
        name: "sparse files keep their holes on copy-up",
        lowers: ["truncate -s 64M sparse; printf end | dd of=sparse bs=1 seek=67108861 conv=notrunc 2>/dev/null"],
        changes: """
            printf X | dd of=sparse bs=1 conv=notrunc 2>/dev/null
            stat -c %s sparse; [ "$(stat -c %b sparse)" -lt 2048 ] && echo holes kept || echo "filled: $(stat -c %b sparse) blocks"
            tail -c 3 sparse; echo; head -c 1 sparse; echo
            """,
        expected: "67108864\nholes kept\nend\nX\n"),
    SemanticsCase(
        name: "fallocate, and SEEK_DATA/SEEK_HOLE show the holes",
        lowers: ["truncate -s 16M sparse; printf data | dd of=sparse bs=1 seek=8388608 conv=notrunc status=none"],
        changes: """
            perl -e 'open(F, "<", "sparse") or die; print sysseek(F, 0, 3) + 0, " ", sysseek(F, 0, 4) + 0, "\\n"'
            fallocate -l 1048576 new; stat -c %s new; [ "$(stat -c %b new)" -ge 2048 ] && echo allocated
            """,
        expected: "8388608 0\n1048576\nallocated\n"),
    SemanticsCase(
        name: "deletes hide lower entries; a file and a dir with content",
        lowers: ["echo a > a; mkdir empty; mkdir full; echo x > full/x; mkdir full/sub; echo y > full/sub/y; echo keep > keep"],
        changes: """
            rm a; rmdir empty; rm -r full
            ls -A; cat a 2>&1; ls full 2>&1; true
            """,
        expected: "keep\ncat: a: No such file or directory\nls: cannot access 'full': No such file or directory\n"),
    SemanticsCase(
        name: "whiteout then recreate: a file, and a dir made opaque",
        lowers: ["echo old > a; mkdir d; echo x > d/x"],
        changes: """
            rm a; echo new > a; cat a
            rm -r d; mkdir d; ls -A d; touch d/z; ls -A d
            rm a; ls -A
            """,
        expected: "new\nz\nd\n"),
    SemanticsCase(
        name: "opaque dirs and whiteouts in the lower layers",
        lowers: ["mkdir d; echo 1 > d/only1; setfattr -n trusted.overlay.opaque -v y d; mknod gone c 0 0",
                 "mkdir d; echo 2 > d/hidden; echo g > gone; echo v > visible"],
        changes: "ls -A d; ls -A; cat gone 2>&1; xattrs d | grep -c overlay; true",
        expected: "only1\nd\nvisible\ncat: gone: No such file or directory\n0\n"),
    SemanticsCase(
        name: "readdir merges the layers without duplicates or markers",
        lowers: ["mkdir d; echo > d/a; echo > d/b; mknod d/c c 0 0",
                 "mkdir d; echo > d/b; echo > d/c; echo > d/e; mkdir d/sub"],
        changes: """
            ls -a d | tr '\\n' ' '; echo
            touch d/new; rm d/a; ls -a d | tr '\\n' ' '; echo
            find d | sort | tr '\\n' ' '; echo
            """,
        expected: ". .. a b e sub \n. .. b e new sub \nd d/b d/e d/new d/sub \n"),
    SemanticsCase(
        name: "rename: lower file, over a lower file, upper-only dir, dir with lower content (EXDEV)",
        lowers: ["echo f > f; echo t > t; mkdir d; echo x > d/x; mkdir keep"],
        changes: """
            mv f g; cat g; cat f 2>&1
            mv g t; cat t; ls -A
            mkdir n; echo n > n/x; mv n n2; cat n2/x; ls -A
            perl -e 'rename("d", "d2") or print "rename d d2: $!\\n"'
            mv d keep/d3; ls -A; cat keep/d3/x
            perl -e 'rename("keep/d3", "d4") or print "rename keep/d3 d4: $!\\n"'
            """,
        expected: """
            f
            cat: f: No such file or directory
            f
            d
            keep
            t
            n
            d
            keep
            n2
            t
            rename d d2: Invalid cross-device link
            keep
            n2
            t
            x

            """),
    SemanticsCase(
        name: "a file open read-only before its copy-up reads the new content after it",
        lowers: ["echo old > f; head -c 1048576 /dev/zero > big"],
        changes: """
            exec 3< f 4< big
            echo new > f; printf X | dd of=big bs=1 seek=1000000 conv=notrunc status=none
            dd if=f iflag=nocache count=0 status=none; dd if=big iflag=nocache count=0 status=none
            cat <&3; tail -c +1000001 <&4 | head -c 1; echo
            exec 3<&- 4<&-
            """,
        expected: "new\nX\n"),
    SemanticsCase(
        name: "hardlinks: a lower file linked is copied up and both names share the inode",
        lowers: ["echo one > a"],
        changes: """
            ln a b; stat -c %h a b; [ "$(stat -c %i a)" = "$(stat -c %i b)" ] && echo same inode
            echo two >> b; cat a; rm a; cat b; stat -c %h b
            """,
        expected: "2\n2\nsame inode\none\ntwo\none\ntwo\n1\n"),
    SemanticsCase(
        name: "symlinks, fifos and devices",
        lowers: ["echo t > target; ln -s target s; ln -s /etc/passwd abs; mkfifo p; mknod c c 1 3"],
        changes: """
            readlink s abs; cat s; show s p c
            ln -s target s2; readlink s2; mkfifo p2; mknod c2 c 1 5; mknod b2 b 7 0; show s2 p2 c2 b2
            rm s; chmod 600 c; show s c
            """,
        expected: """
            target
            /etc/passwd
            t
            s: symlink -> target
            p: fifo 644 0:0 0:0
            c: character special file 644 0:0 1:3
            target
            s2: symlink -> target
            p2: fifo 644 0:0 0:0
            c2: character special file 644 0:0 1:5
            b2: block special file 644 0:0 7:0
            s: absent
            c: character special file 600 0:0 1:3

            """),
    SemanticsCase(
        name: "overlayfs's own xattrs are hidden from readers",
        lowers: ["mkdir d; setfattr -n trusted.overlay.opaque -v y d; echo x > d/x; mkdir e; echo > e/y"],
        changes: """
            xattrs d | grep -c overlay; rm -r e; mkdir e; xattrs e | grep -c overlay; ls -A e; true
            """,
        expected: "0\n0\n"),
    SemanticsCase(
        name: "other users: new entries are theirs; permissions are checked against the attributes",
        lowers: ["mkdir -m 1777 shared; echo root > shared/rootfile; mkdir -m 2775 sgid; chown 0:50 sgid; chmod 2777 sgid"],
        changes: """
            u() { setpriv --reuid=1000 --regid=1000 --clear-groups "$@"; }
            u sh -c 'echo mine > shared/mine; mkdir shared/d; ln -s x shared/l; echo in > sgid/f; mkdir sgid/sub'
            show shared/mine shared/d sgid/f sgid/sub; stat -c '%u:%g' shared/l
            u perl -e 'open(F, ">>", "shared/rootfile") or print "append to rootfile: $!\\n"'
            u perl -e 'unlink("shared/rootfile") or print "unlink rootfile: $!\\n"'
            cat shared/rootfile
            """,
        expected: """
            shared/mine: file 644 1000:1000 size=5 nlink=1 d92bf619dc82
            shared/d: dir 755 1000:1000
            sgid/f: file 644 1000:50 size=3 nlink=1 ba8d2b9408ed
            sgid/sub: dir 2755 1000:50
            1000:1000
            append to rootfile: Permission denied
            unlink rootfile: Operation not permitted
            root

            """),
    SemanticsCase(
        name: "a 100 MB file reads through and copies up whole",
        lowers: ["head -c 104857600 /dev/urandom > big; md5sum < big | cut -c1-12 > ../big.md5"],
        changes: """
            [ "$(md5sum < big | cut -c1-12)" = "$(cat ../big.md5)" ] && echo read ok
            printf Z >> big; stat -c %s big; [ "$(head -c 104857600 big | md5sum | cut -c1-12)" = "$(cat ../big.md5)" ] && echo copy ok; tail -c 1 big; echo
            """,
        expected: "read ok\n104857601\ncopy ok\nZ\n"),
    SemanticsCase(
        name: "10,000 files: listed, stat'ed, half removed",
        lowers: ["mkdir many; cd many; i=0; while [ $i -lt 10000 ]; do echo $i > f$i; i=$((i+1)); done"],
        changes: """
            ls many | wc -l; find many -type f | wc -l; cat many/f9999
            rm many/f1*; ls many | wc -l; ls -A | tr '\\n' ' '; echo
            """,
        expected: "10000\n10000\n9999\n8889\nmany \n"),
]

// Open handles that outlive their names: as on overlayfs, an fd keeps reading, writing, syncing
// and changing its file after the name was unlinked or renamed over (the file's data then goes
// nowhere visible), and close() answers 0. The FUSE union is also run without the writeback
// cache here: with it, the kernel writes the times it keeps back to the union after an unlink,
// and a failure there surfaces as EIO at close().
private let openHandleCases: [SemanticsCase] = [
    SemanticsCase(
        name: "a file open read-only outlives unlink and rename-over: read, fstat, fsync, close",
        lowers: ["echo lower-a > a; echo lower-b > b; echo lower-new > new"],
        changes: #"""
            echo upper-c > c; echo upper-d > d; echo upper-e > e
            perl <<'PERL'
            use strict; use IO::Handle;
            for my $case (["a", "unlink"], ["b", "new"], ["c", "unlink"], ["d", "e"]) {
                my ($name, $how) = @$case;
                open(my $f, "<", $name) or die "open $name: $!";
                if ($how eq "unlink") { unlink($name) or die "unlink $name: $!" } else { rename($how, $name) or die "rename $how $name: $!" }
                my @st = stat($f); print @st ? "$name: size $st[7]\n" : "$name: fstat failed: $!\n";
                sysread($f, my $data, 100) // print "$name: read failed: $!\n"; print "$name: read $data";
                print "$name: fsync ", ($f->sync ? "ok" : "failed: $!"), "\n";
                print "$name: close ", (close($f) ? "ok" : "failed: $!"), "\n";
            }
            PERL
            ls; cat b d
            """#,
        expected: """
            a: size 8
            a: read lower-a
            a: fsync ok
            a: close ok
            b: size 8
            b: read lower-b
            b: fsync ok
            b: close ok
            c: size 8
            c: read upper-c
            c: fsync ok
            c: close ok
            d: size 8
            d: read upper-d
            d: fsync ok
            d: close ok
            b
            d
            lower-new
            upper-e

            """),
    SemanticsCase(
        name: "temp-file pattern: create, write, unlink; the fd writes, reads, syncs, truncates, chmods, reopens, closes",
        lowers: ["mkdir keep"],
        changes: #"""
            perl <<'PERL'
            use strict; use IO::Handle; use Fcntl qw(:DEFAULT SEEK_SET);
            sysopen(my $f, "tmp", O_RDWR | O_CREAT | O_EXCL, 0644) or die "create: $!";
            syswrite($f, "hello ") == 6 or die "write: $!";
            unlink("tmp") or die "unlink: $!";
            print "write after unlink ", (syswrite($f, "world\n") == 6 ? "ok" : "failed: $!"), "\n";
            my @st = stat($f); print @st ? "size $st[7] nlink $st[3]\n" : "fstat failed: $!\n";
            print "fsync ", ($f->sync ? "ok" : "failed: $!"), "\n";
            sysseek($f, 0, SEEK_SET); sysread($f, my $data, 100) // print "read failed: $!\n"; print "read $data";
            print "ftruncate ", (truncate($f, 5) ? "ok" : "failed: $!"), "\n";
            print "fchmod ", (chmod(0600, $f) ? "ok" : "failed: $!"), "\n";
            print "futimes ", (utime(1000000000, 1000000000, $f) ? "ok" : "failed: $!"), "\n";
            @st = stat($f); printf("size %d mode %o mtime %d\n", $st[7], $st[2] & 07777, $st[9]) if @st;
            if (open(my $g, "<", "/proc/self/fd/" . fileno($f))) { print "reopened: ", <$g>, "\n"; close($g) } else { print "reopen failed: $!\n" }
            print "close ", (close($f) ? "ok" : "failed: $!"), "\n";
            PERL
            ls -A
            """#,
        expected: """
            write after unlink ok
            size 12 nlink 0
            fsync ok
            read hello world
            ftruncate ok
            fchmod ok
            futimes ok
            size 5 mode 600 mtime 1000000000
            reopened: hello
            close ok
            keep

            """),
    SemanticsCase(
        name: "copy-up then unlink or rename-over: the fd writes and reads its private copy, nothing of it is visible",
        lowers: ["echo lower-f > f; echo lower-g > g; echo lower-new > new"],
        changes: #"""
            perl <<'PERL'
            use strict; use IO::Handle; use Fcntl qw(SEEK_SET);
            for my $case (["f", "unlink"], ["g", "new"]) {
                my ($name, $how) = @$case;
                open(my $f, "+<", $name) or die "open $name: $!";
                if ($how eq "unlink") { unlink($name) or die "unlink $name: $!" } else { rename($how, $name) or die "rename $how $name: $!" }
                print "$name: write ", (syswrite($f, "WRITTEN-") == 8 ? "ok" : "failed: $!"), "\n";
                print "$name: fsync ", ($f->sync ? "ok" : "failed: $!"), "\n";
                my @st = stat($f); print @st ? "$name: size $st[7] nlink $st[3]\n" : "$name: fstat failed: $!\n";
                sysseek($f, 0, SEEK_SET); sysread($f, my $data, 100) // print "$name: read failed: $!\n"; print "$name: read $data\n";
                print "$name: close ", (close($f) ? "ok" : "failed: $!"), "\n";
            }
            PERL
            ls -A; cat g; cat f 2>&1; true
            """#,
        expected: """
            f: write ok
            f: fsync ok
            f: size 8 nlink 0
            f: read WRITTEN-
            f: close ok
            g: write ok
            g: fsync ok
            g: size 8 nlink 0
            g: read WRITTEN-
            g: close ok
            g
            lower-new
            cat: f: No such file or directory

            """),
    SemanticsCase(
        name: "a lower file unlinked while open read-only cannot be changed through the fd, still reads, closes",
        lowers: ["echo lower > f"],
        changes: #"""
            perl <<'PERL'
            use strict;
            open(my $f, "<", "f") or die "open: $!";
            unlink("f") or die "unlink: $!";
            print "fchmod ", (chmod(0600, $f) ? "done" : "refused"), "\n";
            print "reopen for writing ", (open(my $g, "+<", "/proc/self/fd/" . fileno($f)) ? "done" : "refused"), "\n";
            my @st = stat($f); printf("mode %o\n", $st[2] & 07777);
            print "read ", <$f>;
            print "close ", (close($f) ? "ok" : "failed: $!"), "\n";
            PERL
            ls -A
            """#,
        expected: "fchmod refused\nreopen for writing refused\nmode 644\nread lower\nclose ok\n"),
    SemanticsCase(
        name: "a dir renamed, or emptied and removed, with a file open below it",
        lowers: ["mkdir low"],
        changes: #"""
            mkdir -p d/sub; echo below > d/sub/f; mkdir p; echo in-p > p/f; echo low > low/f
            perl <<'PERL'
            use strict; use IO::Handle; use Fcntl qw(SEEK_SET SEEK_END);
            sub use_it { my ($name, $f) = @_;
                print "$name: write ", (syswrite($f, "+more\n") == 6 ? "ok" : "failed: $!"), "\n";
                print "$name: fsync ", ($f->sync ? "ok" : "failed: $!"), "\n";
                my @st = stat($f); print @st ? "$name: size $st[7]\n" : "$name: fstat failed: $!\n";
                sysseek($f, 0, SEEK_SET); sysread($f, my $data, 100) // print "$name: read failed: $!\n"; print "$name: read $data";
                print "$name: close ", (close($f) ? "ok" : "failed: $!"), "\n";
            }
            open(my $f, "+<", "d/sub/f") or die; sysseek($f, 0, SEEK_END);
            rename("d", "e") or die "rename d e: $!";
            use_it("e/sub/f", $f);
            for my $dir ("p", "low") {
                open($f, "+<", "$dir/f") or die; sysseek($f, 0, SEEK_END);
                unlink("$dir/f") or die "unlink $dir/f: $!"; rmdir($dir) or die "rmdir $dir: $!";
                use_it("$dir/f", $f);
            }
            PERL
            ls -A; cat e/sub/f
            """#,
        expected: """
            e/sub/f: write ok
            e/sub/f: fsync ok
            e/sub/f: size 12
            e/sub/f: read below
            +more
            e/sub/f: close ok
            p/f: write ok
            p/f: fsync ok
            p/f: size 11
            p/f: read in-p
            +more
            p/f: close ok
            low/f: write ok
            low/f: fsync ok
            low/f: size 10
            low/f: read low
            +more
            low/f: close ok
            e
            below
            +more

            """),
    SemanticsCase(
        name: "a hardlinked file open while its names are removed one by one",
        lowers: ["echo lower > l"],
        changes: #"""
            echo upper > a; ln a b; ln l m
            perl <<'PERL'
            use strict; use Fcntl qw(SEEK_SET SEEK_END);
            for my $pair (["a", "b"], ["l", "m"]) {
                my ($first, $second) = @$pair;
                open(my $f, "+<", $first) or die "open $first: $!"; sysseek($f, 0, SEEK_END);
                unlink($first) or die "unlink $first: $!";
                print "$first: write ", (syswrite($f, "+more\n") == 6 ? "ok" : "failed: $!"), "\n";
                my @st = stat($second); print "$second: nlink $st[3] size $st[7]\n";
                unlink($second) or die "unlink $second: $!";
                @st = stat($f); print @st ? "$first: nlink $st[3] size $st[7]\n" : "$first: fstat failed: $!\n";
                sysseek($f, 0, SEEK_SET); sysread($f, my $data, 100) // print "$first: read failed: $!\n"; print "$first: read $data";
                print "$first: close ", (close($f) ? "ok" : "failed: $!"), "\n";
            }
            PERL
            ls -A
            """#,
        expected: """
            a: write ok
            b: nlink 1 size 12
            a: nlink 0 size 12
            a: read upper
            +more
            a: close ok
            l: write ok
            m: nlink 1 size 12
            l: nlink 0 size 12
            l: read lower
            +more
            l: close ok

            """),
    SemanticsCase(
        name: "an open dir and the cwd removed: still stat'able, listed empty, nothing can be made in them",
        lowers: ["mkdir low; echo x > low/x"],
        changes: #"""
            mkdir gone
            perl <<'PERL'
            use strict;
            for my $dir ("gone", "low") {
                opendir(my $h, $dir) or die "opendir $dir: $!";
                system("rm", "-r", $dir) == 0 or die "rm $dir";
                my @entries = readdir($h); print "$dir: ", scalar(@entries), " entries after removal\n";
                my @st = stat("/proc/self/fd/" . fileno($h)); print "$dir: stat ", (@st ? "ok" : "failed: $!"), "\n";
                print "$dir: create inside ", (open(my $x, ">", "/proc/self/fd/" . fileno($h) . "/new") ? "done" : "failed: $!"), "\n";
                print "$dir: closedir ", (closedir($h) ? "ok" : "failed: $!"), "\n";
            }
            PERL
            mkdir cwd; cd cwd; rmdir ../cwd; stat -c %F .; ls -A .; echo "ls: $?"; touch x 2>&1 | sed 's/.*: //'; cd ..
            ls -A
            """#,
        expected: """
            gone: 0 entries after removal
            gone: stat ok
            gone: create inside failed: No such file or directory
            gone: closedir ok
            low: 0 entries after removal
            low: stat ok
            low: create inside failed: No such file or directory
            low: closedir ok
            directory
            ls: 0
            No such file or directory

            """),
]

@Suite(.serialized, .requires(UnionMounts.requirements))
struct UnionSemanticsTests {
    @Test(arguments: cases, UnionDriver.semanticsDrivers)
    fileprivate func sameSemanticsOnBothDrivers(_ c: SemanticsCase, _ driver: UnionDriver) throws {
        try check(c, driver)
    }

    @Test(arguments: openHandleCases, UnionDriver.semanticsDrivers + [.fuseWithoutWritebackCache])
    fileprivate func openHandlesOutliveTheirNames(_ c: SemanticsCase, _ driver: UnionDriver) throws {
        try check(c, driver)
    }

    /// Runs a case on one driver and compares what it printed with the expected observations.
    private func check(_ c: SemanticsCase, _ driver: UnionDriver, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let layout = try UnionMounts.Layout("semantics", lowers: c.lowers, sourceLocation: sourceLocation)
        let r = try layout.session(driver, c.changes)
        #expect(r.status == 0, "\(driver.testDescription): script exited \(r.status): \(r.stderr) \(layout.daemonErrors)", sourceLocation: sourceLocation)
        #expect(r.stdout == c.expected, "\(driver.testDescription), \(c.name):\n--- got\n\(r.stdout)--- expected\n\(c.expected)--- stderr\n\(r.stderr)", sourceLocation: sourceLocation)
        if driver == .fuseAufs {
            // The upper really is in aufs form: no 0/0 device and no overlayfs xattr in it.
            let find = try run(try requireTool("find"), [layout.upper, "-type", "c", "-printf", "%p %Hr:%Lr\n"])
            #expect(!find.stdout.contains(" 0:0"), "aufs-form upper holds 0/0 devices:\n\(find.stdout)", sourceLocation: sourceLocation)
            let dump = try run(try requireTool("getfattr"), ["-R", "-P", "-h", "-d", "-m", "-", "--absolute-names", layout.upper])
            #expect(!dump.stdout.contains(".overlay."), "aufs-form upper holds overlayfs xattrs:\n\(dump.stdout)", sourceLocation: sourceLocation)
        }
        UnionMounts.expectNoLeftoverMount(sourceLocation: sourceLocation)
    }
}
