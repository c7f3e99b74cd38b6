#include "app/runtime.h"

#include <stdio.h>
#include <string.h>

#include "blob/fs_blob.h"
#include "core/log.h"
#include "core/util.h"
#include "queue/local_queue.h"
#include "store/sqlite_store.h"

const char *runtime_choice(const struct settings *s, const char *value, const char *local,
                           const char *gcp)
{
    if (strcmp(value, "auto") != 0)
        return value;
    return strcmp(s->backend, "gcp") == 0 ? gcp : local;
}

static void batch_config_from(const struct settings *s, const struct queue_config *qc,
                              struct batch_config *bc)
{
    memset(bc, 0, sizeof(*bc));
    bc->max_images = s->max_images;
    bc->allow_insecure_urls = s->allow_insecure_urls;
    bc->fanout_unit = s->fanout_unit;
    bc->shards = (int)s->batch_shards;
    bc->lease_s = s->item_lease_s;
    bc->retry = qc->retry;
    bc->default_item_ms = 30000;
    bc->poll_initial_ms = 5000;
    bc->poll_max_ms = 30000;
    bc->poll_deadline_s = 1200;
    bc->output_max_bytes = s->output_max_bytes;
}

enum status runtime_open(const struct settings *s, struct runtime *rt, struct error *err)
{
    struct http_client_options copts;
    const char *store, *queue, *blob;
    char path[4096], base[4096];

    memset(rt, 0, sizeof(*rt));
    if (queue_config_load(s->queue_config, &rt->queue_config, err) != ST_OK)
        return ST_INVALID;
    batch_config_from(s, &rt->queue_config, &rt->batch_config);
    memset(&copts, 0, sizeof(copts));
    rt->client = http_client_new(&copts);

    store = runtime_choice(s, s->store, "sqlite", "firestore");
    queue = runtime_choice(s, s->queue, "local", "cloudtasks");
    blob = runtime_choice(s, s->blob, "fs", "gcs");
    if (strcmp(store, "sqlite") == 0) {
        rt->store = store_sqlite_open(s->sqlite_path, err);
    } else {
        error_set(err, ST_INVALID, "invalid_config", "STORE=%s is not available yet", store);
    }
    if (!rt->store)
        goto fail;
    if (strcmp(queue, "local") == 0) {
        rt->queue = queue_local_open(s->sqlite_path, &rt->queue_config, err);
    } else {
        error_set(err, ST_INVALID, "invalid_config", "QUEUE=%s is not available yet", queue);
    }
    if (!rt->queue)
        goto fail;
    if (strcmp(blob, "fs") == 0) {
        snprintf(path, sizeof(path), "%s/blobs", s->data_dir);
        snprintf(base, sizeof(base), "%s/files", s->public_url);
        rt->blob = blob_fs_open(path, base, err);
    } else {
        error_set(err, ST_INVALID, "invalid_config", "BLOB=%s is not available yet", blob);
    }
    if (!rt->blob)
        goto fail;
    log_write(LOG_INFO, json_pack("{s:s, s:s, s:s}", "store", store, "queue", queue, "blob", blob),
              "runtime: store %s, queue %s, blob %s", store, queue, blob);
    return ST_OK;
fail:
    runtime_close(rt);
    return err ? err->status : ST_INVALID;
}

void runtime_close(struct runtime *rt)
{
    blob_close(rt->blob);
    queue_close(rt->queue);
    store_close(rt->store);
    if (rt->client)
        http_client_free(rt->client);
    memset(rt, 0, sizeof(*rt));
}
