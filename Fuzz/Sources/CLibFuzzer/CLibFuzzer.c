#include "CLibFuzzer.h"

/// libFuzzer's driver (compiler-rt's FuzzerDriver.cpp), for programs with a main of their own.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*test_one_input)(const uint8_t *data, size_t size));

int once_fuzz_run(int argc, char **argv, int (*test_one_input)(const uint8_t *data, size_t size)) {
    return LLVMFuzzerRunDriver(&argc, &argv, test_one_input);
}
