// Fuzz target `store-open`: the input is a small program that tampers with a real store (an
// image imported, a container created): store dirs replaced by symlinks or files, junk in
// `staging/`, `layers/`, `l/`, `locks/`, `blobs/`, `containers/`, a `metadata.db` of the input's
// bytes or with bytes flipped, SQL run on the real database (odd rows, type confusion, cycles,
// schema versions), WAL junk. Then the store is opened (`LayerStore(root:)`) and, if that works,
// listed, verified, its images removed and garbage collected.
// Invariants: no crash or hang; nothing outside the store root changes (a sentinel dir beside
// it that symlinks and hardlinks in the store point into, the host files); a refusal is a
// one-line `StoreError`; no descriptor leaks.
import FuzzSupport
import LayerKit
#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    StoreOpenFuzz.setUp()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    StoreOpenFuzz.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

enum StoreOpenFuzz {
    nonisolated(unsafe) static var sentinelSignature: TreeSignature!
    nonisolated(unsafe) static var hostSignature: TreeSignature!
    static var layout: String { Scratch.root + "/image" }

    static func setUp() {
        Scratch.setUp()
        TinyImage.write(at: layout)
        hostSignature = TreeSignature(of: Scratch.host)
        let probe = Scratch.freshRun()
        Fixtures.makeSentinel(at: probe + "/sentinel")
        sentinelSignature = TreeSignature(of: probe + "/sentinel")
    }

    static func run(_ bytes: UnsafeRawBufferPointer) {
        let run = Scratch.freshRun()
        Fixtures.makeSentinel(at: run + "/sentinel")
        let root = run + "/store"
        do throws(StoreError) {
            let store = try LayerStore(root: root)
            try store.importImage(layout: OCIImageLayout(path: layout), reference: "latest", name: "tiny")
            _ = try store.createContainer(id: "c1", base: "tiny")
        } catch {
            Invariant.fail("cannot make the store to tamper with: \(error)")
        }
        var input = FuzzInput(bytes)
        var tamper = StoreTamperer(root: root, sentinel: run + "/sentinel")
        tamper.apply(&input)

        Invariant.noDescriptorLeak("store") {
            let store: LayerStore
            do throws(StoreError) { store = try LayerStore(root: root) } catch {
                Invariant.oneLine(error.description, "open")
                return
            }
            func attempt(_ what: String, _ body: () throws(StoreError) -> Void) {
                do throws(StoreError) { try body() } catch { Invariant.oneLine(error.description, what) }
            }
            attempt("layers") { () throws(StoreError) in _ = try store.layers() }
            attempt("containers") { () throws(StoreError) in _ = try store.containers() }
            attempt("verify") { () throws(StoreError) in _ = try store.verify() }
            attempt("rm + gc") { () throws(StoreError) in
                let images = try store.images()
                if input.byte() & 1 == 0 { try store.removeImages(images.map(\.name)) }
                _ = try store.collectGarbage()
            }
        }

        let names = Set(TreeSignature.names(run))
        if !names.isSubset(of: ["store", "sentinel"]) { Invariant.fail("something was created beside the store: \(names.sorted())") }
        let sentinel = TreeSignature(of: run + "/sentinel")
        if sentinel != sentinelSignature { Invariant.fail("the sentinel beside the store changed:\n\(sentinel.difference(from: sentinelSignature))") }
        let host = TreeSignature(of: Scratch.host)
        if host != hostSignature { Invariant.fail("the host files changed:\n\(host.difference(from: hostSignature))") }
    }
}

/// Tampers with a store dir, one operation per step.
struct StoreTamperer {
    let root: String
    let sentinel: String
    var steps = 0

    static let storeDirs = ["staging", "layers", "l", "locks", "blobs", "blobs/sha256", "containers", "containers/c1",
                            "containers/c1/upper", "containers/c1/work", "containers/c1/merged"]
    static let junkNames = ["x", ".hidden", "..a", "c1", "store.lock", "0123456789abcdefghijklmnop",
                            String(repeating: "a", count: 64), String(repeating: "f", count: 64) + ".lock", ".wh..wh..opq",
                            String(repeating: "z", count: 255)]

    init(root: String, sentinel: String) {
        self.root = root
        self.sentinel = sentinel
    }

    /// Whether `path` can be changed without reaching outside the store: every component below the
    /// root a real dir (the harness must not write through the symlinks it planted), and the last
    /// one, if it exists, not a symlink (for operations that would follow it).
    func isInside(_ path: String, lastMayBeSymlink: Bool = false) -> Bool {
        guard path.hasPrefix(root + "/") else { return false }
        // Split the bytes, not the characters: a name that starts with a combining mark joins the
        // "/" before it into one grapheme, and a split by Character missed that slash (the harness
        // then wrote through a `staging` symlink it had planted; found by the long run).
        let parts = Array(path.utf8.dropFirst(root.utf8.count + 1)).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        var current = root
        for (i, partBytes) in parts.enumerated() {
            let part = String(decoding: partBytes, as: UTF8.self)
            current += "/" + part
            var st = stat()
            guard lstat(current, &st) == 0 else { return errno == ENOENT && i == parts.count - 1 }
            let isLast = i == parts.count - 1
            if !isLast && st.st_mode & S_IFMT != S_IFDIR { return false }
            if isLast && !lastMayBeSymlink && st.st_mode & S_IFMT == S_IFLNK { return false }
        }
        return true
    }

    /// The database and its companions are files SQLite would open: no symlinks among them.
    var databaseIsSafeToOpen: Bool {
        ["metadata.db", "metadata.db-wal", "metadata.db-shm", "metadata.db-journal"].allSatisfy { name in
            var st = stat()
            let path = root + "/" + name
            return isInside(path) && (lstat(path, &st) != 0 || st.st_mode & S_IFMT == S_IFREG)
        }
    }

    /// The store's layer dirs (`layers/<hex>`).
    var layerDirs: [String] { TreeSignature.names(root + "/layers").sorted().map { root + "/layers/" + $0 } }

    func junkName(_ input: inout FuzzInput) -> String {
        let pick = Int(input.byte())
        if pick < Self.junkNames.count * 8 { return Self.junkNames[pick % Self.junkNames.count] }
        if pick < 240, let first = layerDirs.first { return String(first.split(separator: "/").last!) }
        let raw = input.bytes(upTo: 40).filter { $0 != 0 && $0 != UInt8(ascii: "/") }
        let name = String(decoding: raw, as: UTF8.self)
        return name.isEmpty || name == "." || name == ".." ? "y" : name
    }

    /// Makes something hostile at `path`. No hardlink to the sentinel where SQLite would write
    /// (the database files): a store whose owner links its database to another file has handed
    /// that file over, and only its owner can make such a link in a 0700 store.
    func makeJunk(at path: String, _ input: inout FuzzInput) {
        var pick = input.below(10)
        if pick == 3 && path.hasPrefix(root + "/metadata.db") { pick = 1 }
        switch pick {
        case 0: symlink(sentinel, path)
        case 1: symlink(sentinel + "/file", path)
        case 2: symlink("../../sentinel", path)
        case 3: link(sentinel + "/file", path)
        case 4: mkfifo(path, 0o644)
        case 5:
            mkdir(path, 0o755)
            symlink(sentinel, path + "/inner")
            symlink("../../../sentinel/file", path + "/up")
            mkdir(path + "/diff", 0o000)
        case 6:
            var p = path
            for _ in 0..<(1 + input.below(100)) {
                if mkdir(p, 0o755) != 0 { break }
                p += "/d"
            }
        case 7: Scratch.write(input.bytes(upTo: 200), to: path)
        case 8: mknod(path, S_IFCHR | 0o600, 0)
        default: symlink("/", path)
        }
    }

    mutating func apply(_ input: inout FuzzInput) {
        while !input.isAtEnd && steps < 64 {
            steps += 1
            switch input.below(16) {
            case 0:  // a store dir replaced by junk
                let path = root + "/" + Self.storeDirs[input.below(Self.storeDirs.count)]
                guard isInside(path, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(path)
                makeJunk(at: path, &input)
            case 1:  // a store dir's mode
                let path = root + "/" + Self.storeDirs[input.below(Self.storeDirs.count)]
                let mode = [0o777, 0o000, 0o755, 0o1777, 0o700][input.below(5)]
                // Only a dir: junk planted there may be a hardlink to the sentinel's file.
                var st = stat()
                guard isInside(path), lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { break }
                chmod(path, mode_t(mode))
            case 2, 3, 4:  // junk inside a store dir
                let dir = root + "/" + Self.storeDirs[input.below(Self.storeDirs.count)]
                let path = dir + "/" + junkName(&input)
                guard isInside(path, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(path)
                makeJunk(at: path, &input)
            case 5:  // a layer's parts replaced
                guard !layerDirs.isEmpty else { break }
                let layer = layerDirs[input.below(layerDirs.count)]
                let part = layer + "/" + ["diff", "link", "diff/etc", "diff/.wh..wh..opq"][input.below(4)]
                guard isInside(part, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(part)
                makeJunk(at: part, &input)
            case 6:  // a short link re-pointed
                guard isInside(root + "/l/x") else { break }
                let links = TreeSignature.names(root + "/l").sorted()
                guard !links.isEmpty else { break }
                let path = root + "/l/" + links[input.below(links.count)]
                unlink(path)
                symlink(["../../sentinel", "/", "../layers", "../locks/store.lock", sentinel][input.below(5)], path)
            case 7:  // the database replaced by the input's bytes
                let path = root + "/metadata.db"
                let bytes = input.bytes(upTo: 255) + input.bytes(upTo: 255)
                guard isInside(path, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(path)
                Scratch.write(bytes, to: path)
            case 8:  // bytes of the database flipped
                let fd = open(root + "/metadata.db", O_RDWR | O_NOFOLLOW)
                if fd >= 0 {
                    var st = stat()
                    fstat(fd, &st)
                    if st.st_size > 0 && st.st_nlink == 1 && st.st_mode & S_IFMT == S_IFREG {
                        var b = input.byte()
                        pwrite(fd, &b, 1, off_t(input.uint16() % Int(st.st_size)))
                    }
                    close(fd)
                }
            case 9, 10, 11:  // SQL on the real database
                let sql = SQLTamper.statement(&input)
                guard databaseIsSafeToOpen else { break }
                SQLTamper.run(sql, on: root + "/metadata.db")
            case 12:  // WAL and shared-memory junk
                let name = ["metadata.db-wal", "metadata.db-shm", "metadata.db-journal"][input.below(3)]
                let path = root + "/" + name
                guard isInside(path, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(path)
                if input.below(2) == 0 { makeJunk(at: path, &input) } else { Scratch.write(input.bytes(upTo: 255), to: path) }
            case 13:  // the database itself a symlink, dir or fifo
                let path = root + "/metadata.db"
                guard isInside(path, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(path)
                makeJunk(at: path, &input)
            case 14:  // the root's mode
                chmod(root, [0o777, 0o755, 0o700, 0o000][input.below(4)])
            default:  // a container's dirs replaced
                let part = root + "/containers/c1/" + ["upper", "work", "merged", "upper/x"][input.below(4)]
                guard isInside(part, lastMayBeSymlink: true) else { break }
                TreeRemover.remove(part)
                makeJunk(at: part, &input)
            }
        }
    }
}
