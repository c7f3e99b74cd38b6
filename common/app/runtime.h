/*
 * runtime.h - builds the adapters both binaries need from the settings:
 * the embedded runtime (SQLite store, local queue, file blobs) or Google
 * Cloud (Firestore, Cloud Tasks, Cloud Storage), each chosen on its own
 * (STORE, QUEUE, BLOB) or all at once (BACKEND).
 */
#ifndef APP_RUNTIME_H
#define APP_RUNTIME_H

#include "app/settings.h"
#include "batch/batch.h"
#include "blob/blob.h"
#include "http/client.h"
#include "queue/queue.h"
#include "queue/queue_config.h"
#include "store/store.h"

struct gcp_auth;

struct runtime {
    struct http_client *client; /* shared outbound client */
    struct gcp_auth *auth;      /* Google tokens, when a Google adapter is in use */
    char project[128];
    struct queue_config queue_config;
    struct store *store;
    struct queue *queue;
    struct blob *blob;
    struct batch_config batch_config;
};

/* Opens everything; on failure closes what was opened and fills err. */
enum status runtime_open(const struct settings *s, struct runtime *rt, struct error *err);
void runtime_close(struct runtime *rt);

/* Which adapter a setting resolves to ("auto" follows BACKEND). */
const char *runtime_choice(const struct settings *s, const char *value, const char *local,
                           const char *gcp);

#endif
