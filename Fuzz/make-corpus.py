#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into Fuzz/corpus/<target>/ (replacing it) from the
fixtures and from hostile cases made here. Deterministic: run it again, get the same files.
Needs python3, gzip and zstd.

    python3 Fuzz/make-corpus.py
"""
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")
FIXTURES = os.path.join(REPO, "fixtures")
# Where the fuzzers' private tmpfs is mounted; host/ holds the files no input may reach.
HOST = "/tmp/layerkit-fuzz/host"

# ---------------------------------------------------------------- tar writing

def octal(value, length):
    return ("%0*o" % (length - 1, value)).encode() + b"\0"

def ustar_header(name, typeflag, mode=0o644, uid=0, gid=0, size=0, link=b"", mtime=1700000000,
                 devmajor=0, devminor=0, magic=b"ustar\x0000"):
    """One ustar header block, as the fuzz harness's own TarWriter writes it."""
    name = name if isinstance(name, bytes) else name.encode()
    link = link if isinstance(link, bytes) else link.encode()
    b = bytearray(512)
    b[0:len(name[:100])] = name[:100]
    b[100:108] = octal(mode, 8)
    b[108:116] = octal(uid, 8)
    b[116:124] = octal(gid, 8)
    b[124:136] = octal(size, 12)
    b[136:148] = octal(mtime, 12)
    b[156] = typeflag
    b[157:157 + len(link[:100])] = link[:100]
    b[257:265] = magic
    if devmajor or devminor:
        b[329:337] = octal(devmajor, 8)
        b[337:345] = octal(devminor, 8)
    b[148:156] = b" " * 8
    b[148:154] = ("%06o" % sum(b)).encode()
    return bytes(b)

def pad(data):
    return data + b"\0" * ((512 - len(data) % 512) % 512)

def pax_records(records):
    body = b""
    for key, value in records:
        key = key.encode() if isinstance(key, str) else key
        value = value.encode() if isinstance(value, str) else value
        tail = b" " + key + b"=" + value + b"\n"
        length = len(tail) + 1
        while len(str(length)) + len(tail) != length:
            length += 1
        body += str(length).encode() + tail
    return body

class Tar:
    def __init__(self):
        self.data = b""

    def raw(self, header, content=b""):
        self.data += header + pad(content)
        return self

    def pax(self, records, raw_body=None):
        body = raw_body if raw_body is not None else pax_records(records)
        return self.raw(ustar_header("PaxHeader", ord("x"), size=len(body)), body)

    def file(self, name, content=b"", mode=0o644, **kw):
        content = content.encode() if isinstance(content, str) else content
        return self.raw(ustar_header(name, ord("0"), mode=mode, size=len(content), **kw), content)

    def dir(self, name, mode=0o755, **kw):
        return self.raw(ustar_header(name, ord("5"), mode=mode, **kw))

    def symlink(self, name, target, **kw):
        return self.raw(ustar_header(name, ord("2"), mode=0o777, link=target, **kw))

    def hardlink(self, name, target, **kw):
        return self.raw(ustar_header(name, ord("1"), link=target, **kw))

    def node(self, name, typeflag, major, minor, mode=0o600):
        return self.raw(ustar_header(name, ord(typeflag), mode=mode, devmajor=major, devminor=minor))

    def bytes(self, end=True):
        return self.data + (b"\0" * 1024 if end else b"")

def secret_layer():
    """The host file the image target places in host/: its digest is named here, its bytes never."""
    return Tar().file("LAYERKIT-HOST-SECRET", "this file is on the host and must never be imported\n").bytes()

def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)

def zst(data):
    return subprocess.run(["zstd", "-q", "-19", "-T1", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()

def write(target, name, data):
    path = os.path.join(CORPUS, target, name)
    with open(path, "wb") as f:
        f.write(data)

# ---------------------------------------------------------------- apply

def apply_corpus():
    for name in sorted(os.listdir(os.path.join(FIXTURES, "layers"))):
        with open(os.path.join(FIXTURES, "layers", name), "rb") as f:
            write("apply", "fixture-" + name, f.read())
    cases = {}
    cases["pax-bad-length.tar"] = Tar().pax(None, raw_body=b"99 path=short\n").file("f", "x").bytes()
    cases["pax-xattrs.tar"] = (Tar().pax([("SCHILY.xattr.user.test", "hello"), ("SCHILY.xattr.trusted.overlay.opaque", "y"),
                                          ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02" + b"\0" * 16),
                                          ("SCHILY.acl.access", "user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r-x")])
                               .file("x", "xattrs\n").bytes())
    cases["pax-path-linkpath.tar"] = (Tar().pax([("path", "a/" * 60 + "deep"), ("uid", "4294967294"), ("mtime", "-1.5")])
                                      .file("ignored", "deep\n").pax([("linkpath", "../" * 50 + "etc/passwd")])
                                      .symlink("up", "ignored").bytes())
    cases["gnu-longname.tar"] = (Tar().raw(ustar_header("././@LongLink", ord("L"), size=301), b"L" * 300 + b"\0")
                                 .file("short", "long name\n").bytes())
    cases["gnu-sparse.tar"] = (Tar().pax([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"), ("GNU.sparse.name", "sparse"),
                                          ("GNU.sparse.realsize", "1048576")])
                               .file("GNUSparseFile.0/sparse", b"1\n4096\n5\n".ljust(512, b"\0") + b"hello").bytes())
    cases["symlink-loop.tar"] = Tar().symlink("a", "b").symlink("b", "a").file("a/file", "loop\n").bytes()
    cases["symlink-parent-chain.tar"] = (Tar().dir("d").symlink("d/up", "..").symlink("d/abs", "/").file("d/up/up/x", "x")
                                         .file("d/abs/etc/passwd", "root::0:0::/:/bin/sh\n").bytes())
    cases["hardlinks.tar"] = (Tar().file("f", "content\n").hardlink("h1", "f").symlink("s", "f").hardlink("h2", "s")
                              .dir("dir").hardlink("h3", "dir").hardlink("h4", "missing").hardlink("h5", "../f").bytes())
    cases["whiteout-odd.tar"] = (Tar().dir("d").file("d/x", "x").file("d/.wh..wh..opq").file(".wh.d").file("d/.wh.x")
                                 .file(".wh..wh.plnk").file("e/.wh..").file(".wh.").bytes())
    cases["devices.tar"] = (Tar().node("null", "3", 1, 3).node("loop", "4", 7, 0).node("wd", "3", 10, 130).node("fifo", "6", 0, 0)
                            .node("big", "3", 0o7777777, 0o7777777).node("whiteout", "3", 0, 0).bytes())
    cases["root-entries.tar"] = Tar().dir("./", mode=0o700, uid=1000).dir(".", mode=0o1777).file("./", "root as a file").bytes()
    cases["type-changes.tar"] = (Tar().file("x", "file").dir("x").file("x/y", "y").file("x", "file again").symlink("x", "/etc")
                                 .file("x/passwd", "through a symlink").bytes())
    cases["absolute-dotdot.tar"] = (Tar().file("/etc/passwd", "abs\n").file("../../escape", "up\n").file("a/../../b", "b")
                                    .dir("/").bytes())
    cases["odd-types.tar"] = (Tar().raw(ustar_header("socket", ord("s"))).raw(ustar_header("contiguous", ord("7"), size=3), b"abc")
                              .raw(ustar_header("unknown", ord("Z"))).raw(ustar_header("vol", ord("V"))).bytes())
    cases["base256-size.tar"] = Tar().raw(ustar_header("big", ord("0"))[:124] + b"\x80" + b"\0" * 6 + b"\x01\0\0\0\0"
                                          + ustar_header("big", ord("0"))[136:]).bytes()
    cases["gnu-magic.tar"] = Tar().file("gnu", "gnu tar\n", magic=b"ustar  \0").bytes()
    cases["names-odd.tar"] = (Tar().file("caf\xe9".encode("latin-1"), "latin-1\n").file("new\nline", "nl\n")
                              .file("a" * 100, "100 bytes\n").file(".layertool-partial-1", "temp name\n").bytes())
    cases["no-end-marker.tar"] = Tar().file("f", "no end\n").bytes(end=False)
    cases["setuid-owner.tar"] = Tar().file("suid", "#!/bin/sh\n", mode=0o6755, uid=0, gid=0).dir("home", uid=65534, gid=65534).bytes()
    for name, data in cases.items():
        write("apply", name, data)
    write("apply", "hardlinks.tar.gz", gz(cases["hardlinks.tar"]))
    write("apply", "whiteout-odd.tar.zst", zst(cases["whiteout-odd.tar"]))
    write("apply", "pax-xattrs.tar.gz", gz(cases["pax-xattrs.tar"]))
    write("apply", "symlink-loop.tar.zst", zst(cases["symlink-loop.tar"]))

# ---------------------------------------------------------------- images

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"

def compact(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

def mini_busybox_layers():
    """The busybox fixture's shape, small: layer 1 (gzip) a few files, applet symlinks, a hardlink;
    layer 2 the fixture's own zstd layer (whiteout, opaque dir, xattr)."""
    l1 = (Tar().dir("bin").file("bin/busybox", "#!/bin/sh\necho busybox\n", mode=0o755).symlink("bin/sh", "busybox")
          .symlink("bin/ls", "busybox").dir("etc").file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
          .file("etc/motd", "Welcome\n").file("etc/hostname", "layer1-host\n").dir("etc/removed-later")
          .file("etc/removed-later/file1", "file1\n").dir("tmp", mode=0o1777).dir("usr").dir("usr/bin")
          .hardlink("usr/bin/busybox-hardlink", "bin/busybox").bytes())
    with open(os.path.join(FIXTURES, "busybox/blobs/sha256/6a24f99c3a20a70e4e2d937b9b11219a0df93c296ef872f4dc113e0e0e75c55a"), "rb") as f:
        l2 = f.read()
    l2_tar = subprocess.run(["zstd", "-q", "-d", "-c"], input=l2, stdout=subprocess.PIPE, check=True).stdout
    return [(gz(l1), l1, "application/vnd.oci.image.layer.v1.tar+gzip"),
            (l2, l2_tar, "application/vnd.oci.image.layer.v1.tar+zstd")]

def config_for(diff_ids):
    return compact({"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
                    "config": {"Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})

def oci_image(layers, blob_overrides=None, manifest_layers=None, tag="latest", extra_files=None, index_extra=None):
    """An OCI layout as a list of tar members: (name, kind, data-or-target)."""
    blobs = {}
    descriptors = []
    for blob, tar, media in layers:
        blobs[sha(blob)] = blob
        descriptors.append({"mediaType": media, "digest": sha(blob), "size": len(blob)})
    config = config_for([sha(tar) for _, tar, _ in layers])
    blobs[sha(config)] = config
    manifest = compact({"schemaVersion": 2, "mediaType": MANIFEST,
                        "config": {"mediaType": CONFIG, "digest": sha(config), "size": len(config)},
                        "layers": manifest_layers if manifest_layers is not None else descriptors})
    blobs[sha(manifest)] = manifest
    index = {"schemaVersion": 2, "mediaType": INDEX,
             "manifests": [{"mediaType": MANIFEST, "digest": sha(manifest), "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": tag},
                            "platform": {"architecture": "amd64", "os": "linux"}}]}
    if index_extra:
        index["manifests"] += index_extra
    members = [("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", "file", compact(index)),
               ("blobs/", "dir", None), ("blobs/sha256/", "dir", None)]
    for digest, data in sorted(blobs.items()):
        name = "blobs/sha256/" + digest[7:]
        if blob_overrides and digest in blob_overrides:
            members.append((name,) + blob_overrides[digest])
        else:
            members.append((name, "file", data))
    members += extra_files or []
    return members

def legacy_image(layers, tags=("mini:latest",), layer_names=None, config_name=None, extra=None):
    members = []
    names = []
    diff_ids = []
    for i, (_, tar, _) in enumerate(layers):
        layer_id = hashlib.sha256(b"layer%d" % i).hexdigest()
        members += [(layer_id + "/", "dir", None), (layer_id + "/VERSION", "file", b"1.0"),
                    (layer_id + "/layer.tar", "file", tar)]
        names.append(layer_id + "/layer.tar")
        diff_ids.append(sha(tar))
    config = config_for(diff_ids)
    config_file = config_name or (hashlib.sha256(config).hexdigest() + ".json")
    members.append((config_file, "file", config))
    manifest = [{"Config": config_file, "RepoTags": list(tags), "Layers": layer_names or names}]
    members.append(("manifest.json", "file", compact(manifest)))
    members += extra or []
    return members

def pack(members):
    out = Tar()
    for name, kind, data in members:
        if kind == "file":
            out.file(name, data)
        elif kind == "dir":
            out.dir(name)
        elif kind == "symlink":
            out.symlink(name, data)
        elif kind == "hardlink":
            out.hardlink(name, data)
    return out.bytes()

def image_corpus():
    layers = mini_busybox_layers()
    secret = secret_layer()
    write("image", "mini-busybox-oci.tar", pack(oci_image(layers)))
    write("image", "mini-busybox-legacy.tar", pack(legacy_image(layers)))
    # Docker 25+: the OCI layout and the legacy manifest.json side by side.
    both = oci_image(layers)
    write("image", "mini-busybox-docker25.tar", pack(both))
    # A layer blob that is a symlink to a host file whose digest the manifest names (must fail).
    host_layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(secret), "size": len(secret)}
    overrides = {sha(secret): ("symlink", HOST + "/secret-layer.tar")}
    members = oci_image(layers, manifest_layers=None)
    # Build by hand: one layer whose blob is a symlink to the host's secret layer.
    config = config_for([sha(secret)])
    manifest = compact({"schemaVersion": 2, "mediaType": MANIFEST,
                        "config": {"mediaType": CONFIG, "digest": sha(config), "size": len(config)}, "layers": [host_layer]})
    index = compact({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, "digest": sha(manifest), "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
    for target, name in [(HOST + "/secret-layer.tar", "host-symlink-absolute.tar"),
                         ("../../../../../../../../tmp/layerkit-fuzz/host/secret-layer.tar", "host-symlink-relative.tar")]:
        members = [("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", "file", index), ("blobs/", "dir", None),
                   ("blobs/sha256/", "dir", None), ("blobs/sha256/" + sha(config)[7:], "file", config),
                   ("blobs/sha256/" + sha(manifest)[7:], "file", manifest), ("blobs/sha256/" + sha(secret)[7:], "symlink", target)]
        write("image", name, pack(members))
    # The same through a hardlink entry and through the legacy form.
    write("image", "host-legacy-layer.tar", pack(legacy_image(layers, layer_names=["../../host/secret-layer.tar"])))
    # The legacy form, its one layer a symlink to the secret layer (whose bytes are nowhere: a
    # copy of them here once let the fuzzer name that copy instead and "import the host file").
    legacy_config = config_for([sha(secret)])
    legacy_config_name = hashlib.sha256(legacy_config).hexdigest() + ".json"
    legacy_manifest = [{"Config": legacy_config_name, "RepoTags": ["mini:latest"], "Layers": ["evil/layer.tar"]}]
    write("image", "host-legacy-symlink.tar", pack([(legacy_config_name, "file", legacy_config),
                                                    ("manifest.json", "file", compact(legacy_manifest)),
                                                    ("evil/", "dir", None), ("evil/layer.tar", "symlink", HOST + "/secret-layer.tar")]))
    # A blob symlinked to a host file whose digest nothing names (a hash oracle) and to /dev/zero.
    oracle_members = oci_image(layers, blob_overrides={sha(layers[0][0]): ("symlink", HOST + "/oracle")})
    write("image", "host-oracle.tar", pack(oracle_members))
    write("image", "dev-zero.tar", pack(oci_image(layers, blob_overrides={sha(layers[1][0]): ("symlink", "/dev/zero")})))
    # Lying sizes, a missing blob, a nested index, an unknown media type.
    lying = [{"mediaType": m, "digest": sha(b), "size": s} for (b, _, m), s in zip(layers, [-1, 5 << 30])]
    write("image", "lying-sizes.tar", pack(oci_image(layers, manifest_layers=lying)))
    missing = oci_image(layers)
    write("image", "missing-blob.tar", pack([m for m in missing if m[0] != "blobs/sha256/" + sha(layers[1][0])[7:]]))
    nested = [{"mediaType": INDEX, "digest": "sha256:" + "0" * 64, "size": 2}]
    write("image", "nested-index.tar", pack(oci_image(layers, index_extra=nested, tag="other")))
    odd_media = [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": sha(b), "size": len(b)} for b, _, _ in layers]
    write("image", "foreign-media.tar", pack(oci_image(layers, manifest_layers=odd_media)))
    # An empty image (no layers) and a legacy archive with two tags and a config named by path.
    write("image", "no-layers-legacy.tar", pack(legacy_image([], tags=("a:1", "registry:5000/b/c:2"))))
    write("image", "legacy-config-escape.tar", pack(legacy_image(layers, config_name="../config.json")))
    write("image", "empty.tar", b"\0" * 1024)

# ---------------------------------------------------------------- upper-diff and store-open programs

def program_corpus():
    # upper-diff: settings byte, then ops (see UpperBuilder: op = byte % 22, then its arguments).
    programs = {
        "files-and-dirs": [0, 0, 3, 2, 4, 5, b"hello", 1, 2, 9, 0],
        "overlay-whiteouts": [8, 0, 3, 4, 0, 5, 0, 0, 1, 4, 1],
        "aufs-markers": [0, 0, 3, 6, 0, 7, 8, 2, 5, 3, b"abc"],
        "links": [0, 2, 4, 3, b"xyz", 9, 0, 9, 1, 3, 1, 0, 3, 1, 1, 3, 1, 5],
        "xattrs": [4, 2, 0, 0, 10, 0, 5, b"hello", 10, 3, 2, b"\x01\x00", 10, 4, 1, b"x", 5, 0],
        "modes-owners": [9, 2, 0, 0, 11, 0xED, 0x09, 12, 1, 0, 12, 3, 1, 15, 1, 2, 3, 4, 5],
        "nodes": [0, 13, 2, 14, 3, 0, 1, 3, 0, 14, 4, 1, 7, 0, 0, 18, 2],
        "deep": [1, 16, 199, 16, 50, 21, 19, 0, 16, 10],
        "sparse": [2, 17, 0, 0x10, 0, 4, b"data", 0, 17, 1, 0, 0, 0, 1],
        "root-chmod": [8, 20, 0xC0, 0x01, 2, 0, 1, b"x"],
        "remove": [0, 2, 0, 1, b"a", 19, 0, 1, 19, 2, 3, 0, b"", 19],
        "opaque-values": [0, 0, 3, 5, 1, 0, 5, 2, 1, 5, 3, 0, 1, 0],
    }
    for name, ops in programs.items():
        data = b"".join(op if isinstance(op, bytes) else bytes([op]) for op in ops)
        write("upper-diff", name, data)
    rng = random.Random(20261203)
    for i in range(8):
        write("upper-diff", "random-%d" % i, bytes(rng.randrange(256) for _ in range(rng.randrange(16, 200))))
    # store-open: ops (see StoreTamperer: op = byte % 16, then its arguments).
    stores = {
        "untouched": [],
        "staging-junk": [2, 2, 0, 5, 3, 2, 1, 6, 50, 4, 2, 2, 4],
        "dir-symlinks": [0, 0, 0],
        "layers-symlink": [0, 1, 2],
        "blobs-symlink": [0, 5, 1],
        "locks-junk": [2, 3, 4, 4, 2, 3, 3, 3],
        "layer-parts": [5, 0, 0, 0, 5, 0, 1, 1, 5, 0, 2, 2],
        "short-links": [6, 0, 0, 6, 0, 1, 6, 0, 4],
        "db-bytes": [7, 16] + list(b"SQLite format 3\x00") + [0],
        "db-flips": [8, 0x42, 0x10, 0x00, 8, 0xff, 0x20, 0x00, 8, 0, 0x1c, 0],
        "sql-link": [9, 1, 12, 4],
        "sql-cycle": [9, 0, 3],
        "sql-delete": [9, 0, 4],
        "sql-schema": [9, 0, 8, 0xff, 0xff, 0, 0],
        "sql-drop": [9, 0, 9, 0, 9, 0, 9, 1],
        "sql-types": [9, 1, 0, 6, 9, 9, 1, 1, 4, 9, 1, 2, 5, 8, 4, 0x41, 0x42, 0x43, 0x44],
        "sql-insert": [9, 1, 7, 4, 5, 10, 0, 9, 1, 5, 4, 3, 6, 10, 0],
        "wal-junk": [12, 0, 1, 7, 4, 1, 2, 3, 4, 12, 1, 0, 3],
        "db-symlink": [13, 0, 13, 1, 13, 4],
        "modes": [1, 0, 0, 1, 2, 1, 14, 0],
        "containers": [15, 0, 0, 15, 1, 2, 15, 2, 5, 2, 6, 0, 0],
    }
    for name, ops in stores.items():
        write("store-open", name, bytes(ops))
    for i in range(6):
        write("store-open", "random-%d" % i, bytes(rng.randrange(256) for _ in range(rng.randrange(8, 120))))

# ---------------------------------------------------------------- dictionaries

def dictionaries():
    tar = ['"ustar\\x0000"', '"ustar  \\x00"', '"\\x1f\\x8b\\x08\\x00"', '"\\x28\\xb5\\x2f\\xfd"', '"\\x50\\x2a\\x4d\\x18"',
           '"././@PaxHeader"', '"././@LongLink"', '"path="', '"linkpath="', '"size="', '"uid="', '"gid="', '"mtime="',
           '"uname="', '"gname="', '"atime="', '"ctime="', '"SCHILY.xattr."', '"SCHILY.xattr.user.a="',
           '"SCHILY.xattr.trusted.overlay.opaque="', '"SCHILY.xattr.security.capability="', '"SCHILY.acl.access="',
           '"SCHILY.acl.default="', '"SCHILY.dev="', '"SCHILY.ino="', '"SCHILY.nlink="', '"SCHILY.fflags="',
           '"LIBARCHIVE.xattr."', '"GNU.sparse.major="', '"GNU.sparse.minor="', '"GNU.sparse.name="',
           '"GNU.sparse.realsize="', '"GNU.sparse.size="', '"GNU.sparse.map="', '"GNU.sparse.offset="',
           '"GNU.sparse.numbytes="', '"GNU.sparse.numblocks="', '"GNUSparseFile.0/"', '".wh."', '".wh..wh..opq"',
           '".wh..wh.plnk"', '"../"', '"/"', '"./"', '"user::rwx,group::r-x,other::r-x"', '"0000644\\x00"',
           '"0000755\\x00"', '"00000000000\\x00"', '"\\x80\\x00\\x00\\x00"', '"\\xff\\xff\\xff\\xff"', '"y"',
           '"trusted.overlay.opaque"', '"/tmp/layerkit-fuzz/host/"']
    with open(os.path.join(HERE, "dictionaries", "tar.dict"), "w") as f:
        f.write("# Tokens of tar, PAX, GNU tar, gzip, zstd and the OCI layer format (libFuzzer -dict).\n")
        f.write("\n".join(tar) + "\n")
    secret = sha(secret_layer())
    image = tar + ['"oci-layout"', '"index.json"', '"manifest.json"', '"blobs/sha256/"', '"imageLayoutVersion"',
                   '"1.0.0"', '"schemaVersion"', '"mediaType"', '"manifests"', '"layers"', '"config"', '"digest"',
                   '"size"', '"annotations"', '"org.opencontainers.image.ref.name"', '"platform"', '"architecture"',
                   '"amd64"', '"os"', '"linux"', '"variant"', '"rootfs"', '"diff_ids"', '"Config"', '"RepoTags"',
                   '"Layers"', '"layer.tar"', '"%s"' % MANIFEST, '"%s"' % INDEX, '"%s"' % CONFIG,
                   '"application/vnd.oci.image.layer.v1.tar"', '"application/vnd.oci.image.layer.v1.tar+gzip"',
                   '"application/vnd.oci.image.layer.v1.tar+zstd"',
                   '"application/vnd.docker.distribution.manifest.v2+json"',
                   '"application/vnd.docker.image.rootfs.diff.tar.gzip"', '"sha256:"', '"%s"' % secret,
                   '"%s"' % secret[7:], '"/tmp/layerkit-fuzz/host/secret-layer.tar"', '"/tmp/layerkit-fuzz/host/oracle"',
                   '"/dev/zero"', '"/etc/passwd"', '"-1"', '"5368709120"', '"latest"']
    with open(os.path.join(HERE, "dictionaries", "image.dict"), "w") as f:
        f.write("# Tokens of OCI layouts, docker save archives and their tars (libFuzzer -dict).\n")
        f.write("\n".join(image) + "\n")

def main():
    for target in ["apply", "image", "upper-diff", "store-open"]:
        # Inputs that found a bug (`regression-*`, see FUZZING.md) are kept; the rest is remade.
        directory = os.path.join(CORPUS, target)
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if not name.startswith("regression-"):
                os.remove(os.path.join(directory, name))
    apply_corpus()
    image_corpus()
    program_corpus()
    dictionaries()
    print("secret layer digest:", sha(secret_layer()))

if __name__ == "__main__":
    main()
