#include "store/page_token.h"

#include <stdio.h>
#include <string.h>

#include "batch/model.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/util.h"

void page_token_tag(const char *scope, const char *filter, char tag[PAGE_TOKEN_TAG_LEN + 1])
{
    char key[USER_ID_MAX + BATCH_ID_MAX + 32], hex[65];

    snprintf(key, sizeof(key), "%s\n%s", scope, filter ? filter : "");
    sha256_hex(key, strlen(key), hex);
    memcpy(tag, hex, PAGE_TOKEN_TAG_LEN);
    tag[PAGE_TOKEN_TAG_LEN] = '\0';
}

void page_token_encode(char kind, const char *tag, int64_t number, const char *id,
                       char out[PAGE_TOKEN_MAX])
{
    char raw[PAGE_TOKEN_TAG_LEN + BATCH_ID_MAX + 40];
    struct buf b;

    if (!str_printf(raw, sizeof(raw), "%c1.%s.%lld.%s", kind, tag, (long long)number, id))
        BUG("page token of %s does not fit", id);
    buf_init(&b, PAGE_TOKEN_MAX - 1);
    if (base64_encode(&b, raw, strlen(raw), B64_URL) != ST_OK)
        BUG("page token of %s does not fit", id);
    str_copy(out, PAGE_TOKEN_MAX, buf_str(&b));
    buf_release(&b);
}

static bool id_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return false;
    return true;
}

enum status page_token_decode(const char *token, char kind, const char *tag, int64_t *number,
                              char *id, size_t id_cap, struct error *err)
{
    char raw[PAGE_TOKEN_MAX], num[24];
    const char *p, *dot;
    size_t len = strnlen(token, PAGE_TOKEN_MAX);
    enum status s = ST_INVALID;
    struct buf b;

    buf_init(&b, PAGE_TOKEN_MAX);
    if (len == 0 || len >= PAGE_TOKEN_MAX || base64_decode(&b, token, len) != ST_OK ||
        b.len >= sizeof(raw) || strlen(buf_str(&b)) != b.len)
        goto out;
    memcpy(raw, buf_str(&b), b.len + 1);
    if (raw[0] != kind || raw[1] != '1' || raw[2] != '.' ||
        strlen(raw) < 3 + PAGE_TOKEN_TAG_LEN + 1 || raw[3 + PAGE_TOKEN_TAG_LEN] != '.')
        goto out;
    if (memcmp(raw + 3, tag, PAGE_TOKEN_TAG_LEN) != 0) {
        s = error_set(err, ST_INVALID, "invalid_page_token",
                      "page token belongs to another listing");
        goto done;
    }
    p = raw + 3 + PAGE_TOKEN_TAG_LEN + 1;
    dot = strchr(p, '.');
    if (!dot || (size_t)(dot - p) >= sizeof(num))
        goto out;
    memcpy(num, p, (size_t)(dot - p));
    num[dot - p] = '\0';
    if (!str_to_i64(num, INT64_MIN, INT64_MAX, number))
        goto out;
    if (!dot[1] || strlen(dot + 1) >= id_cap || !id_chars_ok(dot + 1))
        goto out;
    str_copy(id, id_cap, dot + 1);
    s = ST_OK;
    goto done;
out:
    s = error_set(err, ST_INVALID, "invalid_page_token", "invalid page token");
done:
    buf_release(&b);
    return s;
}
