#ifndef ONCE_CLIBFUZZER_H
#define ONCE_CLIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer (the toolchain's, linked by -sanitize=fuzzer) with the command line's
/// options and corpus directories on `test_one_input`; returns the process's exit status.
/// A fuzz target's main calls it instead of relying on libFuzzer's own main, which SwiftPM's
/// entry point of an executable would clash with.
int once_fuzz_run(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size));

#endif
