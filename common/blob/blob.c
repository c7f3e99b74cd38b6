#include "blob/blob.h"

#include <stdlib.h>
#include <string.h>

#include "batch/model.h"

void blob_close(struct blob *b)
{
    if (b)
        b->ops->close(b->state);
    free(b);
}

enum status blob_put(struct blob *b, const char *key, const void *data, size_t len,
                     const char *content_type, struct error *err)
{
    if (!blob_key_valid(key))
        return error_set(err, ST_INVALID, NULL, "invalid blob key \"%.64s\"", key);
    return b->ops->put(b->state, key, data, len, content_type, err);
}

enum status blob_get(struct blob *b, const char *key, struct buf *out, char *content_type,
                     size_t ct_cap, struct error *err)
{
    if (!blob_key_valid(key))
        return error_set(err, ST_NOT_FOUND, NULL, "no blob \"%.64s\"", key);
    return b->ops->get(b->state, key, out, content_type, ct_cap, err);
}

enum status blob_url(struct blob *b, const char *key, char *out, size_t cap, struct error *err)
{
    if (!blob_key_valid(key))
        return error_set(err, ST_INVALID, NULL, "invalid blob key \"%.64s\"", key);
    return b->ops->url(b->state, key, out, cap, err);
}

bool blob_key_valid(const char *key)
{
    size_t len, i;

    if (!key || !*key || key[0] == '/')
        return false;
    len = strlen(key);
    if (len >= BLOB_KEY_MAX || strstr(key, ".."))
        return false;
    for (i = 0; i < len; i++) {
        char c = key[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '/' || c == '-'))
            return false;
        if (c == '/' && (i + 1 == len || key[i + 1] == '/'))
            return false;
    }
    return true;
}
