import LayerKit

/// The FUSE union driver as the store sees it: a function that starts the `fuse-serve` daemon
/// (a detached copy of this binary) and returns its pid once the mount is live.
enum FuseDriver {
    static var mounter: UserspaceMounter? {
        { request, target in
            guard let upper = request.upperDir, let work = request.workDir else {
                throw FuseSpawnError(description: "the FUSE union needs an upper and a work dir")
            }
            return try spawnFuseDaemon(lowers: request.lowerDirs, upper: upper, work: work, target: target)
        }
    }
}
