/*
 * blob.h - the blob port: where outputs (images, videos) are stored and how
 * partners reach them. Adapters: fs_blob.c (files under a data directory,
 * served by the creator), gcs_blob.c (Cloud Storage, V4 signed URLs).
 *
 * Keys are relative paths such as "results/b_x/9f2c-00042-g1.png": only
 * [A-Za-z0-9._/-], no "..", no leading '/', at most BLOB_KEY_MAX-1 bytes.
 */
#ifndef BLOB_BLOB_H
#define BLOB_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"

struct blob_ops {
    void (*close)(void *state);
    enum status (*put)(void *state, const char *key, const void *data, size_t len,
                       const char *content_type, struct error *err);
    enum status (*get)(void *state, const char *key, struct buf *out, char *content_type,
                       size_t ct_cap, struct error *err);
    enum status (*url)(void *state, const char *key, char *out, size_t cap, struct error *err);
};

struct blob {
    const struct blob_ops *ops;
    void *state;
    const char *name; /* "fs", "gcs" */
};

void blob_close(struct blob *b);

/*
 * Stores an object, create-only: when the key already exists nothing is
 * written and ST_ALREADY_EXISTS is returned (keys are deterministic, so a
 * retried upload of the same output is harmless; callers treat it as done).
 */
enum status blob_put(struct blob *b, const char *key, const void *data, size_t len,
                     const char *content_type, struct error *err);

/* Reads an object into out (bounded by out's max). ST_NOT_FOUND when absent. */
enum status blob_get(struct blob *b, const char *key, struct buf *out, char *content_type,
                     size_t ct_cap, struct error *err);

/* The URL a partner uses to download the object (stable or signed). */
enum status blob_url(struct blob *b, const char *key, char *out, size_t cap, struct error *err);

/* True when key satisfies the rules above. */
bool blob_key_valid(const char *key);

#endif
