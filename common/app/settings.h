/*
 * settings.h - every environment variable of both services, in one
 * declarative table (settings.c), parsed once at start-up and then passed
 * around const. `--help` prints the table.
 */
#ifndef APP_SETTINGS_H
#define APP_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

enum settings_scope {
    SCOPE_CREATOR = 1 << 0,
    SCOPE_WORKER = 1 << 1,
    SCOPE_BOTH = SCOPE_CREATOR | SCOPE_WORKER,
};

struct settings {
    /* serving */
    int64_t port;
    char *bind_address;
    char *log_level;
    char *project_id;
    int64_t max_body_bytes;
    int64_t shutdown_grace_ms;
    int64_t thread_stack_kb;
    int64_t max_connections;

    /* runtime selection */
    char *backend; /* local | gcp */
    char *store;   /* auto | sqlite | firestore */
    char *queue;   /* auto | local | cloudtasks */
    char *blob;    /* auto | fs | gcs */
    char *data_dir;
    char *sqlite_path; /* derived from data_dir when unset */
    char *queue_config;

    /* URLs */
    char *public_url; /* creator's external base URL */
    char *worker_url; /* push target of the tasks */

    /* batch limits */
    int64_t max_images;
    int64_t fanout_unit;
    int64_t enqueue_concurrency;
    int64_t batch_shards;
    bool allow_insecure_urls;

    /* worker */
    bool dispatcher;
    double dispatcher_duplicate_rate;
    int64_t item_lease_s;
    int64_t provider_timeout_ms;
    int64_t fetch_max_bytes;
    int64_t output_max_bytes;

    /* push authentication */
    char *oidc_audience;
    char *oidc_issuers;
    char *oidc_jwks_url;
    char *oidc_service_account;
    char *local_key_path;

    /* Google Cloud (BACKEND=gcp) */
    char *firestore_emulator_host;
    char *firestore_base_url;
    char *firestore_database;
    char *cloud_tasks_base_url;
    char *cloud_tasks_location;
    char *cloud_tasks_queue;
    char *gcs_bucket;
    char *storage_base_url;
    char *signed_url_host;
    int64_t signed_url_ttl_s;
    char *credentials_file;
    char *metadata_base;
    char *oauth_token_url;
    char *iam_base_url;
    bool gcp_no_auth;

    /* providers */
    char *gemini_api_key;
    char *gemini_base_url;
    char *gemini_model;
    char *runway_api_key;
    char *runway_base_url;
    char *runway_model;
    char *pixverse_api_key;
    char *pixverse_base_url;
    char *pixverse_model;
    char *provider_fallbacks;
    int64_t breaker_failures;
    int64_t breaker_open_ms;
    char *prices;
    int64_t poll_initial_ms;
    int64_t poll_max_ms;
    int64_t poll_deadline_s;
    int64_t reconcile_after_s;
    char *webhook_secret;
    char *auth;
    int64_t rate_batches_per_min;
    int64_t rate_images_per_min;
};

/*
 * Loads the variables of `scope` from the environment into s, then derives
 * the values left unset (sqlite_path, public_url...). On error returns
 * ST_INVALID with a message naming the variable and its value.
 */
enum status settings_load(struct settings *s, unsigned scope, struct error *err);

/* Same, with an injectable lookup (tests). */
enum status settings_load_from(struct settings *s, unsigned scope,
                               const char *(*get)(const char *name, void *ud), void *ud,
                               struct error *err);

void settings_release(struct settings *s);

/* Prints the variables of scope as --help text. */
void settings_print_help(FILE *out, const char *program, const char *summary, unsigned scope);

#endif
