#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void buf_release(struct buf *b)
{
    free(b->data);
    buf_init(b, b->max);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static enum status buf_reserve(struct buf *b, size_t extra)
{
    size_t need, cap;

    if (extra > b->max || b->len > b->max - extra)
        return ST_TOO_LARGE;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return ST_OK;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return ST_OK;
}

enum status buf_append(struct buf *b, const void *data, size_t n)
{
    enum status st = buf_reserve(b, n);

    if (st != ST_OK)
        return st;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return ST_OK;
}

enum status buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

enum status buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list copy;
    int n;
    enum status st;

    va_copy(copy, ap);
    n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        return ST_INTERNAL;
    st = buf_reserve(b, (size_t)n);
    if (st != ST_OK)
        return st;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return ST_OK;
}

enum status buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    enum status st;

    va_start(ap, fmt);
    st = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return st;
}

const char *buf_str(const struct buf *b)
{
    return b->data ? b->data : "";
}

char *buf_take(struct buf *b, size_t *len)
{
    char *p = b->data;

    if (!p) {
        p = xmalloc(1);
        p[0] = '\0';
    }
    if (len)
        *len = b->len;
    buf_init(b, b->max);
    return p;
}
