#include "app/runtime.h"

#include <stdio.h>
#include <string.h>

#include "blob/fs_blob.h"
#include "blob/gcs_blob.h"
#include "gcp/auth.h"
#include "queue/cloudtasks_queue.h"
#include "store/firestore_store.h"
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
    bc->poll_initial_ms = s->poll_initial_ms;
    bc->poll_max_ms = s->poll_max_ms;
    bc->poll_deadline_s = s->poll_deadline_s;
    bc->reconcile_after_s = s->reconcile_after_s;
    bc->output_max_bytes = s->output_max_bytes;
}

/* Tokens and the project id, for whichever Google adapters are in use. */
static enum status open_gcp(const struct settings *s, struct runtime *rt, struct error *err)
{
    struct gcp_auth_options ao;

    memset(&ao, 0, sizeof(ao));
    ao.metadata_base = s->metadata_base;
    ao.credentials_file = s->credentials_file;
    ao.token_url = s->oauth_token_url;
    ao.iam_base = s->iam_base_url;
    ao.none = s->gcp_no_auth;
    rt->auth = gcp_auth_new(&ao, rt->client, err);
    if (!rt->auth)
        return err->status ? err->status : ST_INVALID;
    if (s->project_id)
        str_copy(rt->project, sizeof(rt->project), s->project_id);
    else if (gcp_auth_project(rt->auth, rt->project, sizeof(rt->project), err) != ST_OK ||
             !rt->project[0])
        return error_set(err, ST_INVALID, "invalid_config",
                         "missing GOOGLE_CLOUD_PROJECT and no project from the credentials");
    return ST_OK;
}

static struct store *open_firestore(const struct settings *s, struct runtime *rt, struct error *err)
{
    struct firestore_store_options o;

    memset(&o, 0, sizeof(o));
    o.client_options.emulator_host = s->firestore_emulator_host;
    o.client_options.base_url = s->firestore_base_url;
    o.client_options.project_id = rt->project;
    o.client_options.database_id = s->firestore_database;
    o.client_options.auth = s->firestore_emulator_host ? NULL : rt->auth;
    o.client_options.http = rt->client;
    return store_firestore_open(&o, err);
}

static struct queue *open_cloudtasks(const struct settings *s, struct runtime *rt,
                                     struct error *err)
{
    struct cloudtasks_options o;

    if (!s->oidc_service_account) {
        error_set(err, ST_INVALID, "invalid_config",
                  "missing OIDC_SERVICE_ACCOUNT: Cloud Tasks signs the pushes as this account");
        return NULL;
    }
    memset(&o, 0, sizeof(o));
    o.base_url = s->cloud_tasks_base_url;
    o.project = rt->project;
    o.location = s->cloud_tasks_location ? s->cloud_tasks_location : rt->queue_config.location;
    o.queue = s->cloud_tasks_queue ? s->cloud_tasks_queue : rt->queue_config.name;
    o.target_url = s->worker_url;
    o.service_account = s->oidc_service_account;
    o.audience = s->oidc_audience;
    o.dispatch_deadline_s = rt->queue_config.dispatch_deadline_s;
    o.auth = rt->auth;
    o.client = rt->client;
    o.max_in_flight = (int)s->enqueue_concurrency;
    return queue_cloudtasks_open(&o, err);
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
    if ((strcmp(store, "firestore") == 0 || strcmp(queue, "cloudtasks") == 0 ||
         strcmp(blob, "gcs") == 0) &&
        open_gcp(s, rt, err) != ST_OK)
        goto fail;
    if (strcmp(store, "sqlite") == 0)
        rt->store = store_sqlite_open(s->sqlite_path, err);
    else
        rt->store = open_firestore(s, rt, err);
    if (!rt->store)
        goto fail;
    if (strcmp(queue, "local") == 0)
        rt->queue = queue_local_open(s->sqlite_path, &rt->queue_config, err);
    else
        rt->queue = open_cloudtasks(s, rt, err);
    if (!rt->queue)
        goto fail;
    if (strcmp(blob, "fs") == 0) {
        snprintf(path, sizeof(path), "%s/blobs", s->data_dir);
        snprintf(base, sizeof(base), "%s/files", s->public_url);
        rt->blob = blob_fs_open(path, base, err);
    } else if (!s->gcs_bucket) {
        error_set(err, ST_INVALID, "invalid_config", "missing GCS_BUCKET: BLOB=gcs needs a bucket");
    } else {
        struct gcs_options go;

        memset(&go, 0, sizeof(go));
        go.bucket = s->gcs_bucket;
        go.api_base = s->storage_base_url;
        go.signed_url_base = s->signed_url_host;
        go.url_lifetime_s = s->signed_url_ttl_s;
        go.auth = rt->auth;
        go.client = rt->client;
        rt->blob = blob_gcs_open(&go, err);
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
    if (rt->auth)
        gcp_auth_free(rt->auth);
    if (rt->client)
        http_client_free(rt->client);
    memset(rt, 0, sizeof(*rt));
}
