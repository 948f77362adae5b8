import LayerKit

/// The FUSE union driver as the store sees it: a function that starts the daemon.
enum FuseDriver {
    /// Nil while this build has no FUSE driver.
    static var mounter: UserspaceMounter? { nil }
}
