import Foundation

/// Runs blocking work (file system calls, decompression) on a thread of its own, so an `async`
/// caller does not tie up a thread of Swift's cooperative pool, and turns the calling Task's
/// cancellation into a `CancellationFlag` the work checks between chunks and entries.
enum BlockingWork {
    /// The stack of the worker thread: the engines are iterative, but libarchive and libzstd
    /// like room.
    static let stackSize = 8 << 20

    static func run<T: Sendable, E: Error>(_ name: String,
                                           _ body: @escaping @Sendable (CancellationFlag) throws(E) -> T) async throws(E) -> T {
        let flag = CancellationFlag()
        let result: Result<T, E> = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, E>, Never>) in
                let thread = Thread {
                    continuation.resume(returning: Result { () throws(E) -> T in try body(flag) })
                }
                thread.name = name
                thread.stackSize = stackSize
                thread.start()
            }
        } onCancel: {
            flag.cancel()
        }
        return try result.get()
    }
}
