/*
 * driver.c - runs a libFuzzer target without libFuzzer, so the targets run
 * under gcc's ASan/UBSan in every test run:
 *
 *   fuzz_x [FILE...]   replays files (a corpus, a crash reproducer)
 *   fuzz_x --write-seeds DIR   writes the seeds as files (a libFuzzer corpus)
 *   fuzz_x             replays the built-in seeds, then FUZZ_ITERATIONS
 *                      (default 20000) deterministic mutations of them
 *                      (byte flips, inserts, deletes, splices, truncations;
 *                      FUZZ_SEED picks the sequence)
 *
 * For coverage-guided fuzzing build the same targets with clang and
 * -fsanitize=fuzzer (tests/fuzz/run.sh).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic, good enough to shake inputs */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static const uint8_t interesting[][8] = {
    {'"'},
    {'\\'},
    {'{'},
    {'}'},
    {'['},
    {']'},
    {':'},
    {','},
    {0},
    {0xff},
    {0xc3, 0x28},
    {'\\', 'u', '0', '0', '0', '0'},
    {'9', '9', '9', '9', '9', '9', '9', '9'},
    {'-'},
    {'.'},
    {'='},
};

static size_t mutate(uint8_t *buf, size_t len, size_t cap)
{
    int n = 1 + (int)(rng() % 4), i;

    for (i = 0; i < n; i++) {
        size_t at = len ? (size_t)(rng() % len) : 0;

        switch (rng() % 6) {
        case 0: /* flip a bit */
            if (len)
                buf[at] ^= (uint8_t)(1u << (rng() % 8));
            break;
        case 1: /* random byte */
            if (len)
                buf[at] = (uint8_t)rng();
            break;
        case 2: /* delete a run */
            if (len) {
                size_t k = 1 + (size_t)(rng() % 8);

                if (k > len - at)
                    k = len - at;
                memmove(buf + at, buf + at + k, len - at - k);
                len -= k;
            }
            break;
        case 3: { /* insert an interesting token */
            const uint8_t *tok = interesting[rng() % (sizeof(interesting) / 8)];
            size_t k = strnlen((const char *)tok, 8);

            if (k == 0)
                k = 1;
            if (len + k <= cap) {
                memmove(buf + at + k, buf + at, len - at);
                memcpy(buf + at, tok, k);
                len += k;
            }
            break;
        }
        case 4: /* duplicate a run (nesting, repetition) */
            if (len && len * 2 <= cap) {
                size_t k = 1 + (size_t)(rng() % (len - at));

                memmove(buf + at + k, buf + at, len - at);
                len += k;
            }
            break;
        default: /* truncate */
            len = at;
            break;
        }
    }
    return len;
}

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long n;

    if (!f) {
        perror(path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    data = malloc((size_t)n + 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(data);
        return 1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(data, (size_t)n);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    const char *env = getenv("FUZZ_ITERATIONS");
    long iterations = env ? strtol(env, NULL, 10) : 20000, i;
    size_t n_seeds = 0, cap = 1 << 16;
    const char *const *seeds = fuzz_seeds(&n_seeds);
    uint8_t *buf = malloc(cap);
    int a;

    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        for (i = 0; i < (long)n_seeds; i++) {
            char path[4096];
            FILE *f;

            snprintf(path, sizeof(path), "%s/seed-%ld", argv[2], i);
            f = fopen(path, "wb");
            if (!f || fwrite(seeds[i], 1, strlen(seeds[i]), f) != strlen(seeds[i])) {
                perror(path);
                return 1;
            }
            fclose(f);
        }
        free(buf);
        return 0;
    }
    if (argc > 1) {
        for (a = 1; a < argc; a++)
            if (replay_file(argv[a]) != 0)
                return 1;
        return 0;
    }
    env = getenv("FUZZ_SEED");
    rng_state = env ? strtoull(env, NULL, 10) | 1 : 0x9e3779b97f4a7c15ULL;
    for (i = 0; i < (long)n_seeds; i++)
        LLVMFuzzerTestOneInput((const uint8_t *)seeds[i], strlen(seeds[i]));
    for (i = 0; i < iterations && n_seeds; i++) {
        const char *seed = seeds[rng() % n_seeds];
        size_t len = strlen(seed);

        if (len > cap)
            len = cap;
        memcpy(buf, seed, len);
        len = mutate(buf, len, cap);
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
    printf("%s: %zu seeds and %ld mutations ran clean\n", argv[0], n_seeds, iterations);
    return 0;
}
