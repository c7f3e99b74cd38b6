#include "core/codec.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/util.h"

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t base64_encoded_len(size_t n, enum b64_alphabet alphabet)
{
    if (alphabet == B64_STD)
        return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

enum status base64_encode(struct buf *out, const void *data, size_t n, enum b64_alphabet alphabet)
{
    const char *tab = alphabet == B64_STD ? b64_std : b64_url;
    const uint8_t *p = data;
    char quad[4];
    size_t i;
    enum status st;

    for (i = 0; i + 2 < n; i += 3) {
        quad[0] = tab[p[i] >> 2];
        quad[1] = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
        quad[2] = tab[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
        quad[3] = tab[p[i + 2] & 63];
        if ((st = buf_append(out, quad, 4)) != ST_OK)
            return st;
    }
    if (i < n) {
        size_t rest = n - i;
        size_t emit;

        quad[0] = tab[p[i] >> 2];
        if (rest == 1) {
            quad[1] = tab[(p[i] & 3) << 4];
            quad[2] = '=';
        } else {
            quad[1] = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
            quad[2] = tab[(p[i + 1] & 15) << 2];
        }
        quad[3] = '=';
        emit = alphabet == B64_STD ? 4 : rest + 1;
        if ((st = buf_append(out, quad, emit)) != ST_OK)
            return st;
    }
    return ST_OK;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

enum status base64_decode(struct buf *out, const char *text, size_t len)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i, pad = 0;
    enum status st;

    while (len > 0 && text[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (pad && (len + pad) % 4 != 0)
        return ST_INVALID;
    if (len % 4 == 1)
        return ST_INVALID;
    for (i = 0; i < len; i++) {
        int v = b64_value(text[i]);
        uint8_t byte;

        if (v < 0)
            return ST_INVALID;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            byte = (uint8_t)(acc >> bits);
            if ((st = buf_append(out, &byte, 1)) != ST_OK)
                return st;
        }
    }
    /* Leftover bits must be zero, or the text was not a canonical encoding. */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return ST_INVALID;
    return ST_OK;
}

void hex_encode(char *out, const void *data, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void sha256(const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 32;

    if (EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) != 1)
        BUG("EVP_Digest sha256 failed");
}

void sha256_hex(const void *data, size_t n, char out[65])
{
    uint8_t d[32];

    sha256(data, n, d);
    hex_encode(out, d, sizeof(d));
}

void hmac_sha256(const void *key, size_t key_len, const void *data, size_t n, uint8_t out[32])
{
    unsigned int len = 32;

    if (!HMAC(EVP_sha256(), key, (int)key_len, data, n, out, &len))
        BUG("HMAC sha256 failed");
}

bool mem_equal_ct(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
