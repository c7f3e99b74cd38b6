/*
 * fuzz.h - what a fuzz target provides: the libFuzzer entry point and its
 * seed inputs (also the starting corpus of tests/fuzz/run.sh).
 */
#ifndef TESTS_FUZZ_H
#define TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *const *fuzz_seeds(size_t *n);

#endif
