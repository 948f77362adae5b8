import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Cleaning up after crashes, and checking that the files and the records agree.
extension LayerStore {
    /// Cleans up if no other process is using the store (the store lock is free); otherwise
    /// does nothing and says so (`ran == false`): what looks unfinished may be in progress.
    func cleanUpIfIdle() throws(StoreError) -> StoreCleanup {
        let lock = try FileLock(path: paths.storeLock)
        guard try lock.tryLock(.exclusive) else { return StoreCleanup(ran: false) }
        defer { lock.unlock() }
        return try cleanUp()
    }

    /// Removes what a crash or an interrupted gc leaves: everything in `staging/`, every
    /// `layers/` entry without a record, every `l/` link that is not the link of a recorded
    /// layer, lock files of unrecorded layers; recreates missing links of recorded layers.
    /// The caller holds the store lock exclusively.
    func cleanUp() throws(StoreError) -> StoreCleanup {
        var cleanup = StoreCleanup(ran: true)
        // First, so that a commit it finishes has its layer dir complete for the checks below.
        cleanup.snapshotRepairs = try recoverSnapshots()
        // Before staging is cleared: the journals there name blobs of imports that never recorded.
        cleanup.orphanBlobs = try removeBlobsOfInterruptedImports()
        for name in try Self.entries(of: paths.stagingDir) {
            let path = paths.stagingDir + "/" + name
            try Self.removeTree(path)
            cleanup.stagingDirs.append(path)
        }
        let records = try layers()
        let byHex = Dictionary(uniqueKeysWithValues: records.map { ($0.chainID.hex, $0) })
        for name in try Self.entries(of: paths.layersDir) where byHex[name] == nil {
            let path = paths.layersDir + "/" + name
            try Self.removeTree(path)
            cleanup.unrecordedLayers.append(path)
        }
        let byLink = Dictionary(records.map { ($0.link, $0) }, uniquingKeysWith: { a, _ in a })
        for name in try Self.entries(of: paths.linksDir) {
            let path = paths.shortLink(name)
            if let owner = byLink[name], Self.readLink(path) == StorePaths.shortLinkTarget(owner.chainID) { continue }
            try Self.removeTree(path)
            cleanup.danglingLinks.append(path)
        }
        for layer in records where Self.readLink(paths.shortLink(layer.link)) == nil && Self.isDirectory(paths.diffDir(layer.chainID)) {
            let path = paths.shortLink(layer.link)
            guard symlink(StorePaths.shortLinkTarget(layer.chainID), path) == 0 else { throw .lastErrno(path: path, "cannot create link") }
            cleanup.restoredLinks.append(path)
        }
        for name in try Self.entries(of: paths.locksDir) where name.hasSuffix(".lock") && name != "store.lock" {
            // Safe: layer locks are taken only under the store lock, which we hold exclusively.
            if byHex[String(name.dropLast(5))] == nil { unlink(paths.locksDir + "/" + name) }
        }
        // Container dirs without a record (a crash between creating the dirs and the record, or
        // between removing the record and the dirs). One with something mounted in it is left.
        let containerIDs = Set(try containers().map(\.id))
        for name in try Self.entries(of: paths.containersDir) where !containerIDs.contains(name) {
            let path = paths.containerDir(name)
            do throws(StoreError) { try Self.removeTree(path) } catch { continue }
            cleanup.orphanContainers.append(path)
        }
        if !cleanup.isEmpty {
            try Durability.syncDirectory(paths.layersDir)
            try Durability.syncDirectory(paths.linksDir)
        }
        return cleanup
    }

    /// Compares the files with the records, changing nothing, and returns every disagreement:
    /// staging leftovers, records without a complete layer dir, layer dirs without a record,
    /// link files and `l/` links that do not match their record, and anything SQLite's own
    /// integrity and foreign key checks report. Waits for imports and gc in progress to finish.
    public func verify() throws(StoreError) -> [StoreProblem] {
        try withStoreLock(.exclusive) { () throws(StoreError) -> [StoreProblem] in try findProblems() }
    }

    private func findProblems() throws(StoreError) -> [StoreProblem] {
        var problems = [StoreProblem]()
        func report(_ path: String, _ problem: String) { problems.append(StoreProblem(path: path, problem: problem)) }

        for name in try Self.entries(of: paths.stagingDir) { report(paths.stagingDir + "/" + name, "staging leftover") }
        let records = try layers()
        let byHex = Dictionary(uniqueKeysWithValues: records.map { ($0.chainID.hex, $0) })
        for name in try Self.entries(of: paths.layersDir) where byHex[name] == nil {
            report(paths.layersDir + "/" + name, "layer dir without a record")
        }
        for layer in records {
            if !Self.isDirectory(paths.diffDir(layer.chainID)) { report(paths.diffDir(layer.chainID), "recorded layer has no diff dir") }
            // Read as a store file someone else may have replaced: no symlink, no fifo, 4 KiB at most.
            let linkFile = FileSystem.readSmallRegularFile(atPath: paths.linkFile(layer.chainID), limit: 4096)
                .map { String(decoding: $0, as: UTF8.self) } ?? ""
            if linkFile != layer.link { report(paths.linkFile(layer.chainID), "holds \(linkFile.debugDescription), the record says \(layer.link)") }
            if Self.readLink(paths.shortLink(layer.link)) != StorePaths.shortLinkTarget(layer.chainID) {
                report(paths.shortLink(layer.link), "missing or not pointing at \(StorePaths.shortLinkTarget(layer.chainID))")
            }
            if let parent = layer.parent, byHex[parent.hex] == nil { report(paths.layerDir(layer.chainID), "parent \(parent) has no record") }
        }
        let links = Set(records.map(\.link))
        for name in try Self.entries(of: paths.linksDir) where !links.contains(name) {
            report(paths.shortLink(name), "link of no recorded layer")
        }
        let checks = try database { db throws(DatabaseError) in
            (try db.query("PRAGMA integrity_check", []) { (row) throws(DatabaseError) in try row.string(0) },
             try db.query("PRAGMA foreign_key_check", []) { (row) throws(DatabaseError) in
                 "\(try row.string(0)) row \(try row.int64(1)) references a missing \(try row.string(2))"
             })
        }
        for line in checks.0 where line != "ok" { report(paths.database, line) }
        for line in checks.1 { report(paths.database, line) }
        return problems
    }

    // MARK: File helpers

    static func entries(of dir: String) throws(StoreError) -> [String] {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .lastErrno(path: dir, "cannot open directory") }
        defer { close(fd) }
        do throws(Errno) { return try FileSystem.names(of: fd).map { String(decoding: $0, as: UTF8.self) }.sorted() } catch {
            throw .system(error, path: dir, "cannot read directory")
        }
    }

    static func removeTree(_ path: String) throws(StoreError) {
        do throws(Errno) { try FileSystem.removeTree(atPath: path) } catch {
            if error == .resourceBusy { throw .system(error, path: path, "cannot remove: something is mounted below it") }
            throw .system(error, path: path, "cannot remove")
        }
    }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && FileSystem.isDirectory(st)
    }
}
