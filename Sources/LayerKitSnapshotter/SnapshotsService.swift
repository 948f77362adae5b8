import GRPCCore
import LayerKit
import SwiftProtobuf

/// containerd's snapshots service (`containerd.services.snapshots.v1.Snapshots`) on the layer
/// store: the ten RPCs a proxy snapshotter plugin answers. The `snapshotter` field of requests
/// (the plugin's name in containerd) is not looked at: one server serves one store.
///
/// Errors go back as the gRPC codes containerd's `errdefs` turns into its error classes:
/// NotFound, AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable.
public struct SnapshotsService: Containerd_Services_Snapshots_V1_Snapshots.SimpleServiceProtocol {
    /// The label containerd's unpacker puts on the snapshot it prepares for a layer: the layer's
    /// chainID. A remote snapshotter that already has the layer commits it under that name and
    /// answers AlreadyExists.
    public static let targetReferenceLabel = "containerd.io/snapshot.ref"
    /// How many snapshots one List response carries.
    static let listBatchSize = 100

    let worker: SnapshotStoreWorker
    let log: SnapshotterLog

    init(worker: SnapshotStoreWorker, log: SnapshotterLog) {
        self.worker = worker
        self.log = log
    }

    public func prepare(request: Containerd_Services_Snapshots_V1_PrepareSnapshotRequest,
                        context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_PrepareSnapshotResponse {
        let (key, parent, labels) = (request.key, request.parent, request.labels)
        let mounts = try await call("Prepare \(key.debugDescription) on \(parent.debugDescription)") { (store) throws(SnapshotError) -> [MountSpec] in
            if let target = labels[Self.targetReferenceLabel], let chainID = try? Digest(parsing: target),
               try store.snapshot(named: key) == nil,
               let adopted = try store.adoptLayer(chainID, as: target, parent: parent, labels: labels) {
                throw SnapshotError(.alreadyExists, "target snapshot \(adopted.name.debugDescription): already exists (served from the store's layer \(chainID))")
            }
            let snapshot = try store.createSnapshot(key: key, parent: parent, kind: .active, labels: labels)
            return try store.snapshotMounts(snapshot)
        }
        var response = Containerd_Services_Snapshots_V1_PrepareSnapshotResponse()
        response.mounts = mounts.map(Self.mount)
        return response
    }

    public func view(request: Containerd_Services_Snapshots_V1_ViewSnapshotRequest,
                     context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_ViewSnapshotResponse {
        let (key, parent, labels) = (request.key, request.parent, request.labels)
        let mounts = try await call("View \(key.debugDescription) of \(parent.debugDescription)") { (store) throws(SnapshotError) -> [MountSpec] in
            let snapshot = try store.createSnapshot(key: key, parent: parent, kind: .view, labels: labels)
            return try store.snapshotMounts(snapshot)
        }
        var response = Containerd_Services_Snapshots_V1_ViewSnapshotResponse()
        response.mounts = mounts.map(Self.mount)
        return response
    }

    public func mounts(request: Containerd_Services_Snapshots_V1_MountsRequest,
                       context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_MountsResponse {
        let key = request.key
        let mounts = try await call("Mounts \(key.debugDescription)", changes: false) { (store) throws(SnapshotError) -> [MountSpec] in
            guard let snapshot = try store.snapshot(named: key) else { throw SnapshotError(.notFound, "snapshot \(key.debugDescription) does not exist") }
            return try store.snapshotMounts(snapshot)
        }
        var response = Containerd_Services_Snapshots_V1_MountsResponse()
        response.mounts = mounts.map(Self.mount)
        return response
    }

    public func commit(request: Containerd_Services_Snapshots_V1_CommitSnapshotRequest,
                       context: ServerContext) async throws -> Google_Protobuf_Empty {
        let (key, name, labels) = (request.key, request.name, request.labels)
        let committed = try await call("Commit \(key.debugDescription) as \(name.debugDescription)") { (store) throws(SnapshotError) -> StoredSnapshot in
            try store.commitSnapshot(key: key, as: name, labels: labels)
        }
        log.info("committed \(name.debugDescription) as layer \(committed.chainID?.description ?? "?")")
        return Google_Protobuf_Empty()
    }

    public func remove(request: Containerd_Services_Snapshots_V1_RemoveSnapshotRequest,
                       context: ServerContext) async throws -> Google_Protobuf_Empty {
        let key = request.key
        try await call("Remove \(key.debugDescription)") { (store) throws(SnapshotError) in try store.removeSnapshot(key) }
        return Google_Protobuf_Empty()
    }

    public func stat(request: Containerd_Services_Snapshots_V1_StatSnapshotRequest,
                     context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_StatSnapshotResponse {
        let key = request.key
        let snapshot = try await call("Stat \(key.debugDescription)", changes: false) { (store) throws(SnapshotError) -> StoredSnapshot in
            guard let snapshot = try store.snapshot(named: key) else { throw SnapshotError(.notFound, "snapshot \(key.debugDescription) does not exist") }
            return snapshot
        }
        var response = Containerd_Services_Snapshots_V1_StatSnapshotResponse()
        response.info = Self.info(snapshot)
        return response
    }

    public func update(request: Containerd_Services_Snapshots_V1_UpdateSnapshotRequest,
                       context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UpdateSnapshotResponse {
        let (name, labels, paths) = (request.info.name, request.info.labels, request.updateMask.paths)
        let snapshot = try await call("Update \(name.debugDescription) \(paths)") { (store) throws(SnapshotError) -> StoredSnapshot in
            try store.updateSnapshotLabels(name, labels: labels, fieldPaths: paths)
        }
        var response = Containerd_Services_Snapshots_V1_UpdateSnapshotResponse()
        response.info = Self.info(snapshot)
        return response
    }

    public func list(request: Containerd_Services_Snapshots_V1_ListSnapshotsRequest,
                     response: RPCWriter<Containerd_Services_Snapshots_V1_ListSnapshotsResponse>,
                     context: ServerContext) async throws {
        let filter: SnapshotFilter
        do throws(SnapshotError) { filter = try SnapshotFilter(request.filters) } catch {
            log.info("List: \(error.reason)")
            throw Self.rpcError(error)
        }
        let matched = try await call("List \(filter)", changes: false) { (store) throws(SnapshotError) -> [StoredSnapshot] in
            try store.snapshots().filter(filter.matches)
        }
        var start = 0
        while start < matched.count {
            var batch = Containerd_Services_Snapshots_V1_ListSnapshotsResponse()
            batch.info = matched[start..<min(start + Self.listBatchSize, matched.count)].map(Self.info)
            try await response.write(batch)
            start += Self.listBatchSize
        }
    }

    public func usage(request: Containerd_Services_Snapshots_V1_UsageRequest,
                      context: ServerContext) async throws -> Containerd_Services_Snapshots_V1_UsageResponse {
        let key = request.key
        let dir = try await call("Usage \(key.debugDescription)", changes: false) { (store) throws(SnapshotError) -> String in
            try store.snapshotUsageDirectory(key)
        }
        let usage: SnapshotUsage
        do throws(SnapshotError) {
            usage = try await worker.measure { () throws(SnapshotError) -> SnapshotUsage in
                try LayerStore.measureSnapshotDirectory(dir, of: key)
            }
        } catch {
            log.info("Usage \(key.debugDescription): \(error.reason)")
            throw Self.rpcError(error)
        }
        var response = Containerd_Services_Snapshots_V1_UsageResponse()
        response.size = usage.bytes
        response.inodes = usage.inodes
        return response
    }

    public func cleanup(request: Containerd_Services_Snapshots_V1_CleanupRequest,
                        context: ServerContext) async throws -> Google_Protobuf_Empty {
        let removed = try await call("Cleanup") { (store) throws(SnapshotError) -> [String] in try store.cleanUpSnapshots() }
        for path in removed { log.info("cleanup removed \(path)") }
        return Google_Protobuf_Empty()
    }

    // MARK: Helpers

    /// Runs a store call on the worker; logs it (changes always, reads when verbose) and its
    /// failure; turns a `SnapshotError` into the gRPC status containerd expects.
    private func call<T: Sendable>(_ what: String, changes: Bool = true,
                                   _ body: @escaping @Sendable (LayerStore) throws(SnapshotError) -> T) async throws(RPCError) -> T {
        if changes { log.info(what) } else { log.debug(what) }
        do throws(SnapshotError) {
            return try await worker.run(body)
        } catch {
            log.info("\(what): \(Self.codeName(error.kind)): \(error.reason)")
            throw Self.rpcError(error)
        }
    }

    static func rpcError(_ error: SnapshotError) -> RPCError {
        let code: RPCError.Code
        switch error.kind {
        case .notFound: code = .notFound
        case .alreadyExists: code = .alreadyExists
        case .failedPrecondition: code = .failedPrecondition
        case .invalidArgument: code = .invalidArgument
        case .unavailable: code = .unavailable
        }
        return RPCError(code: code, message: error.reason)
    }

    static func codeName(_ kind: SnapshotError.Kind) -> String {
        switch kind {
        case .notFound: "NotFound"
        case .alreadyExists: "AlreadyExists"
        case .failedPrecondition: "FailedPrecondition"
        case .invalidArgument: "InvalidArgument"
        case .unavailable: "Unavailable"
        }
    }

    static func mount(_ spec: MountSpec) -> Containerd_Types_Mount {
        var mount = Containerd_Types_Mount()
        mount.type = spec.type
        mount.source = spec.source
        mount.options = spec.options
        return mount
    }

    static func info(_ snapshot: StoredSnapshot) -> Containerd_Services_Snapshots_V1_Info {
        var info = Containerd_Services_Snapshots_V1_Info()
        info.name = snapshot.name
        info.parent = snapshot.parentName ?? ""
        switch snapshot.kind {
        case .view: info.kind = .view
        case .active: info.kind = .active
        case .committed: info.kind = .committed
        }
        info.createdAt = timestamp(snapshot.createdNanoseconds)
        info.updatedAt = timestamp(snapshot.updatedNanoseconds)
        info.labels = snapshot.labels
        return info
    }

    static func timestamp(_ nanoseconds: Int64) -> Google_Protobuf_Timestamp {
        let seconds = nanoseconds >= 0 ? nanoseconds / 1_000_000_000 : (nanoseconds - 999_999_999) / 1_000_000_000
        return Google_Protobuf_Timestamp(seconds: seconds, nanos: Int32(nanoseconds - seconds * 1_000_000_000))
    }
}
