// Apply benchmarks on generated data: a Debian-rootfs-like tree (~5,000 files of mixed sizes in
// ~800 dirs, with symlinks) and 100,000 small files in 1,000 dirs, each packed once as .tar.gz
// and .tar.zst with the system's tar, gzip and zstd. Each iteration applies the layer onto an
// empty dir (digests included); the removal of the previous output is outside the measurement.
//
// Set LAYERKIT_BENCH_DIR to a journaled file system (see ../README.md): the default temp dir on
// these machines is ext4 without a journal, which slows inode allocation after mass deletes.
import Benchmark
import Foundation
import LayerKit

let workDir: String = {
    let base = ProcessInfo.processInfo.environment["LAYERKIT_BENCH_DIR"] ?? NSTemporaryDirectory()
    let dir = base + "/layerkit-bench"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}()

/// Deterministic pseudo-random bytes (xorshift), so the data set is the same on every run.
struct XorShift {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

func shell(_ command: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    try! p.run()
    p.waitUntilExit()
    precondition(p.terminationStatus == 0, "failed: \(command)")
}

/// Builds the tree `name` with `files` files spread over `dirs` dirs, and its layers; cached.
func dataSet(_ name: String, files: Int, dirs: Int, sizes: (inout XorShift) -> Int, symlinkEvery: Int) -> String {
    let root = "\(workDir)/\(name)"
    if FileManager.default.fileExists(atPath: root + ".tar.zst") { return root }
    try? FileManager.default.removeItem(atPath: root)
    var rng = XorShift(state: 0x9E37_79B9_7F4A_7C15)
    var text = [UInt8]()
    for _ in 0..<(1 << 20) { text.append(UInt8(ascii: "a") + UInt8(rng.next() % 26)) }
    for d in 0..<dirs {
        try! FileManager.default.createDirectory(atPath: "\(root)/d\(d / 32)/s\(d)", withIntermediateDirectories: true)
    }
    for f in 0..<files {
        let d = f % dirs
        let size = sizes(&rng)
        let start = Int(rng.next() % UInt64(text.count - size))
        let path = "\(root)/d\(d / 32)/s\(d)/f\(f)"
        FileManager.default.createFile(atPath: path, contents: Data(text[start..<(start + size)]))
        if symlinkEvery > 0 && f % symlinkEvery == 0 {
            try? FileManager.default.createSymbolicLink(atPath: path + ".lnk", withDestinationPath: "f\(f)")
        }
    }
    shell("cd '\(root)' && tar --numeric-owner -cf ../\(name).tar . && gzip -6 -n -k -f ../\(name).tar && zstd -q -3 -f ../\(name).tar")
    return root
}

func applyBenchmark(_ benchmark: Benchmark, layer: String) {
    let applier = LayerApplier()
    for i in benchmark.scaledIterations {
        let dest = "\(workDir)/out-\(i)"
        try? FileManager.default.removeItem(atPath: dest)
        try! FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: false)
        benchmark.startMeasurement()
        let summary = try! applier.apply(.path(layer), to: dest)
        blackHole(summary)
        benchmark.stopMeasurement()
        try? FileManager.default.removeItem(atPath: dest)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .peakMemoryResident, .mallocCountTotal],
                                           maxDuration: .seconds(60), maxIterations: 7)

    let rootfs = dataSet("rootfs-like", files: 5_000, dirs: 800, sizes: { rng in
        // Mostly small files, a few large ones, like /usr of a minbase install.
        let r = rng.next() % 100
        return r < 70 ? Int(rng.next() % 8_192) : r < 97 ? Int(rng.next() % 65_536) : Int(rng.next() % 900_000)
    }, symlinkEvery: 8)
    let small = dataSet("many-small", files: 100_000, dirs: 1_000, sizes: { rng in Int(rng.next() % 4_097) }, symlinkEvery: 0)

    for (set, root) in [("rootfs-like", rootfs), ("many-small", small)] {
        for ext in ["tar", "tar.gz", "tar.zst"] {
            Benchmark("apply \(set) .\(ext)", configuration: .init(maxIterations: set == "many-small" ? 5 : 10)) { benchmark in
                applyBenchmark(benchmark, layer: "\(root).\(ext)")
            }
        }
        Benchmark("inspect (digests only) \(set) .tar.gz") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try! LayerApplier.inspect(.path("\(root).tar.gz")))
            }
        }
    }
}
