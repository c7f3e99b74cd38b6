/*
 * model.h - the domain's data: batches, items, counters and their state
 * machines (DESIGN.md sections 4 and 5).
 *
 * Batch: creating -> processing -> completed | completed_with_failures |
 *        cancelled | failed. Retrying failed items moves a finished batch
 *        back to processing with generation + 1.
 * Item:  pending -> processing -> (polling ->)* completed | failed | cancelled.
 *
 * Times are µs since the epoch (0 = unset). Strings in fixed arrays are
 * bounded identifiers; free-form text is heap-allocated and owned by the
 * struct (released by the _release functions).
 */
#ifndef BATCH_MODEL_H
#define BATCH_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define BATCH_ID_MAX 64
#define USER_ID_MAX  128
#define ITEM_ID_MAX  32
#define TYPE_MAX     32
#define PROVIDER_MAX 32
#define JOB_ID_MAX   128
#define IDEM_KEY_MAX 128
#define CODE_MAX     48
#define CTYPE_MAX    64
#define BLOB_KEY_MAX 256
#define MAX_SHARDS   64

enum batch_status {
    BATCH_CREATING = 0,
    BATCH_PROCESSING,
    BATCH_COMPLETED,
    BATCH_COMPLETED_WITH_FAILURES,
    BATCH_CANCELLED,
    BATCH_FAILED,
};

enum item_status {
    ITEM_PENDING = 0,
    ITEM_PROCESSING,
    ITEM_POLLING,
    ITEM_COMPLETED,
    ITEM_FAILED,
    ITEM_CANCELLED,
};

const char *batch_status_name(enum batch_status s);
bool batch_status_parse(const char *s, enum batch_status *out);
bool batch_status_is_terminal(enum batch_status s);

const char *item_status_name(enum item_status s);
bool item_status_parse(const char *s, enum item_status *out);
bool item_status_is_terminal(enum item_status s);

struct batch {
    char id[BATCH_ID_MAX];
    char user_id[USER_ID_MAX];
    char type[TYPE_MAX]; /* virtual-staging | video-runway | video-pixverse */
    char priority[16];   /* high | normal | low */
    enum batch_status status;
    int64_t total;
    json_t *options;   /* owned, may be NULL: prompt, duration, model, ... */
    char *webhook_url; /* owned, may be NULL */
    char idempotency_key[IDEM_KEY_MAX];
    char request_hash[65]; /* sha256 hex of the create request, with the key */
    double cost_estimate;  /* USD */
    int64_t created_at, updated_at, completed_at;
    int64_t generation; /* starts at 1 */
    int shards;         /* counter shards, 1..MAX_SHARDS */
};

struct item_result {
    char key[BLOB_KEY_MAX]; /* blob key of the stored output */
    char content_type[CTYPE_MAX];
    int64_t bytes;
    char provider[PROVIDER_MAX];
    bool cached;         /* served from the result cache */
    int64_t cost_micros; /* what the provider charged, in millionths of a USD (0 when cached) */
};

struct item_error {
    char code[CODE_MAX];
    char *message; /* owned, may be NULL */
    bool retryable;
};

struct item {
    char batch_id[BATCH_ID_MAX];
    char id[ITEM_ID_MAX];
    int64_t index;
    char *url;        /* owned: the partner's image URL */
    json_t *metadata; /* owned, may be NULL */
    enum item_status status;
    int64_t attempts;   /* provider attempts in this generation */
    int64_t generation; /* equals the batch generation that last re-drove it */
    char provider[PROVIDER_MAX];
    char provider_job_id[JOB_ID_MAX];
    int64_t polls; /* polls made for the current job */
    bool has_result;
    struct item_result result;
    bool has_error;
    struct item_error error;
    int64_t lease_until; /* a worker holds the item until then (processing) */
    int64_t started_at, completed_at, duration_ms;
};

/* Per-batch counters: the sum over the batch's shards. */
struct batch_counts {
    int64_t processed; /* items in a terminal state */
    int64_t success;
    int64_t failure;
    int64_t cancelled;
    int64_t duration_ms_sum; /* over completed items */
    int64_t cost_micros;     /* actual cost of the completed items, millionths of a USD */
};

/* Zero-initialise / free owned members (safe on zeroed structs). */
void batch_init(struct batch *b);
void batch_release(struct batch *b);
void item_init(struct item *it);
void item_release(struct item *it);
/* Deep copy of src into dst (dst is initialised first). */
void item_copy(struct item *dst, const struct item *src);
void batch_copy(struct batch *dst, const struct batch *src);

/*
 * Item ids are derived from the batch id and the item's index, so anyone
 * (the fan-out task, a reconciler) can name an item without a read:
 * "<4 hex of sha256(batch/index)>-<index, 5 digits>", e.g. "9f2c-00042".
 * The hashed prefix spreads writes over the key space (gcp.md 2.11).
 */
void item_id_for_index(const char *batch_id, int64_t index, char out[ITEM_ID_MAX]);

/* Counter shard of an item: stable hash of its id modulo shards. */
int item_shard(const char *item_id, int shards);

#endif
