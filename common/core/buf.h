/*
 * buf.h - a growable byte buffer with a hard size bound (after curl's dynbuf).
 *
 * The buffer is always NUL-terminated (the terminator is not counted in len),
 * so text can be used as a C string. Growing past max is its own error,
 * ST_TOO_LARGE, and leaves the buffer unchanged.
 */
#ifndef CORE_BUF_H
#define CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "core/error.h"

struct buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t cap;
    size_t max; /* bound on len */
};

/* Initialises an embedded buffer bounded to max bytes. */
void buf_init(struct buf *b, size_t max);

/* Frees the storage; the buffer can be reused after buf_init(). */
void buf_release(struct buf *b);

/* Empties the buffer, keeping its storage. */
void buf_reset(struct buf *b);

/* Appends n bytes. ST_TOO_LARGE when len would exceed max. */
enum status buf_append(struct buf *b, const void *data, size_t n);
enum status buf_append_str(struct buf *b, const char *s);
enum status buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
enum status buf_vprintf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Contents as a string: never NULL ("" when empty), borrowed, valid until the next change. */
const char *buf_str(const struct buf *b);

/*
 * Takes ownership of the storage: returns a malloc'd NUL-terminated copy
 * (never NULL), stores its length in *len when non-NULL, and resets b.
 * The caller frees the result with free().
 */
char *buf_take(struct buf *b, size_t *len);

#endif
