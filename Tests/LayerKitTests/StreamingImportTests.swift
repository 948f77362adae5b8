import Foundation
@testable import LayerKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The store's import of an image whose blobs arrive as streams (what a registry pull uses):
// the same store as an import of the layout; layers the store has never read; a layer another
// import adds meanwhile dismissed; all or nothing on a bad blob, a failed writer or a
// cancellation; the journal that lets the next open remove blobs of an import that died.
@Suite struct StreamingImportTests {
    typealias Support = StreamImportSupport
    static let layout = StreamImportSupport.busyboxLayout

    /// Begins an import of `layout`'s image into `store`, writes the streams, runs it.
    static func streamImport(_ layout: String, into store: LayerStore, name: String = "app", corrupt: Int? = nil)
        async throws -> (result: StreamingImportResult, writers: [LayerStreamError.Kind?], session: StreamingImport) {
        let session = try await store.beginImport(try Support.incoming(layout), name: name)
        let writers = Support.feed(session, from: layout, corrupt: corrupt)
        do {
            let result = try await session.run()
            return (result, await writers.value, session)
        } catch {
            _ = await writers.value
            throw error
        }
    }

    /// With the store's apply workers (0: one thread; 2: files created by workers), the same
    /// layers, sizes and blobs as an import of the layout with the default.
    @Test(arguments: [0, 2])
    func importFromStreamsEqualsImportOfTheLayout(applyWorkers: Int) async throws {
        let tmp = TempDir("stream-import")
        let reference = try LayerStore(root: tmp.sub("reference"))
        let expected = try await reference.importImage(layout: OCIImageLayout(path: Self.layout), reference: "latest", name: "app")
        var configuration = LayerStore.Configuration()
        configuration.applyWorkers = applyWorkers
        let store = try LayerStore(root: tmp.sub("store"), configuration: configuration)
        let (result, writers, session) = try await Self.streamImport(Self.layout, into: store)
        #expect(session.needs == [.unpack, .unpack])
        #expect(writers == [nil, nil])
        #expect(result.layers.map(\.outcome) == [.unpacked, .unpacked])
        #expect(result.image.manifestDigest == expected.image.manifestDigest)
        #expect(result.image.configDigest == expected.image.configDigest)
        #expect(result.image.chainIDs == expected.image.chainIDs)
        // A layer's size is what its dir takes on disk. Files made by workers land in a dir in
        // another order, and ext4 may then give the dir another block count: compared with a walk
        // of this store's own dirs, not with the other import's.
        let measured = try result.image.chainIDs.map { try DiskUsage.of(store.paths.diffDir($0)) }
        #expect(result.layers.map(\.size) == measured)
        #expect(try store.layers().map(\.size).sorted() == measured.sorted())

        func comparable(_ layer: StoredLayer) -> [String] {
            [layer.chainID.description, layer.diffID.description, "\(layer.blobDigest as Any)", "\(layer.blobSize as Any)",
             "\(layer.mediaType as Any)", "\(layer.parent as Any)"]
        }
        #expect(try store.layers().map(comparable) == reference.layers().map(comparable))
        for chainID in expected.image.chainIDs {
            let diffs = TreeSnapshot(reference.paths.diffDir(chainID)).differences(from: TreeSnapshot(store.paths.diffDir(chainID)))
            #expect(diffs.isEmpty, "\(diffs)")
        }
        // Every blob kept byte for byte: the layout's manifest, config and layers.
        #expect(Support.names(store.paths.blobsDir) == Support.names(Self.layout + "/blobs/sha256"))
        for name in Support.names(store.paths.blobsDir) {
            #expect(FileManager.default.contentsEqual(atPath: store.paths.blobsDir + "/" + name, andPath: Self.layout + "/blobs/sha256/" + name))
        }
        #expect(Support.names(store.paths.stagingDir).isEmpty)
        #expect(try store.verify() == [])
    }

    @Test func layersTheStoreHasAreNeitherAskedForNorRead() async throws {
        let tmp = TempDir("stream-import-skip")
        let extended = try Support.extend(Self.layout, with: [.dir("app"), .file("app/hello", "hello from layer 3\n")], into: tmp.sub("extended"))
        let store = try LayerStore(root: tmp.sub("store"))
        try await store.importImage(layout: OCIImageLayout(path: Self.layout), reference: "latest", name: "busybox")
        let incoming = try Support.incoming(extended)
        #expect(try store.layerNeeds(of: incoming) == [.present, .present, .unpack])
        let (result, _, session) = try await Self.streamImport(extended, into: store, name: "extended")
        #expect(session.needs == [.present, .present, .unpack])
        #expect(session.streams.map { $0 == nil } == [true, true, false])
        #expect(session.neededLayers == [2])
        #expect(result.layers.map(\.outcome) == [.present, .present, .unpacked])
        #expect(result.image.chainIDs == incoming.layers.map(\.chainID))
        #expect(try String(contentsOfFile: store.paths.diffDir(incoming.layers[2].chainID) + "/app/hello", encoding: .utf8) == "hello from layer 3\n")
        #expect(try store.layers().count == 3)
        #expect(try store.verify() == [])
    }

    @Test func aLayerAddedMeanwhileIsDismissedNotReadAgain() async throws {
        let tmp = TempDir("stream-import-appear")
        let store = try LayerStore(root: tmp.sub("store"))
        let session = try await store.beginImport(try Support.incoming(Self.layout), name: "streamed")
        #expect(session.needs == [.unpack, .unpack])
        // Another import (it shares the store lock) adds both layers before this one runs.
        try await store.importImage(layout: OCIImageLayout(path: Self.layout), reference: "latest", name: "other")
        // Nothing was written yet: the import needs no byte of either stream to finish.
        let result = try await session.run()
        #expect(result.layers.map(\.outcome) == [.appeared, .appeared])
        let writers = Support.feed(session, from: Self.layout, order: [1, 0])
        #expect(await writers.value == [.notNeeded, .notNeeded], "each writer was told the layer is not needed")
        #expect(session.streams.allSatisfy { $0?.isWanted == false })
        #expect(try store.image(named: "streamed")?.chainIDs == store.image(named: "other")?.chainIDs)
        #expect(try store.layers().count == 2)
        #expect(try store.verify() == [])
    }

    @Test func aLayerAddedMeanwhileWithAnotherBlobHasOnlyItsBlobRead() async throws {
        let tmp = TempDir("stream-import-blob")
        // The fixture with its zstd layer recompressed as gzip: same layers, another blob.
        let other = try LayerStore(root: tmp.sub("other"))
        try await other.importImage(layout: OCIImageLayout(path: Self.layout), reference: "latest", name: "busybox")
        _ = try await other.exportImage("busybox", to: tmp.sub("gzip"), reference: "latest", gzipLayers: true)
        let gzipImage = try OCIImageLayout(path: tmp.sub("gzip")).resolve("latest")
        let original = try Support.incoming(Self.layout)
        #expect(gzipImage.layers[1].descriptor.digest != original.layers[1].descriptor.digest)

        let store = try LayerStore(root: tmp.sub("store"))
        let session = try await store.beginImport(original, name: "zstd")
        try await store.importImage(layout: OCIImageLayout(path: tmp.sub("gzip")), reference: "latest", name: "gzip")
        // The writers start once the import has dismissed layer 1 (it reads layer 2's blob next).
        let (dismissed, signal) = AsyncStream<Void>.makeStream()
        let running = Task {
            defer { signal.finish() }
            return try await session.run { event in
                if case .dismissed(layer: 0) = event { signal.yield() }
            }
        }
        for await _ in dismissed { break }
        let writers = Support.feed(session, from: Self.layout)
        let result = try await running.value
        #expect(result.layers.map(\.outcome) == [.appeared, .blobAdded])
        #expect(await writers.value == [.notNeeded, nil])
        #expect(store.hasBlob(original.layers[1].descriptor.digest))
        #expect(FileManager.default.contentsEqual(atPath: store.paths.blob(original.layers[1].descriptor.digest),
                                                  andPath: Self.layout + "/blobs/sha256/" + original.layers[1].descriptor.digest.hex))
        #expect(try store.verify() == [])
    }

    @Test func aBlobThatDoesNotMatchCommitsNothing() async throws {
        let tmp = TempDir("stream-import-corrupt")
        let store = try LayerStore(root: tmp.sub("store"))
        await #expect { _ = try await Self.streamImport(Self.layout, into: store, corrupt: 1) } throws: { error in
            let e = error as! StoreError
            return e.kind == .layer(.digestMismatch) && e.description.contains("sha256:6a24f99c3a20")
        }
        // The first layer was complete and verified: it is not kept either.
        try Support.expectEmpty(store.root)
    }

    @Test func aWriterThatFailsCommitsNothing() async throws {
        let tmp = TempDir("stream-import-writer-fails")
        let store = try LayerStore(root: tmp.sub("store"))
        let session = try await store.beginImport(try Support.incoming(Self.layout), name: "app")
        let first = try #require(session.streams[0])
        let bytes = try #require(FileManager.default.contents(atPath: Self.layout + "/blobs/sha256/" + session.image.layers[0].descriptor.digest.hex))
        let writer = Task {
            try await first.write(Array(bytes.prefix(200_000)))
            first.fail("registry.example/app@sha256:b4b4…: the connection dropped and could not be resumed")
        }
        await #expect { _ = try await session.run() } throws: { error in
            (error as! StoreError).description.contains("the connection dropped and could not be resumed")
        }
        try await writer.value
        #expect(session.streams[1]?.isWanted == false, "the writer of the layer not reached is told to stop")
        try Support.expectEmpty(store.root)
    }

    @Test func aCancelledImportCommitsNothing() async throws {
        let tmp = TempDir("stream-import-cancel")
        let store = try LayerStore(root: tmp.sub("store"))
        let session = try await store.beginImport(try Support.incoming(Self.layout), name: "app")
        let first = try #require(session.streams[0])
        let bytes = try #require(FileManager.default.contents(atPath: Self.layout + "/blobs/sha256/" + session.image.layers[0].descriptor.digest.hex))
        // Half the first layer, then nothing: the import waits for bytes until it is cancelled.
        try await first.write(Array(bytes.prefix(bytes.count / 2)))
        let running = Task { try await session.run() }
        try await Task.sleep(for: .milliseconds(200))
        running.cancel()
        await #expect { _ = try await running.value } throws: { ($0 as! StoreError).isCancellation }
        await #expect { try await first.write([1]) } throws: { ($0 as? LayerStreamError)?.kind == .cancelled }
        try Support.expectEmpty(store.root)
    }

    @Test func aSessionRunsOnceAndACancelledOneLetsGarbageCollectionIn() async throws {
        let tmp = TempDir("stream-import-once")
        let store = try LayerStore(root: tmp.sub("store"))
        let session = try await store.beginImport(try Support.incoming(Self.layout), name: "app")
        #expect(Support.names(store.paths.stagingDir).count == 1, "the session's staging dir")
        session.cancel()
        #expect(session.streams.allSatisfy { $0?.isWanted == false })
        await #expect { _ = try await session.run() } throws: { ($0 as! StoreError).kind == .invalidArgument }
        // The store lock is free again: gc (which takes it alone) does not wait.
        _ = try store.collectGarbage()
        try Support.expectEmpty(store.root)
    }

    @Test func badManifestsAndConfigsAreRefusedBeforeAnythingStarts() throws {
        let image = try OCIImageLayout(path: Self.layout).resolve("latest")
        var config = image.configBytes
        config[config.count - 2] ^= 0x01
        #expect { _ = try IncomingImage(manifest: image.manifestBytes, config: config, source: "x") } throws: { error in
            (error as! StoreError).kind == .image(.blobMismatch)
        }
        #expect { _ = try IncomingImage(manifest: image.manifestBytes, expectedDigest: image.layers[0].descriptor.digest,
                                        config: image.configBytes, source: "x") } throws: { error in
            (error as! StoreError).description.contains("the manifest hashes to sha256:d2972f1bc4a4")
        }
        let big = [UInt8](repeating: UInt8(ascii: " "), count: IncomingImage.maximumManifestSize + 1)
        #expect { _ = try IncomingImage(manifest: big, config: image.configBytes, source: "x") } throws: { error in
            (error as! StoreError).description.contains("4 MiB")
        }
        let incoming = try IncomingImage(manifest: image.manifestBytes, config: image.configBytes, source: "x")
        #expect(incoming.manifestDescriptor.digest == image.manifestDescriptor.digest)
        #expect(incoming.layers.map(\.chainID) == image.chainIDs)
    }

    /// What a `kill -9` between the blobs' rename and the records leaves (the journal in the
    /// session's staging dir, blobs no record names) is removed by the next idle open; a listed
    /// blob an image record names stays.
    @Test func theJournalOfAnImportThatDiedLetsTheNextOpenRemoveItsBlobs() async throws {
        let tmp = TempDir("stream-import-journal")
        let root = tmp.sub("store")
        do {
            let store = try LayerStore(root: root)
            try await store.importImage(layout: OCIImageLayout(path: Self.layout), reference: "latest", name: "busybox")
        }
        let store = try LayerStore(root: root)
        let orphan = [UInt8]("a blob of an import that died\n".utf8)
        let orphanDigest = Digest.sha256(of: orphan)
        try Data(orphan).write(to: URL(fileURLWithPath: store.paths.blob(orphanDigest)))
        let kept = try #require(try store.image(named: "busybox")?.manifestDigest)
        let staging = store.paths.stagingDir + "/died"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        try ImportJournal.write([orphanDigest, kept], in: staging)

        let reopened = try LayerStore(root: root)
        #expect(reopened.openingCleanup.orphanBlobs == [reopened.paths.blob(orphanDigest)])
        #expect(reopened.openingCleanup.stagingDirs == [staging])
        #expect(!reopened.hasBlob(orphanDigest))
        #expect(reopened.hasBlob(kept))
        #expect(try reopened.verify() == [])
    }
}
