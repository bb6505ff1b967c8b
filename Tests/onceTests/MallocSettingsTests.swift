import Foundation
import Testing

@testable import once

@Suite struct MallocSettingsTests {
    @Test func anOperatorsAllocatorSettingsWin() {
        #expect(MallocSettings.mmapThreshold(environment: [:]) == 1 << 20)
        #expect(MallocSettings.mmapThreshold(environment: ["GLIBC_TUNABLES": "glibc.malloc.arena_max=2"]) == nil)
        #expect(MallocSettings.mmapThreshold(environment: ["MALLOC_MMAP_THRESHOLD_": "262144"]) == nil)
    }

    /// After `apply`, a 2 MiB block is mapped on its own even right after a larger one was freed
    /// (glibc's dynamic threshold would have risen to that size and served it from an arena).
    /// glibc marks a mapped chunk in the size word just before the block (`IS_MMAPPED`, 0x2).
    @Test func bigBlocksAreMappedAfterApply() throws {
        MallocSettings.apply(environment: [:])
        let larger = try #require(malloc(4 << 20))
        free(larger)
        let block = try #require(malloc(2 << 20))
        defer { free(block) }
        let sizeWord = block.load(fromByteOffset: -MemoryLayout<Int>.size, as: Int.self)
        #expect(sizeWord & 0x2 != 0)
    }
}
