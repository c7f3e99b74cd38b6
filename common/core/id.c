#include "core/id.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/codec.h"
#include "core/util.h"

void random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);

        if (got < 0) {
            if (errno == EINTR)
                continue;
            BUG("getrandom failed: %s", strerror(errno));
        }
        p += got;
        n -= (size_t)got;
    }
}

double random_unit(void)
{
    uint64_t v;

    random_bytes(&v, sizeof(v));
    return (double)(v >> 11) / 9007199254740992.0; /* 2^53 */
}

int id_random(char *out, size_t cap, const char *prefix, size_t n)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    size_t plen = strlen(prefix), i = 0;

    if (plen + n + 1 > cap)
        return 0;
    memcpy(out, prefix, plen);
    while (i < n) {
        uint8_t b;

        random_bytes(&b, 1);
        /* Rejecting 252..255 keeps the 36 symbols exactly uniform. */
        if (b < 252)
            out[plen + i++] = alphabet[b % 36];
    }
    out[plen + n] = '\0';
    return 1;
}

void id_uuid4(char out[37])
{
    uint8_t b[16];

    random_bytes(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void id_trace(char out[33])
{
    uint8_t b[16];

    random_bytes(b, sizeof(b));
    hex_encode(out, b, sizeof(b));
}
