#include "app/settings.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/util.h"

#define F(field) offsetof(struct settings, field)
#define C        SCOPE_CREATOR
#define W        SCOPE_WORKER
#define B        SCOPE_BOTH

/* clang-format off */
static const struct config_var table[] = {
    {"PORT", CFG_INT, "8080", 1, 65535, NULL, "TCP port to listen on (Cloud Run sets it)", F(port), 0, B},
    {"BIND_ADDRESS", CFG_STRING, "0.0.0.0", 0, 0, NULL, "address to listen on", F(bind_address), 0, B},
    {"LOG_LEVEL", CFG_ENUM, "INFO", 0, 0, "DEBUG|INFO|NOTICE|WARNING|ERROR", "minimum log severity", F(log_level), 0, B},
    {"GOOGLE_CLOUD_PROJECT", CFG_STRING, NULL, 0, 0, NULL, "project id (trace names, Google APIs)", F(project_id), 0, B},
    {"MAX_BODY_BYTES", CFG_INT, "8388608", 1024, 33554432, NULL, "largest request body accepted (413 beyond)", F(max_body_bytes), 0, B},
    {"SHUTDOWN_GRACE_MS", CFG_INT, "8000", 0, 60000, NULL, "time in-flight requests get to finish after SIGTERM", F(shutdown_grace_ms), 0, B},
    {"THREAD_STACK_KB", CFG_INT, "256", 64, 8192, NULL, "stack size of each connection thread", F(thread_stack_kb), 0, B},
    {"MAX_CONNECTIONS", CFG_INT, "4096", 16, 65536, NULL, "concurrent connections accepted", F(max_connections), 0, B},

    {"BACKEND", CFG_ENUM, "local", 0, 0, "local|gcp", "runtime: embedded (SQLite, local queue, files) or Google Cloud", F(backend), 0, B},
    {"STORE", CFG_ENUM, "auto", 0, 0, "auto|sqlite|firestore", "store adapter (auto follows BACKEND)", F(store), 0, B},
    {"QUEUE", CFG_ENUM, "auto", 0, 0, "auto|local|cloudtasks", "queue adapter (auto follows BACKEND)", F(queue), 0, B},
    {"BLOB", CFG_ENUM, "auto", 0, 0, "auto|fs|gcs", "blob adapter (auto follows BACKEND)", F(blob), 0, B},
    {"DATA_DIR", CFG_STRING, "./data", 0, 0, NULL, "directory of the embedded runtime (database, blobs, keys)", F(data_dir), 0, B},
    {"SQLITE_PATH", CFG_STRING, NULL, 0, 0, NULL, "SQLite database file (default DATA_DIR/batch.db)", F(sqlite_path), 0, B},
    {"QUEUE_CONFIG", CFG_STRING, "deploy/queue.json", 0, 0, NULL, "queue definition shared with Terraform", F(queue_config), 0, B},

    {"PUBLIC_URL", CFG_STRING, NULL, 0, 0, NULL, "creator's external base URL (default http://127.0.0.1:PORT)", F(public_url), 0, B},
    {"WORKER_URL", CFG_STRING, "http://127.0.0.1:8081/api/batch/worker", 0, 0, NULL, "URL the tasks are pushed to", F(worker_url), 0, B},

    {"AUTH", CFG_ENUM, "off", 0, 0, "off|apikey", "partner authentication: apikey (production) or off (userId from the request)", F(auth), 0, C},
    {"RATE_LIMIT_BATCHES_PER_MIN", CFG_INT, "60", 0, 1000000, NULL, "batches a user may create per minute (0: unlimited)", F(rate_batches_per_min), 0, C},
    {"RATE_LIMIT_IMAGES_PER_MIN", CFG_INT, "100000", 0, 100000000, NULL, "images a user may submit per minute (0: unlimited)", F(rate_images_per_min), 0, C},
    {"MAX_IMAGES_PER_BATCH", CFG_INT, "10000", 1, 10000, NULL, "largest batch accepted", F(max_images), 0, C},
    {"FANOUT_UNIT", CFG_INT, "500", 10, 10000, NULL, "items per fan-out task; smaller batches enqueue items directly", F(fanout_unit), 0, B},
    {"ENQUEUE_CONCURRENCY", CFG_INT, "32", 1, 500, NULL, "task creations in flight at once", F(enqueue_concurrency), 0, B},
    {"BATCH_SHARDS", CFG_INT, "16", 1, 64, NULL, "counter shards per batch", F(batch_shards), 0, C},
    {"ALLOW_INSECURE_URLS", CFG_BOOL, "false", 0, 0, NULL, "accept http and loopback/private image URLs (local demo only)", F(allow_insecure_urls), 0, B},

    {"DISPATCHER", CFG_BOOL, "true", 0, 0, NULL, "run the local queue's dispatcher in this process (QUEUE=local)", F(dispatcher), 0, W},
    {"DISPATCHER_DUPLICATE_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fault injection: fraction of pushes the local dispatcher delivers twice (tests)", F(dispatcher_duplicate_rate), 0, W},
    {"ITEM_LEASE_S", CFG_INT, "180", 1, 3600, NULL, "how long an attempt holds an item before another may take it", F(item_lease_s), 0, W},
    {"PROVIDER_TIMEOUT_MS", CFG_INT, "120000", 100, 1800000, NULL, "timeout of one provider call", F(provider_timeout_ms), 0, W},
    {"FETCH_MAX_BYTES", CFG_INT, "20971520", 1024, 104857600, NULL, "largest partner image fetched", F(fetch_max_bytes), 0, W},
    {"OUTPUT_MAX_BYTES", CFG_INT, "104857600", 1024, 1073741824, NULL, "largest provider output accepted", F(output_max_bytes), 0, W},

    {"OIDC_AUDIENCE", CFG_STRING, NULL, 0, 0, NULL, "audience of push tokens (default WORKER_URL)", F(oidc_audience), 0, B},
    {"OIDC_ISSUERS", CFG_STRING, NULL, 0, 0, NULL, "accepted token issuers, comma-separated (default Google's; local issuer in the local runtime)", F(oidc_issuers), 0, W},
    {"OIDC_JWKS_URL", CFG_STRING, "https://www.googleapis.com/oauth2/v3/certs", 0, 0, NULL, "keys of the token issuer", F(oidc_jwks_url), 0, W},
    {"OIDC_SERVICE_ACCOUNT", CFG_STRING, NULL, 0, 0, NULL, "email the push tokens must carry", F(oidc_service_account), 0, B},
    {"LOCAL_KEY_PATH", CFG_STRING, NULL, 0, 0, NULL, "RSA key of the local dispatcher's tokens (default DATA_DIR/keys/dispatcher.pem)", F(local_key_path), 0, W},

    {"FIRESTORE_EMULATOR_HOST", CFG_STRING, NULL, 0, 0, NULL, "host:port of a Firestore emulator (plain HTTP, no token)", F(firestore_emulator_host), 0, B},
    {"FIRESTORE_BASE_URL", CFG_STRING, "https://firestore.googleapis.com", 0, 0, NULL, "Firestore REST endpoint", F(firestore_base_url), 0, B},
    {"FIRESTORE_DATABASE", CFG_STRING, "(default)", 0, 0, NULL, "Firestore database id", F(firestore_database), 0, B},
    {"CLOUD_TASKS_BASE_URL", CFG_STRING, "https://cloudtasks.googleapis.com", 0, 0, NULL, "Cloud Tasks REST endpoint", F(cloud_tasks_base_url), 0, B},
    {"CLOUD_TASKS_LOCATION", CFG_STRING, NULL, 0, 0, NULL, "queue location (default: the queue definition's)", F(cloud_tasks_location), 0, B},
    {"CLOUD_TASKS_QUEUE", CFG_STRING, NULL, 0, 0, NULL, "queue id (default: the queue definition's name)", F(cloud_tasks_queue), 0, B},
    {"GCS_BUCKET", CFG_STRING, NULL, 0, 0, NULL, "Cloud Storage bucket of the results (BLOB=gcs)", F(gcs_bucket), 0, B},
    {"STORAGE_BASE_URL", CFG_STRING, "https://storage.googleapis.com", 0, 0, NULL, "Cloud Storage JSON API endpoint", F(storage_base_url), 0, B},
    {"SIGNED_URL_HOST", CFG_STRING, "https://storage.googleapis.com", 0, 0, NULL, "host of the V4 signed result URLs", F(signed_url_host), 0, B},
    {"SIGNED_URL_TTL_S", CFG_INT, "604800", 60, 604800, NULL, "lifetime of signed result URLs (7 days at most)", F(signed_url_ttl_s), 0, B},
    {"GOOGLE_APPLICATION_CREDENTIALS", CFG_STRING, NULL, 0, 0, NULL, "service-account JSON key (default: the metadata server)", F(credentials_file), 0, B},
    {"METADATA_BASE_URL", CFG_STRING, "http://metadata.google.internal/computeMetadata/v1", 0, 0, NULL, "metadata server (Cloud Run)", F(metadata_base), 0, B},
    {"OAUTH_TOKEN_URL", CFG_STRING, NULL, 0, 0, NULL, "token endpoint override for the key file's JWT grant", F(oauth_token_url), 0, B},
    {"IAM_CREDENTIALS_BASE_URL", CFG_STRING, "https://iamcredentials.googleapis.com", 0, 0, NULL, "IAM Credentials endpoint (signBlob)", F(iam_base_url), 0, B},
    {"GCP_NO_AUTH", CFG_BOOL, "false", 0, 0, NULL, "send no Google token (emulators and fakes only)", F(gcp_no_auth), 0, B},
    {"GEMINI_API_KEY", CFG_STRING, NULL, 0, 0, NULL, "Gemini API key (virtual-staging)", F(gemini_api_key), CFG_SECRET, W},
    {"GEMINI_BASE_URL", CFG_STRING, "https://generativelanguage.googleapis.com", 0, 0, NULL, "Gemini API base URL", F(gemini_base_url), 0, W},
    {"GEMINI_MODEL", CFG_STRING, "gemini-3.1-flash-image", 0, 0, NULL, "Gemini image model id", F(gemini_model), 0, W},
    {"RUNWAY_API_KEY", CFG_STRING, NULL, 0, 0, NULL, "Runway API key (video-runway)", F(runway_api_key), CFG_SECRET, W},
    {"RUNWAY_BASE_URL", CFG_STRING, "https://api.dev.runwayml.com", 0, 0, NULL, "Runway API base URL", F(runway_base_url), 0, W},
    {"RUNWAY_MODEL", CFG_STRING, "gen4_turbo", 0, 0, NULL, "Runway model when a batch names none", F(runway_model), 0, W},
    {"PIXVERSE_API_KEY", CFG_STRING, NULL, 0, 0, NULL, "PixVerse API key (video-pixverse)", F(pixverse_api_key), CFG_SECRET, W},
    {"PIXVERSE_BASE_URL", CFG_STRING, "https://app-api.pixverse.ai", 0, 0, NULL, "PixVerse API base URL", F(pixverse_base_url), 0, W},
    {"PIXVERSE_MODEL", CFG_STRING, "v5", 0, 0, NULL, "PixVerse model when a batch names none", F(pixverse_model), 0, W},
    {"PROVIDER_FALLBACKS", CFG_STRING, NULL, 0, 0, NULL, "fallback chains, e.g. \"video-runway=pixverse\" (type=provider[,provider];...)", F(provider_fallbacks), 0, W},
    {"BREAKER_FAILURES", CFG_INT, "5", 1, 1000, NULL, "consecutive transient failures that open a provider's circuit", F(breaker_failures), 0, W},
    {"BREAKER_OPEN_MS", CFG_INT, "30000", 100, 3600000, NULL, "how long an open circuit refuses calls before a probe", F(breaker_open_ms), 0, W},
    {"PRICES", CFG_STRING, NULL, 0, 0, NULL, "price overrides as JSON, e.g. {\"runway:gen4_turbo:per_second\": 0.05}", F(prices), 0, B},
    {"POLL_INITIAL_MS", CFG_INT, "5000", 100, 600000, NULL, "first poll of a video job after this", F(poll_initial_ms), 0, W},
    {"POLL_MAX_MS", CFG_INT, "30000", 100, 600000, NULL, "polls slow down to this interval", F(poll_max_ms), 0, W},
    {"RECONCILE_AFTER_S", CFG_INT, "1800", 0, 86400, NULL, "a processing batch pushes its stuck items again this often (0: never)", F(reconcile_after_s), 0, B},
    {"WEBHOOK_SECRET", CFG_STRING, NULL, 0, 0, NULL, "Standard Webhooks signing secret (whsec_<base64>); unset: webhooks go unsigned", F(webhook_secret), CFG_SECRET, W},
    {"POLL_DEADLINE_S", CFG_INT, "1200", 10, 86400, NULL, "a video job still running after this fails as timed out", F(poll_deadline_s), 0, W},
};
/* clang-format on */

static const char *env_get(const char *name, void *ud)
{
    UNUSED(ud);
    return getenv(name);
}

static void derive(struct settings *s)
{
    char path[4096];

    if (!s->sqlite_path) {
        snprintf(path, sizeof(path), "%s/batch.db", s->data_dir);
        s->sqlite_path = xstrdup(path);
    }
    if (!s->local_key_path) {
        snprintf(path, sizeof(path), "%s/keys/dispatcher.pem", s->data_dir);
        s->local_key_path = xstrdup(path);
    }
    if (!s->public_url) {
        snprintf(path, sizeof(path), "http://127.0.0.1:%lld", (long long)s->port);
        s->public_url = xstrdup(path);
    }
    if (!s->oidc_audience)
        s->oidc_audience = xstrdup(s->worker_url);
}

enum status settings_load_from(struct settings *s, unsigned scope,
                               const char *(*get)(const char *name, void *ud), void *ud,
                               struct error *err)
{
    enum status st;

    memset(s, 0, sizeof(*s));
    /* Every variable is loaded, so derived values are complete in both binaries; the
     * scope only decides what --help shows. */
    st = config_load(table, ARRAY_SIZE(table), scope | SCOPE_BOTH, s, get, ud, err);
    if (st != ST_OK)
        return st;
    derive(s);
    return ST_OK;
}

enum status settings_load(struct settings *s, unsigned scope, struct error *err)
{
    return settings_load_from(s, scope, env_get, NULL, err);
}

void settings_release(struct settings *s)
{
    config_release(table, ARRAY_SIZE(table), s);
    memset(s, 0, sizeof(*s));
}

void settings_print_help(FILE *out, const char *program, const char *summary, unsigned scope)
{
    config_print_help(out, program, summary, table, ARRAY_SIZE(table), scope);
}
