/*
 * util.h - small helpers every module uses: invariant checks, array sizes,
 * bounded string copies.
 */
#ifndef CORE_UTIL_H
#define CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define UNUSED(x) ((void)(x))

/*
 * BUG() reports a programmer error and aborts, in every build. Use it for
 * states that cannot happen unless the code is wrong, never for bad input.
 */
#define BUG(...) core_bug(__FILE__, __LINE__, __VA_ARGS__)
void core_bug(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* ASSERT stays on in every build: invariants are cheap compared with I/O. */
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            core_bug(__FILE__, __LINE__, "assertion failed: %s", #cond);                           \
    } while (0)

/*
 * Copies src into dst (capacity cap, cap > 0), always NUL-terminating.
 * Returns false when src did not fit (dst then holds a truncated copy).
 */
bool str_copy(char *dst, size_t cap, const char *src);

/*
 * snprintf that reports truncation: returns false when the output did not
 * fit in cap bytes (or on an encoding error).
 */
bool str_printf(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* True when s is non-NULL and starts with prefix. */
bool str_starts_with(const char *s, const char *prefix);

/* True when a and b are equal ignoring ASCII case; NULLs compare unequal. */
bool str_ieq(const char *a, const char *b);

/*
 * Parses a whole decimal integer in [min, max]. Leading/trailing spaces and
 * trailing garbage are refused. Returns false on any error.
 */
bool str_to_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Parses a whole finite double. Returns false on any error. */
bool str_to_double(const char *s, double *out);

/* Length of s cut to at most max bytes, never inside a UTF-8 sequence. */
size_t str_bounded_len(const char *s, size_t max);

/* Heap copy of at most max bytes of s (str_bounded_len), NULL stays NULL. */
char *str_dup_bounded(const char *s, size_t max);

/* a + b, saturating at the int64 limits instead of overflowing. */
int64_t i64_add_sat(int64_t a, int64_t b);

/* Returns a heap copy of s (NULL stays NULL); aborts on allocation failure. */
char *xstrdup(const char *s);

/* malloc/calloc/realloc that abort on failure: out of memory is fatal here. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);

#endif
