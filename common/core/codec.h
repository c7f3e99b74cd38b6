/*
 * codec.h - byte encodings and digests: base64 (standard and URL-safe),
 * hex, SHA-256 and HMAC-SHA256.
 */
#ifndef CORE_CODEC_H
#define CORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum b64_alphabet {
    B64_STD, /* +/ with = padding */
    B64_URL, /* -_ without padding (JWT) */
};

/* Size of the encoding of n bytes, without the terminator. */
size_t base64_encoded_len(size_t n, enum b64_alphabet alphabet);

/*
 * Appends the base64 encoding of data to out.
 * ST_TOO_LARGE when out's bound is crossed.
 */
enum status base64_encode(struct buf *out, const void *data, size_t n, enum b64_alphabet alphabet);

/*
 * Appends the decoding of text (len bytes) to out. Accepts both alphabets,
 * with or without padding; refuses any other character (whitespace
 * included). ST_INVALID on bad input, ST_TOO_LARGE past out's bound.
 */
enum status base64_decode(struct buf *out, const char *text, size_t len);

/* Writes 2n lowercase hex digits plus a terminator to out (capacity >= 2n+1). */
void hex_encode(char *out, const void *data, size_t n);

/* SHA-256 of data into out[32]. */
void sha256(const void *data, size_t n, uint8_t out[32]);

/* Lowercase hex SHA-256 of data into out[65]. */
void sha256_hex(const void *data, size_t n, char out[65]);

/* HMAC-SHA256 of data with key into out[32]. */
void hmac_sha256(const void *key, size_t key_len, const void *data, size_t n, uint8_t out[32]);

/* Constant-time comparison of n bytes. */
bool mem_equal_ct(const void *a, const void *b, size_t n);

#endif
