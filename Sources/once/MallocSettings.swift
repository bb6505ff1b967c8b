import Foundation

/// glibc's allocator settings for `once run`, applied once at start, before the database
/// sessions' and the consumer's threads allocate.
///
/// Each thread that allocates gets an arena of its own, and glibc raises its mmap threshold to
/// the largest block freed (up to 32 MiB) and its trim threshold to twice that: after the first
/// batches, every arena keeps the big buffers it freed (statement parameters, results, decoded
/// batches) and gives none of them back. A fixed threshold maps blocks of 1 MiB and more and
/// unmaps them when freed, and the arenas return their free tops (docs/benchmarks.md: 15 MB
/// less peak memory, the same throughput). An operator's `GLIBC_TUNABLES` or
/// `MALLOC_MMAP_THRESHOLD_` wins. Not thread-safe: `apply` runs before other threads start.
enum MallocSettings {
    /// The mmap threshold to set, or nil when the environment sets the allocator's own.
    static func mmapThreshold(environment: [String: String]) -> Int32? {
        guard environment["GLIBC_TUNABLES"] == nil, environment["MALLOC_MMAP_THRESHOLD_"] == nil else { return nil }
        return 1 << 20
    }

    static func apply(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let threshold = mmapThreshold(environment: environment),
            // mallopt is glibc's; the Glibc module does not declare it.
            let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt")
        else { return }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        _ = mallopt(mmapThresholdOption, threshold)
    }

    /// `M_MMAP_THRESHOLD` in glibc's `malloc.h`.
    private static let mmapThresholdOption: Int32 = -3
}
