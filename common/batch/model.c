#include "batch/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/util.h"

static const char *batch_names[] = {
    [BATCH_CREATING] = "creating",   [BATCH_PROCESSING] = "processing",
    [BATCH_COMPLETED] = "completed", [BATCH_COMPLETED_WITH_FAILURES] = "completed_with_failures",
    [BATCH_CANCELLED] = "cancelled", [BATCH_FAILED] = "failed",
};

static const char *item_names[] = {
    [ITEM_PENDING] = "pending", [ITEM_PROCESSING] = "processing",
    [ITEM_POLLING] = "polling", [ITEM_COMPLETED] = "completed",
    [ITEM_FAILED] = "failed",   [ITEM_CANCELLED] = "cancelled",
};

const char *batch_status_name(enum batch_status s)
{
    return (size_t)s < ARRAY_SIZE(batch_names) ? batch_names[s] : "unknown";
}

bool batch_status_parse(const char *s, enum batch_status *out)
{
    size_t i;

    for (i = 0; s && i < ARRAY_SIZE(batch_names); i++) {
        if (strcmp(s, batch_names[i]) == 0) {
            *out = (enum batch_status)i;
            return true;
        }
    }
    return false;
}

bool batch_status_is_terminal(enum batch_status s)
{
    return s == BATCH_COMPLETED || s == BATCH_COMPLETED_WITH_FAILURES || s == BATCH_CANCELLED ||
           s == BATCH_FAILED;
}

const char *item_status_name(enum item_status s)
{
    return (size_t)s < ARRAY_SIZE(item_names) ? item_names[s] : "unknown";
}

bool item_status_parse(const char *s, enum item_status *out)
{
    size_t i;

    for (i = 0; s && i < ARRAY_SIZE(item_names); i++) {
        if (strcmp(s, item_names[i]) == 0) {
            *out = (enum item_status)i;
            return true;
        }
    }
    return false;
}

bool item_status_is_terminal(enum item_status s)
{
    return s == ITEM_COMPLETED || s == ITEM_FAILED || s == ITEM_CANCELLED;
}

void batch_init(struct batch *b)
{
    memset(b, 0, sizeof(*b));
}

void batch_release(struct batch *b)
{
    json_decref(b->options);
    free(b->webhook_url);
    batch_init(b);
}

void item_init(struct item *it)
{
    memset(it, 0, sizeof(*it));
}

void item_release(struct item *it)
{
    free(it->url);
    json_decref(it->metadata);
    free(it->error.message);
    item_init(it);
}

void item_copy(struct item *dst, const struct item *src)
{
    *dst = *src;
    dst->url = xstrdup(src->url);
    dst->metadata = src->metadata ? json_deep_copy(src->metadata) : NULL;
    dst->error.message = xstrdup(src->error.message);
}

void batch_copy(struct batch *dst, const struct batch *src)
{
    *dst = *src;
    dst->options = src->options ? json_deep_copy(src->options) : NULL;
    dst->webhook_url = xstrdup(src->webhook_url);
}

void item_id_for_index(const char *batch_id, int64_t index, char out[ITEM_ID_MAX])
{
    char key[BATCH_ID_MAX + 32], hex[65];

    snprintf(key, sizeof(key), "%s/%lld", batch_id, (long long)index);
    sha256_hex(key, strlen(key), hex);
    snprintf(out, ITEM_ID_MAX, "%.4s-%05lld", hex, (long long)index);
}

int item_shard(const char *item_id, int shards)
{
    uint8_t d[32];
    uint32_t v;

    if (shards <= 1)
        return 0;
    sha256(item_id, strlen(item_id), d);
    v = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    return (int)(v % (uint32_t)shards);
}
