#include "store/firestore_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "batch/model.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "store/page_token.h"

#define LIST_LIMIT_MAX      1000
#define PUT_CHUNK_MAX       500
#define DEFAULT_CHUNK_BYTES (9u * 1024 * 1024)
#define DEFAULT_PARALLEL    4
#define PARALLEL_MAX        16
#define DEFAULT_TX_PAGE     500
#define IDEM_TTL_US         (24LL * 3600 * 1000000)
#define NAME_CAP            FIRESTORE_NAME_MAX

struct fstore {
    struct firestore *fs;
    bool own_fs;
    int chunk_writes;
    size_t chunk_bytes;
    int parallel;
    int tx_page;
    int64_t idem_ttl_us;
};

/* ---- validation ----------------------------------------------------------- */

/* A non-empty string that fits an array of cap bytes. */
static enum status check_str(const char *s, size_t cap, const char *what, struct error *err)
{
    if (!s || !*s)
        return error_set(err, ST_INVALID, NULL, "%s is empty", what);
    if (strnlen(s, cap) >= cap)
        return error_set(err, ST_INVALID, NULL, "%s is longer than %zu bytes", what, cap - 1);
    return ST_OK;
}

/* A possibly empty, NUL-terminated string that fits cap bytes. */
static enum status check_fits(const char *s, size_t cap, const char *what, struct error *err)
{
    if (s && strnlen(s, cap) >= cap)
        return error_set(err, ST_INVALID, NULL, "%s is longer than %zu bytes", what, cap - 1);
    return ST_OK;
}

/* check_str, and usable as a Firestore document id. */
static enum status check_id(const char *s, size_t cap, const char *what, struct error *err)
{
    enum status st;

    if ((st = check_str(s, cap, what, err)))
        return st;
    if (!firestore_id_valid(s))
        return error_set(err, ST_INVALID, NULL, "%s \"%s\" cannot be a firestore document id", what,
                         s);
    return ST_OK;
}

static enum status check_item_ids(const char *batch_id, const char *item_id, struct error *err)
{
    enum status s;

    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    return check_id(item_id, ITEM_ID_MAX, "item id", err);
}

/* ---- names ------------------------------------------------------------------ */

static enum status batch_name(struct fstore *st, const char *batch_id, char *out, struct error *err)
{
    return firestore_name(st->fs, out, NAME_CAP, err, "batches", batch_id, NULL);
}

static enum status item_name(struct fstore *st, const char *batch_id, const char *item_id,
                             char *out, struct error *err)
{
    return firestore_name(st->fs, out, NAME_CAP, err, "batches", batch_id, "items", item_id, NULL);
}

static enum status shard_name(struct fstore *st, const char *batch_id, int k, char *out,
                              struct error *err)
{
    char ks[16];

    str_printf(ks, sizeof(ks), "%d", k);
    return firestore_name(st->fs, out, NAME_CAP, err, "batches", batch_id, "shards", ks, NULL);
}

/*
 * The ids in an item's name ".../batches/{b}/items/{i}": ids hold no '/', so
 * they are the third-last and the last segments.
 */
static bool item_ids_from_name(const char *name, char *batch_id, char *item_id)
{
    const char *item, *items, *batch;
    size_t n;

    if (!name || !(item = strrchr(name, '/')) || item == name)
        return false;
    for (items = item - 1; items > name && items[-1] != '/'; items--)
        ;
    if (items == name || (size_t)(item - items) != 5 || strncmp(items, "items", 5) != 0)
        return false;
    for (batch = items - 1; batch > name && batch[-1] != '/'; batch--)
        ;
    n = (size_t)(items - 1 - batch);
    if (n == 0 || n >= BATCH_ID_MAX)
        return false;
    memcpy(batch_id, batch, n);
    batch_id[n] = '\0';
    return str_copy(item_id, ITEM_ID_MAX, item + 1) && item_id[0];
}

/* ---- encoding ----------------------------------------------------------------- */

static void set(json_t *fields, const char *key, json_t *value)
{
    json_object_set_new(fields, key, value);
}

/* An optional time: null when unset (0). */
static json_t *v_time_opt(int64_t t)
{
    return t ? firestore_value_timestamp(t) : firestore_value_null();
}

static json_t *v_str(const char *s)
{
    return firestore_value_string(s ? s : "");
}

/*
 * Plain JSON (may be NULL) under key as a Firestore value, or as JSON text
 * under json_key when Firestore cannot hold it.
 */
static void put_json(json_t *fields, const char *key, const char *json_key, const json_t *plain)
{
    json_t *v = NULL;
    char *text;

    if (!plain) {
        set(fields, key, firestore_value_null());
        return;
    }
    if (firestore_value_from_json(plain, &v, NULL) == ST_OK) {
        set(fields, key, v);
        return;
    }
    text = json_dump_compact(plain);
    set(fields, key, firestore_value_null());
    set(fields, json_key, firestore_value_string(text));
    free(text);
}

static json_t *batch_fields(const struct batch *b)
{
    json_t *f = json_object();

    set(f, "id", v_str(b->id));
    set(f, "userId", v_str(b->user_id));
    set(f, "type", v_str(b->type));
    set(f, "priority", v_str(b->priority));
    set(f, "status", v_str(batch_status_name(b->status)));
    set(f, "totalImages", firestore_value_int(b->total));
    put_json(f, "options", "optionsJson", b->options);
    set(f, "webhook", firestore_value_string(b->webhook_url));
    set(f, "idempotencyKey", v_str(b->idempotency_key));
    set(f, "requestHash", v_str(b->request_hash));
    set(f, "costEstimate", firestore_value_double(b->cost_estimate));
    set(f, "createdAt", firestore_value_timestamp(b->created_at));
    set(f, "updatedAt", firestore_value_timestamp(b->updated_at));
    set(f, "completedAt", v_time_opt(b->completed_at));
    set(f, "generation", firestore_value_int(b->generation));
    set(f, "shards", firestore_value_int(b->shards));
    return f;
}

static json_t *shard_fields(void)
{
    json_t *f = json_object();

    set(f, "processed", firestore_value_int(0));
    set(f, "success", firestore_value_int(0));
    set(f, "failure", firestore_value_int(0));
    set(f, "cancelled", firestore_value_int(0));
    set(f, "durationMsSum", firestore_value_int(0));
    set(f, "costMicros", firestore_value_int(0));
    return f;
}

/* A new item as put_items writes it: pending, of the batch's generation. */
static json_t *item_new_fields(const struct item *it, int64_t generation)
{
    json_t *f = json_object();

    set(f, "index", firestore_value_int(it->index));
    set(f, "url", v_str(it->url));
    put_json(f, "metadata", "metadataJson", it->metadata);
    set(f, "status", v_str(item_status_name(ITEM_PENDING)));
    set(f, "attempts", firestore_value_int(0));
    set(f, "generation", firestore_value_int(generation));
    set(f, "polls", firestore_value_int(0));
    set(f, "shard", firestore_value_int(-1));
    return f;
}

/* Every mutable field of an item (not index, url, metadata), with its counter shard. */
static json_t *item_state_write(const char *name, const struct item *it, int shard)
{
    json_t *f = json_object(), *m;

    set(f, "status", v_str(item_status_name(it->status)));
    set(f, "attempts", firestore_value_int(it->attempts));
    set(f, "generation", firestore_value_int(it->generation));
    set(f, "provider", v_str(it->provider));
    set(f, "providerJobId", v_str(it->provider_job_id));
    set(f, "polls", firestore_value_int(it->polls));
    if (it->has_result) {
        m = json_object();
        set(m, "key", v_str(it->result.key));
        set(m, "contentType", v_str(it->result.content_type));
        set(m, "bytes", firestore_value_int(it->result.bytes));
        set(m, "provider", v_str(it->result.provider));
        set(m, "cached", firestore_value_bool(it->result.cached));
        set(m, "costMicros", firestore_value_int(it->result.cost_micros));
        set(f, "result", firestore_value_map(m));
    } else {
        set(f, "result", firestore_value_null());
    }
    if (it->has_error) {
        m = json_object();
        set(m, "code", v_str(it->error.code));
        set(m, "message", firestore_value_string(it->error.message));
        set(m, "retryable", firestore_value_bool(it->error.retryable));
        set(f, "error", firestore_value_map(m));
    } else {
        set(f, "error", firestore_value_null());
    }
    set(f, "leaseUntil", v_time_opt(it->lease_until));
    set(f, "startedAt", v_time_opt(it->started_at));
    set(f, "completedAt", v_time_opt(it->completed_at));
    set(f, "durationMs", firestore_value_int(it->duration_ms));
    set(f, "shard", firestore_value_int(shard));
    return firestore_write_update(name, f);
}

/* ---- decoding ------------------------------------------------------------------- */

/*
 * Field readers over a fields object (of a document or a map; may be NULL).
 * Absent and null fields read as zero values; a value of another type, or a
 * string that does not fit, makes them return false.
 */
static bool is_unset(const json_t *v)
{
    return !v || firestore_value_kind(v) == FS_NULL;
}

static bool d_str(const json_t *fields, const char *key, char *dst, size_t cap)
{
    const json_t *v = json_object_get(fields, key);
    const char *s;

    dst[0] = '\0';
    if (is_unset(v))
        return true;
    if (!firestore_value_get_string(v, &s))
        return false;
    return str_copy(dst, cap, s);
}

static bool d_dup(const json_t *fields, const char *key, char **out)
{
    const json_t *v = json_object_get(fields, key);
    const char *s;

    *out = NULL;
    if (is_unset(v))
        return true;
    if (!firestore_value_get_string(v, &s))
        return false;
    *out = xstrdup(s);
    return true;
}

static bool d_int(const json_t *fields, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(fields, key);

    *out = 0;
    return is_unset(v) || firestore_value_get_int(v, out);
}

static bool d_double(const json_t *fields, const char *key, double *out)
{
    const json_t *v = json_object_get(fields, key);

    *out = 0;
    return is_unset(v) || firestore_value_get_double(v, out);
}

static bool d_bool(const json_t *fields, const char *key, bool *out)
{
    const json_t *v = json_object_get(fields, key);

    *out = false;
    return is_unset(v) || firestore_value_get_bool(v, out);
}

static bool d_time(const json_t *fields, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(fields, key);

    *out = 0;
    return is_unset(v) || firestore_value_get_timestamp(v, out);
}

/* JSON stored under key (a Firestore value) or json_key (JSON text); NULL when neither. */
static bool d_json(const json_t *fields, const char *key, const char *json_key, json_t **out)
{
    const json_t *v = json_object_get(fields, key), *t = json_object_get(fields, json_key);
    const char *text;

    *out = NULL;
    if (!is_unset(t)) {
        if (!firestore_value_get_string(t, &text))
            return false;
        *out = json_parse(text, strlen(text), NULL);
        return *out != NULL;
    }
    if (is_unset(v))
        return true;
    return firestore_value_to_json(v, out, NULL) == ST_OK;
}

static enum status corrupt(struct error *err, const char *what, const char *id, const char *field)
{
    return error_set(err, ST_INTERNAL, "store_corrupt", "stored %s %s has a malformed %s", what,
                     id ? id : "?", field);
}

/* Reads a batch document into b (released first; released again on error). */
static enum status decode_batch(const json_t *doc, struct batch *b, struct error *err)
{
    const json_t *f = firestore_doc_fields(doc);
    const char *id = firestore_doc_id(doc), *bad = NULL;
    char status[32];
    int64_t shards = 0;

    batch_release(b);
    if (!id || !str_copy(b->id, sizeof(b->id), id))
        bad = "id";
    else if (!d_str(f, "userId", b->user_id, sizeof(b->user_id)))
        bad = "userId";
    else if (!d_str(f, "type", b->type, sizeof(b->type)))
        bad = "type";
    else if (!d_str(f, "priority", b->priority, sizeof(b->priority)))
        bad = "priority";
    else if (!d_str(f, "status", status, sizeof(status)) || !batch_status_parse(status, &b->status))
        bad = "status";
    else if (!d_int(f, "totalImages", &b->total))
        bad = "totalImages";
    else if (!d_json(f, "options", "optionsJson", &b->options))
        bad = "options";
    else if (!d_dup(f, "webhook", &b->webhook_url))
        bad = "webhook";
    else if (!d_str(f, "idempotencyKey", b->idempotency_key, sizeof(b->idempotency_key)))
        bad = "idempotencyKey";
    else if (!d_str(f, "requestHash", b->request_hash, sizeof(b->request_hash)))
        bad = "requestHash";
    else if (!d_double(f, "costEstimate", &b->cost_estimate))
        bad = "costEstimate";
    else if (!d_time(f, "createdAt", &b->created_at))
        bad = "createdAt";
    else if (!d_time(f, "updatedAt", &b->updated_at))
        bad = "updatedAt";
    else if (!d_time(f, "completedAt", &b->completed_at))
        bad = "completedAt";
    else if (!d_int(f, "generation", &b->generation))
        bad = "generation";
    else if (!d_int(f, "shards", &shards) || shards < 1 || shards > MAX_SHARDS)
        bad = "shards";
    if (bad) {
        batch_release(b);
        return corrupt(err, "batch", id, bad);
    }
    b->shards = (int)shards;
    return ST_OK;
}

/* Reads an item document into it (released first) and its counter shard into *shard. */
static enum status decode_item(const json_t *doc, struct item *it, int *shard, struct error *err)
{
    const json_t *f = firestore_doc_fields(doc), *r, *e, *rf, *ef;
    const char *bad = NULL;
    char status[32];
    int64_t k = -1;

    item_release(it);
    if (!item_ids_from_name(firestore_doc_name(doc), it->batch_id, it->id))
        bad = "name";
    else if (!d_int(f, "index", &it->index))
        bad = "index";
    else if (!d_dup(f, "url", &it->url))
        bad = "url";
    else if (!d_json(f, "metadata", "metadataJson", &it->metadata))
        bad = "metadata";
    else if (!d_str(f, "status", status, sizeof(status)) || !item_status_parse(status, &it->status))
        bad = "status";
    else if (!d_int(f, "attempts", &it->attempts))
        bad = "attempts";
    else if (!d_int(f, "generation", &it->generation))
        bad = "generation";
    else if (!d_str(f, "provider", it->provider, sizeof(it->provider)))
        bad = "provider";
    else if (!d_str(f, "providerJobId", it->provider_job_id, sizeof(it->provider_job_id)))
        bad = "providerJobId";
    else if (!d_int(f, "polls", &it->polls))
        bad = "polls";
    else if (!d_time(f, "leaseUntil", &it->lease_until))
        bad = "leaseUntil";
    else if (!d_time(f, "startedAt", &it->started_at))
        bad = "startedAt";
    else if (!d_time(f, "completedAt", &it->completed_at))
        bad = "completedAt";
    else if (!d_int(f, "durationMs", &it->duration_ms))
        bad = "durationMs";
    else if (!d_int(f, "shard", &k) || k < -1 || k >= MAX_SHARDS)
        bad = "shard";
    if (!bad) {
        r = json_object_get(f, "result");
        e = json_object_get(f, "error");
        it->has_result = firestore_value_kind(r) == FS_MAP;
        it->has_error = firestore_value_kind(e) == FS_MAP;
        rf = firestore_map_fields(r);
        ef = firestore_map_fields(e);
        if (it->has_result &&
            (!d_str(rf, "key", it->result.key, sizeof(it->result.key)) ||
             !d_str(rf, "contentType", it->result.content_type, sizeof(it->result.content_type)) ||
             !d_int(rf, "bytes", &it->result.bytes) ||
             !d_str(rf, "provider", it->result.provider, sizeof(it->result.provider)) ||
             !d_bool(rf, "cached", &it->result.cached) ||
             !d_int(rf, "costMicros", &it->result.cost_micros)))
            bad = "result";
        else if (it->has_error && (!d_str(ef, "code", it->error.code, sizeof(it->error.code)) ||
                                   !d_dup(ef, "message", &it->error.message) ||
                                   !d_bool(ef, "retryable", &it->error.retryable)))
            bad = "error";
    }
    if (!it->url && !bad)
        it->url = xstrdup("");
    if (bad) {
        item_release(it);
        return corrupt(err, "item", firestore_doc_id(doc), bad);
    }
    if (shard)
        *shard = (int)k;
    return ST_OK;
}

/* ---- queries ------------------------------------------------------------------------ */

static json_t *field_ref(const char *path)
{
    return json_pack("{s:s}", "fieldPath", path);
}

static json_t *order(const char *path, bool ascending)
{
    return json_pack("{s:o, s:s}", "field", field_ref(path), "direction",
                     ascending ? "ASCENDING" : "DESCENDING");
}

/* A fieldFilter on path; value stolen. */
static json_t *filter(const char *path, const char *op, json_t *value)
{
    return json_pack("{s:{s:o, s:s, s:o}}", "fieldFilter", "field", field_ref(path), "op", op,
                     "value", value);
}

/* where status == s. */
static json_t *status_is(enum item_status s)
{
    return filter("status", "EQUAL", v_str(item_status_name(s)));
}

/* where status in (a list of n statuses). */
static json_t *status_in(const enum item_status *list, size_t n)
{
    json_t *values = json_array();
    size_t i;

    for (i = 0; i < n; i++)
        json_array_append_new(values, v_str(item_status_name(list[i])));
    return filter("status", "IN", firestore_value_array(values));
}

/*
 * The items of a batch ordered by index (then name), filtered by where
 * (borrowed, may be NULL), after the cursor (index, name) when after_name is
 * set, skipping offset, at most limit.
 */
static json_t *items_query(const json_t *where, int64_t after_index, const char *after_name,
                           int64_t offset, int limit)
{
    json_t *q = json_object();

    json_object_set_new(q, "from", json_pack("[{s:s}]", "collectionId", "items"));
    if (where)
        json_object_set(q, "where", (json_t *)where);
    json_object_set_new(q, "orderBy",
                        json_pack("[o, o]", order("index", true), order("__name__", true)));
    if (after_name)
        json_object_set_new(q, "startAt",
                            json_pack("{s:[o, o], s:b}", "values", firestore_value_int(after_index),
                                      firestore_value_reference(after_name), "before", 0));
    if (offset > 0)
        json_object_set_new(q, "offset", json_integer(offset > INT32_MAX ? INT32_MAX : offset));
    json_object_set_new(q, "limit", json_integer(limit));
    return q;
}

typedef enum status (*item_doc_fn)(void *ud, const json_t *doc, struct error *err);

/*
 * Walks every item of the batch matching where (borrowed) inside the
 * transaction, by pages of tx_page documents, calling fn on each in index
 * order.
 */
static enum status tx_scan_items(struct fstore *st, struct firestore_tx *tx, const char *bname,
                                 const json_t *where, item_doc_fn fn, void *ud, struct error *err)
{
    char after[NAME_CAP] = "";
    int64_t after_index = 0;
    json_t *q, *docs = NULL, *doc;
    enum status s;
    size_t i, n;

    for (;;) {
        q = items_query(where, after_index, after[0] ? after : NULL, 0, st->tx_page);
        s = firestore_tx_query(tx, bname, q, &docs, err);
        json_decref(q);
        if (s)
            return s;
        n = json_array_size(docs);
        json_array_foreach(docs, i, doc)
        {
            if ((s = fn(ud, doc, err)))
                goto out;
        }
        if (n > 0) {
            doc = json_array_get(docs, n - 1);
            if (!d_int(firestore_doc_fields(doc), "index", &after_index) ||
                !str_copy(after, sizeof(after), firestore_doc_name(doc))) {
                s = corrupt(err, "item", firestore_doc_id(doc), "index");
                goto out;
            }
        }
        json_decref(docs);
        docs = NULL;
        if (n < (size_t)st->tx_page)
            return ST_OK;
    }
out:
    json_decref(docs);
    return s;
}

/* ---- item pages ------------------------------------------------------------------------ */

static struct item *page_push(struct item_page *p, size_t *cap)
{
    struct item *it;

    if (p->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        p->items = xrealloc(p->items, *cap * sizeof(*p->items));
    }
    it = &p->items[p->n];
    item_init(it);
    return it;
}

static void page_reset(struct item_page *p)
{
    store_item_page_release(p);
}

/* ---- transactional reads ---------------------------------------------------------------- */

/* Reads one document in tx: *doc a new reference, NULL when missing. */
static enum status tx_read1(struct firestore_tx *tx, const char *name, json_t **doc,
                            struct error *err)
{
    const char *names[1] = {name};
    json_t *docs = NULL, *d;
    enum status s;

    *doc = NULL;
    if ((s = firestore_tx_get(tx, names, 1, NULL, &docs, err)))
        return s;
    d = json_array_get(docs, 0);
    if (json_is_object(d))
        *doc = json_incref(d);
    json_decref(docs);
    return ST_OK;
}

static enum status tx_read_batch(struct firestore_tx *tx, const char *bname, const char *batch_id,
                                 struct batch *b, struct error *err)
{
    json_t *doc = NULL;
    enum status s;

    if ((s = tx_read1(tx, bname, &doc, err)))
        return s;
    if (!doc)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    s = decode_batch(doc, b, err);
    json_decref(doc);
    return s;
}

static enum status tx_read_item(struct firestore_tx *tx, const char *iname, const char *batch_id,
                                const char *item_id, struct item *it, int *shard, struct error *err)
{
    json_t *doc = NULL;
    enum status s;

    if ((s = tx_read1(tx, iname, &doc, err)))
        return s;
    if (!doc)
        return error_set(err, ST_NOT_FOUND, NULL, "item %s of batch %s not found", item_id,
                         batch_id);
    s = decode_item(doc, it, shard, err);
    json_decref(doc);
    return s;
}

/* ---- ping ------------------------------------------------------------------------------ */

static enum status fs_ping(void *state, struct error *err)
{
    struct fstore *st = state;
    char name[NAME_CAP];
    const char *names[1] = {name};
    json_t *docs = NULL;
    enum status s;

    if ((s = firestore_name(st->fs, name, sizeof(name), err, "_health", "ping", NULL)))
        return s;
    s = firestore_batch_get(st->fs, names, 1, NULL, NULL, &docs, err);
    json_decref(docs);
    if (s)
        error_prefix(err, "firestore store ping failed");
    return s;
}

/* ---- batches ---------------------------------------------------------------------------- */

static void idem_doc_id(const char *user_id, const char *key, char out[65])
{
    char joined[USER_ID_MAX + IDEM_KEY_MAX + 2];

    str_printf(joined, sizeof(joined), "%s\n%s", user_id, key);
    sha256_hex(joined, strlen(joined), out);
}

/* After ALREADY_EXISTS: who holds the id or the key. ST_ALREADY_EXISTS with *existing. */
static enum status create_conflict(struct fstore *st, const struct batch *b, const char *bname,
                                   const char *iname, struct batch *existing, struct error *err)
{
    const char *names[2] = {iname, bname};
    char other[NAME_CAP];
    json_t *docs = NULL, *idem, *doc, *got = NULL;
    const char *claimed = NULL;
    enum status s;

    s = firestore_batch_get(st->fs, names + (iname ? 0 : 1), iname ? 2 : 1, NULL, NULL, &docs, err);
    if (s)
        return s;
    idem = iname ? json_array_get(docs, 0) : NULL;
    doc = json_array_get(docs, iname ? 1 : 0);
    if (json_is_object(idem)) {
        if (!firestore_value_get_string(firestore_doc_get(idem, "batchId"), &claimed) ||
            !firestore_id_valid(claimed)) {
            s = corrupt(err, "idempotency claim of user", b->user_id, "batchId");
            goto out;
        }
        if (strcmp(claimed, b->id) != 0) {
            if ((s = batch_name(st, claimed, other, err)) ||
                (s = firestore_get(st->fs, other, NULL, &got, err))) {
                if (s == ST_NOT_FOUND)
                    s = error_set(err, ST_INTERNAL, "store_corrupt",
                                  "idempotency key of user %s names missing batch %s", b->user_id,
                                  claimed);
                goto out;
            }
            doc = got;
        }
        if (!json_is_object(doc)) {
            s = error_set(err, ST_INTERNAL, "store_corrupt",
                          "idempotency key of user %s names missing batch %s", b->user_id, claimed);
            goto out;
        }
        if ((s = decode_batch(doc, existing, err)))
            goto out;
        s = error_set(err, ST_ALREADY_EXISTS, NULL, "idempotency key already used by batch %s",
                      claimed);
        goto out;
    }
    if (json_is_object(doc)) {
        if ((s = decode_batch(doc, existing, err)))
            goto out;
        s = error_set(err, ST_ALREADY_EXISTS, NULL, "batch %s already exists", b->id);
        goto out;
    }
    /* Neither exists any more: the caller tries again. */
    s = error_set(err, ST_ABORTED, NULL, "batch %s: create conflicted with a vanished document",
                  b->id);
out:
    json_decref(got);
    json_decref(docs);
    return s;
}

static enum status fs_create_batch(void *state, const struct batch *b, struct batch *existing,
                                   struct error *err)
{
    struct fstore *st = state;
    char bname[NAME_CAP], iname[NAME_CAP], sname[NAME_CAP], idem_id[65];
    struct batch scratch;
    struct batch *ex = existing ? existing : &scratch;
    json_t *writes = NULL, *w, *f;
    enum status s;
    int k, attempt;

    batch_init(ex);
    if ((s = check_id(b->id, sizeof(b->id), "batch id", err)) ||
        (s = check_str(b->user_id, sizeof(b->user_id), "user id", err)) ||
        (s = check_fits(b->type, sizeof(b->type), "batch type", err)) ||
        (s = check_fits(b->priority, sizeof(b->priority), "batch priority", err)) ||
        (s = check_fits(b->idempotency_key, sizeof(b->idempotency_key), "idempotency key", err)) ||
        (s = check_fits(b->request_hash, sizeof(b->request_hash), "request hash", err)))
        return s;
    if ((size_t)b->status > BATCH_FAILED)
        return error_set(err, ST_INVALID, NULL, "batch %s has an invalid status %d", b->id,
                         (int)b->status);
    if (b->shards < 1 || b->shards > MAX_SHARDS)
        return error_set(err, ST_INVALID, NULL, "batch %s: shards must be in [1, %d], not %d",
                         b->id, MAX_SHARDS, b->shards);
    if (b->generation < 1)
        return error_set(err, ST_INVALID, NULL, "batch %s: generation must be >= 1, not %lld",
                         b->id, (long long)b->generation);
    if (b->total < 0)
        return error_set(err, ST_INVALID, NULL, "batch %s: total must be >= 0", b->id);
    if ((s = batch_name(st, b->id, bname, err)))
        return s;

    writes = json_array();
    w = firestore_write_set(bname, batch_fields(b));
    firestore_write_exists(w, false);
    json_array_append_new(writes, w);
    if (b->idempotency_key[0]) {
        idem_doc_id(b->user_id, b->idempotency_key, idem_id);
        if ((s = firestore_name(st->fs, iname, sizeof(iname), err, "idempotency", idem_id, NULL)))
            goto out;
        f = json_object();
        set(f, "userId", v_str(b->user_id));
        set(f, "key", v_str(b->idempotency_key));
        set(f, "batchId", v_str(b->id));
        set(f, "requestHash", v_str(b->request_hash));
        set(f, "expiresAt", firestore_value_timestamp(i64_add_sat(b->created_at, st->idem_ttl_us)));
        w = firestore_write_set(iname, f);
        firestore_write_exists(w, false);
        json_array_append_new(writes, w);
    }
    for (k = 0; k < b->shards; k++) {
        if ((s = shard_name(st, b->id, k, sname, err)))
            goto out;
        json_array_append_new(writes, firestore_write_set(sname, shard_fields()));
    }
    for (attempt = 1;; attempt++) {
        s = firestore_commit(st->fs, writes, NULL, NULL, err);
        if (s != ST_ALREADY_EXISTS)
            break;
        s = create_conflict(st, b, bname, b->idempotency_key[0] ? iname : NULL, ex, err);
        if (s != ST_ABORTED || attempt >= 3)
            break;
    }
    if (s != ST_OK && s != ST_ALREADY_EXISTS)
        error_prefix(err, "cannot create batch %s", b->id);
out:
    json_decref(writes);
    if (ex == &scratch || s != ST_ALREADY_EXISTS)
        batch_release(ex);
    return s;
}

static enum status fs_get_batch(void *state, const char *batch_id, struct batch *out,
                                struct error *err)
{
    struct fstore *st = state;
    char bname[NAME_CAP];
    json_t *doc = NULL;
    enum status s;

    batch_init(out);
    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)) ||
        (s = batch_name(st, batch_id, bname, err)))
        return s;
    s = firestore_get(st->fs, bname, NULL, &doc, err);
    if (s == ST_NOT_FOUND)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    if (s)
        return s;
    s = decode_batch(doc, out, err);
    json_decref(doc);
    return s;
}

struct set_status_args {
    const char *bname, *batch_id;
    enum batch_status from, to;
    int64_t now;
};

static enum status set_status_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    struct set_status_args *a = ud;
    struct batch b;
    json_t *f;
    enum status s;

    batch_init(&b);
    if ((s = tx_read_batch(tx, a->bname, a->batch_id, &b, err)))
        goto out;
    if (b.status != a->from) {
        s = error_set(err, ST_FAILED_PRECONDITION, NULL, "batch %s is %s, not %s", a->batch_id,
                      batch_status_name(b.status), batch_status_name(a->from));
        goto out;
    }
    f = json_object();
    set(f, "status", v_str(batch_status_name(a->to)));
    set(f, "updatedAt", firestore_value_timestamp(a->now));
    set(f, "completedAt", v_time_opt(batch_status_is_terminal(a->to) ? a->now : 0));
    firestore_tx_write(tx, firestore_write_update(a->bname, f));
out:
    batch_release(&b);
    return s;
}

static enum status fs_set_batch_status(void *state, const char *batch_id, enum batch_status from,
                                       enum batch_status to, int64_t now, struct error *err)
{
    struct fstore *st = state;
    char bname[NAME_CAP];
    struct set_status_args a = {bname, batch_id, from, to, now};
    enum status s;

    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    if ((size_t)from > BATCH_FAILED || (size_t)to > BATCH_FAILED)
        return error_set(err, ST_INVALID, NULL, "invalid batch status transition %d -> %d",
                         (int)from, (int)to);
    if ((s = batch_name(st, batch_id, bname, err)))
        return s;
    return firestore_run_transaction(st->fs, set_status_fn, &a, err);
}

static void batches_free(struct batch *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        batch_release(&v[i]);
    free(v);
}

static enum status fs_list_batches(void *state, const char *user_id, int limit,
                                   const char *page_token, struct batch **out, size_t *n,
                                   char next_token[PAGE_TOKEN_MAX], struct error *err)
{
    struct fstore *st = state;
    char tag[PAGE_TOKEN_TAG_LEN + 1], after_id[BATCH_ID_MAX] = "", after_name[NAME_CAP];
    int64_t after_created = 0;
    json_t *q = NULL, *docs = NULL, *doc;
    enum status s;
    size_t i, got;

    *out = NULL;
    *n = 0;
    next_token[0] = '\0';
    if ((s = check_str(user_id, USER_ID_MAX, "user id", err)))
        return s;
    if (limit < 1 || limit > LIST_LIMIT_MAX)
        return error_set(err, ST_INVALID, NULL, "limit must be in [1, %d], not %d", LIST_LIMIT_MAX,
                         limit);
    page_token_tag(user_id, "batches", tag);
    if (page_token && *page_token &&
        ((s = page_token_decode(page_token, 'b', tag, &after_created, after_id, sizeof(after_id),
                                err)) ||
         (s = batch_name(st, after_id, after_name, err))))
        return s;

    q = json_object();
    json_object_set_new(q, "from", json_pack("[{s:s}]", "collectionId", "batches"));
    json_object_set_new(q, "where", filter("userId", "EQUAL", v_str(user_id)));
    json_object_set_new(q, "orderBy",
                        json_pack("[o, o]", order("createdAt", false), order("__name__", true)));
    if (after_id[0])
        json_object_set_new(q, "startAt",
                            json_pack("{s:[o, o], s:b}", "values",
                                      firestore_value_timestamp(after_created),
                                      firestore_value_reference(after_name), "before", 0));
    json_object_set_new(q, "limit", json_integer(limit + 1));
    s = firestore_run_query(st->fs, firestore_root(st->fs), q, NULL, &docs, err);
    json_decref(q);
    if (s) {
        error_prefix(err, "cannot list batches of user %s", user_id);
        return s;
    }
    got = json_array_size(docs);
    if (got > (size_t)limit)
        got = (size_t)limit;
    *out = got ? xcalloc(got, sizeof(**out)) : NULL;
    for (i = 0; i < got; i++) {
        doc = json_array_get(docs, i);
        batch_init(&(*out)[i]);
        if ((s = decode_batch(doc, &(*out)[i], err))) {
            batches_free(*out, i + 1);
            *out = NULL;
            json_decref(docs);
            return s;
        }
    }
    *n = got;
    if (json_array_size(docs) > (size_t)limit) {
        struct batch *last = &(*out)[got - 1];

        page_token_encode('b', tag, last->created_at, last->id, next_token);
    }
    json_decref(docs);
    return ST_OK;
}

/* ---- items ------------------------------------------------------------------------------ */

struct put_job {
    struct fstore *st;
    const char *batch_id;
    json_t *writes;
    size_t *bounds; /* chunk i is writes[bounds[i], bounds[i + 1]) */
    size_t n_chunks;
    atomic_size_t next;
    pthread_mutex_t mu;
    enum status status; /* the first failure */
    struct error err;
};

static void put_fail(struct put_job *job, enum status s, const struct error *e)
{
    pthread_mutex_lock(&job->mu);
    if (job->status == ST_OK) {
        job->status = s;
        job->err = *e;
    }
    pthread_mutex_unlock(&job->mu);
}

static bool put_failed(struct put_job *job)
{
    bool failed;

    pthread_mutex_lock(&job->mu);
    failed = job->status != ST_OK;
    pthread_mutex_unlock(&job->mu);
    return failed;
}

static void put_chunk(struct put_job *job, size_t c)
{
    size_t from = job->bounds[c], to = job->bounds[c + 1], i;
    json_t *chunk = json_array();
    struct error e = {0};
    enum status s;
    int *codes;

    for (i = from; i < to; i++)
        json_array_append(chunk, json_array_get(job->writes, i));
    codes = xcalloc(to - from, sizeof(*codes));
    s = firestore_batch_write(job->st->fs, chunk, codes, &e);
    if (s == ST_OK) {
        /* ALREADY_EXISTS: the item is there from an earlier run; it stays as it is. */
        for (i = 0; i < to - from; i++) {
            if (codes[i] == 0 || codes[i] == 6)
                continue;
            s = firestore_rpc_status(codes[i]);
            if (s == ST_OK)
                s = ST_INTERNAL;
            error_set(&e, s, NULL, "firestore batchWrite: %s for item %s",
                      firestore_rpc_name(codes[i]) ? firestore_rpc_name(codes[i]) : "error",
                      firestore_doc_id(json_object_get(json_array_get(chunk, i), "update")));
            break;
        }
    }
    if (s)
        error_prefix(&e, "cannot write items %zu-%zu of batch %s", from, to - 1, job->batch_id);
    if (s)
        put_fail(job, s, &e);
    free(codes);
    json_decref(chunk);
}

static void *put_worker(void *p)
{
    struct put_job *job = p;
    size_t c;

    while (!put_failed(job) && (c = atomic_fetch_add(&job->next, 1)) < job->n_chunks)
        put_chunk(job, c);
    return NULL;
}

static enum status fs_put_items(void *state, const char *batch_id, const struct item *items,
                                size_t n, struct error *err)
{
    struct fstore *st = state;
    const char *const mask[] = {"generation", NULL};
    char bname[NAME_CAP], iname[NAME_CAP];
    struct put_job job = {.st = st, .batch_id = batch_id};
    pthread_t threads[PARALLEL_MAX];
    json_t *doc = NULL, *seen = NULL, *w;
    int64_t generation = 0;
    size_t i, bytes = 0, count = 0, cap = 0, n_threads, t;
    enum status s;

    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    /* Validate everything before writing anything. */
    for (i = 0; i < n; i++) {
        if ((s = check_id(items[i].id, ITEM_ID_MAX, "item id", err)))
            return s;
        if (!items[i].url)
            return error_set(err, ST_INVALID, NULL, "item %s of batch %s has no url", items[i].id,
                             batch_id);
        if (items[i].index < 0)
            return error_set(err, ST_INVALID, NULL, "item %s of batch %s has a negative index",
                             items[i].id, batch_id);
    }
    if ((s = batch_name(st, batch_id, bname, err)))
        return s;
    s = firestore_get(st->fs, bname, mask, &doc, err);
    if (s == ST_NOT_FOUND)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    if (s)
        return s;
    if (!d_int(firestore_doc_fields(doc), "generation", &generation)) {
        json_decref(doc);
        return corrupt(err, "batch", batch_id, "generation");
    }
    json_decref(doc);

    /* One write per new item (a batchWrite takes one write per document: duplicates go). */
    job.writes = json_array();
    seen = json_object();
    for (i = 0; i < n; i++) {
        if (json_object_get(seen, items[i].id))
            continue;
        json_object_set_new(seen, items[i].id, json_true());
        if ((s = item_name(st, batch_id, items[i].id, iname, err)))
            goto out;
        w = firestore_write_set(iname, item_new_fields(&items[i], generation));
        firestore_write_exists(w, false);
        json_array_append_new(job.writes, w);
    }
    /* Chunks: at most chunk_writes writes and chunk_bytes bytes each. */
    job.bounds = xcalloc(json_array_size(job.writes) + 2, sizeof(*job.bounds));
    json_array_foreach(job.writes, i, w)
    {
        size_t size = firestore_write_size(w) + 1;

        if (count > 0 && (count == (size_t)st->chunk_writes || bytes + size > st->chunk_bytes)) {
            job.bounds[++cap] = i;
            count = 0;
            bytes = 0;
        }
        count++;
        bytes += size;
    }
    if (count > 0)
        job.bounds[++cap] = json_array_size(job.writes);
    job.n_chunks = cap;
    atomic_init(&job.next, 0);
    pthread_mutex_init(&job.mu, NULL);
    n_threads = job.n_chunks < (size_t)st->parallel ? job.n_chunks : (size_t)st->parallel;
    if (n_threads <= 1) {
        put_worker(&job);
    } else {
        for (t = 0; t < n_threads; t++) {
            if (pthread_create(&threads[t], NULL, put_worker, &job) != 0)
                BUG("cannot start a put_items thread");
        }
        for (t = 0; t < n_threads; t++)
            pthread_join(threads[t], NULL);
    }
    pthread_mutex_destroy(&job.mu);
    s = job.status;
    if (s && err)
        *err = job.err;
out:
    free(job.bounds);
    json_decref(job.writes);
    json_decref(seen);
    return s;
}

static enum status fs_get_item(void *state, const char *batch_id, const char *item_id,
                               struct item *out, struct error *err)
{
    struct fstore *st = state;
    char iname[NAME_CAP];
    json_t *doc = NULL;
    enum status s;

    item_init(out);
    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = item_name(st, batch_id, item_id, iname, err)))
        return s;
    s = firestore_get(st->fs, iname, NULL, &doc, err);
    if (s == ST_NOT_FOUND)
        return error_set(err, ST_NOT_FOUND, NULL, "item %s of batch %s not found", item_id,
                         batch_id);
    if (s)
        return s;
    s = decode_item(doc, out, NULL, err);
    json_decref(doc);
    return s;
}

static enum status fs_list_items(void *state, const char *batch_id, const struct item_query *q,
                                 struct item_page *out, struct error *err)
{
    struct fstore *st = state;
    const char *const mask[] = {"shards", NULL};
    char tag[PAGE_TOKEN_TAG_LEN + 1], after_id[ITEM_ID_MAX] = "", bname[NAME_CAP],
                                      after_name[NAME_CAP];
    int64_t after_index = 0, offset = 0;
    json_t *where = NULL, *query = NULL, *docs = NULL, *doc = NULL;
    size_t i, got, cap = 0;
    enum status s;

    memset(out, 0, sizeof(*out));
    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    if (q->limit < 1 || q->limit > LIST_LIMIT_MAX)
        return error_set(err, ST_INVALID, NULL, "limit must be in [1, %d], not %d", LIST_LIMIT_MAX,
                         q->limit);
    if (q->has_status && (size_t)q->status > ITEM_CANCELLED)
        return error_set(err, ST_INVALID, NULL, "invalid item status filter %d", (int)q->status);
    page_token_tag(batch_id, q->has_status ? item_status_name(q->status) : "*", tag);
    if ((s = batch_name(st, batch_id, bname, err)))
        return s;
    if (q->page_token && *q->page_token) {
        if ((s = page_token_decode(q->page_token, 'i', tag, &after_index, after_id,
                                   sizeof(after_id), err)) ||
            (s = item_name(st, batch_id, after_id, after_name, err)))
            return s;
    } else {
        if (q->offset < 0)
            return error_set(err, ST_INVALID, NULL, "offset must be >= 0");
        offset = q->offset;
    }
    if (q->has_status)
        where = status_is(q->status);
    query = items_query(where, after_index, after_id[0] ? after_name : NULL, offset, q->limit + 1);
    s = firestore_run_query(st->fs, bname, query, NULL, &docs, err);
    json_decref(query);
    json_decref(where);
    if (s) {
        error_prefix(err, "cannot list items of batch %s", batch_id);
        return s;
    }
    got = json_array_size(docs);
    if (got == 0) {
        /* Nothing listed: tell an empty listing from a batch that does not exist. */
        s = firestore_get(st->fs, bname, mask, &doc, err);
        json_decref(doc);
        json_decref(docs);
        if (s == ST_NOT_FOUND)
            return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
        return s;
    }
    if (got > (size_t)q->limit)
        got = (size_t)q->limit;
    for (i = 0; i < got; i++) {
        struct item *it = page_push(out, &cap);

        if ((s = decode_item(json_array_get(docs, i), it, NULL, err))) {
            page_reset(out);
            json_decref(docs);
            return s;
        }
        out->n++;
    }
    if (json_array_size(docs) > (size_t)q->limit) {
        const struct item *last = &out->items[out->n - 1];

        page_token_encode('i', tag, last->index, last->id, out->next_token);
    }
    json_decref(docs);
    return ST_OK;
}

/* ---- attempts ------------------------------------------------------------------------ */

struct begin_args {
    const char *iname, *batch_id, *item_id;
    int64_t generation, now, lease_us;
    enum item_begin *result;
    struct item *out;
};

static enum status item_begin_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    struct begin_args *a = ud;
    struct item *it = a->out;
    enum status s;
    int shard;

    if ((s = tx_read_item(tx, a->iname, a->batch_id, a->item_id, it, &shard, err)))
        return s;
    if (item_status_is_terminal(it->status)) {
        *a->result = BEGIN_TERMINAL;
        return ST_OK;
    }
    if (it->generation != a->generation) {
        *a->result = BEGIN_STALE;
        return ST_OK;
    }
    if (it->status == ITEM_POLLING && it->provider_job_id[0]) {
        *a->result = BEGIN_HAS_JOB;
        return ST_OK;
    }
    if (it->status == ITEM_PROCESSING && it->lease_until > a->now) {
        *a->result = BEGIN_LEASED;
        return ST_OK;
    }
    it->status = ITEM_PROCESSING;
    it->attempts++;
    it->lease_until = i64_add_sat(a->now, a->lease_us);
    if (!it->started_at)
        it->started_at = a->now;
    firestore_tx_write(tx, item_state_write(a->iname, it, shard));
    *a->result = BEGIN_STARTED;
    return ST_OK;
}

static enum status fs_item_begin(void *state, const char *batch_id, const char *item_id,
                                 int64_t generation, int64_t now, int64_t lease_us,
                                 enum item_begin *result, struct item *out, struct error *err)
{
    struct fstore *st = state;
    char iname[NAME_CAP];
    struct begin_args a = {iname, batch_id, item_id, generation, now, lease_us, result, out};
    enum status s;

    item_init(out);
    if ((s = check_item_ids(batch_id, item_id, err)))
        return s;
    if (lease_us < 0)
        return error_set(err, ST_INVALID, NULL, "lease must be >= 0");
    if ((s = item_name(st, batch_id, item_id, iname, err)))
        return s;
    s = firestore_run_transaction(st->fs, item_begin_fn, &a, err);
    if (s != ST_OK)
        item_release(out);
    return s;
}

struct set_job_args {
    const char *iname, *batch_id, *item_id;
    int64_t generation;
    const char *provider, *job_id;
    int64_t polls, now;
};

static enum status item_set_job_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    struct set_job_args *a = ud;
    struct item it;
    enum status s;
    int shard;

    item_init(&it);
    if ((s = tx_read_item(tx, a->iname, a->batch_id, a->item_id, &it, &shard, err)))
        goto out;
    if (item_status_is_terminal(it.status)) {
        s = error_set(err, ST_FAILED_PRECONDITION, NULL, "item %s of batch %s is already %s",
                      a->item_id, a->batch_id, item_status_name(it.status));
        goto out;
    }
    if (it.generation != a->generation) {
        s = error_set(err, ST_FAILED_PRECONDITION, NULL,
                      "item %s of batch %s is of generation %lld, not %lld", a->item_id,
                      a->batch_id, (long long)it.generation, (long long)a->generation);
        goto out;
    }
    it.status = ITEM_POLLING;
    str_copy(it.provider, sizeof(it.provider), a->provider);
    str_copy(it.provider_job_id, sizeof(it.provider_job_id), a->job_id);
    it.polls = a->polls;
    it.lease_until = 0;
    firestore_tx_write(tx, item_state_write(a->iname, &it, shard));
out:
    item_release(&it);
    return s;
}

static enum status fs_item_set_job(void *state, const char *batch_id, const char *item_id,
                                   int64_t generation, const char *provider, const char *job_id,
                                   int64_t polls, int64_t now, struct error *err)
{
    struct fstore *st = state;
    char iname[NAME_CAP];
    struct set_job_args a = {iname, batch_id, item_id, generation, provider, job_id, polls, now};
    enum status s;

    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = check_fits(provider, PROVIDER_MAX, "provider", err)) ||
        (s = check_str(job_id, JOB_ID_MAX, "provider job id", err)) ||
        (s = item_name(st, batch_id, item_id, iname, err)))
        return s;
    return firestore_run_transaction(st->fs, item_set_job_fn, &a, err);
}

struct release_args {
    const char *iname, *batch_id, *item_id;
    int64_t generation;
    const char *error_code, *error_message;
    bool drop_job; /* item_drop_job: a polling item goes back to pending without its job */
};

static enum status item_release_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    struct release_args *a = ud;
    struct item it;
    enum status s;
    int shard;

    item_init(&it);
    if ((s = tx_read_item(tx, a->iname, a->batch_id, a->item_id, &it, &shard, err)))
        goto out;
    if (item_status_is_terminal(it.status) || it.generation != a->generation)
        goto out;
    if (a->drop_job) {
        if (it.status != ITEM_POLLING)
            goto out;
        it.provider_job_id[0] = '\0';
        it.polls = 0;
        it.status = ITEM_PENDING;
    } else if (it.status != ITEM_POLLING) {
        it.status = ITEM_PENDING;
    }
    it.lease_until = 0;
    if (a->error_code || a->error_message) {
        it.has_error = true;
        str_copy(it.error.code, sizeof(it.error.code), a->error_code);
        free(it.error.message);
        it.error.message = str_dup_bounded(a->error_message, FIRESTORE_STORE_MESSAGE_MAX);
        it.error.retryable = true;
    }
    firestore_tx_write(tx, item_state_write(a->iname, &it, shard));
out:
    item_release(&it);
    return s;
}

static enum status fs_item_release_lease(void *state, const char *batch_id, const char *item_id,
                                         int64_t generation, const char *error_code,
                                         const char *error_message, int64_t now, struct error *err)
{
    struct fstore *st = state;
    char iname[NAME_CAP];
    struct release_args a = {iname,      batch_id,      item_id, generation,
                             error_code, error_message, false};
    enum status s;

    UNUSED(now);
    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = check_fits(error_code, CODE_MAX, "error code", err)) ||
        (s = item_name(st, batch_id, item_id, iname, err)))
        return s;
    return firestore_run_transaction(st->fs, item_release_fn, &a, err);
}

static enum status fs_item_drop_job(void *state, const char *batch_id, const char *item_id,
                                    int64_t generation, const char *error_code,
                                    const char *error_message, int64_t now, struct error *err)
{
    struct fstore *st = state;
    char iname[NAME_CAP];
    struct release_args a = {iname, batch_id, item_id, generation, error_code, error_message, true};
    enum status s;

    UNUSED(now);
    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = check_fits(error_code, CODE_MAX, "error code", err)) ||
        (s = item_name(st, batch_id, item_id, iname, err)))
        return s;
    return firestore_run_transaction(st->fs, item_release_fn, &a, err);
}

struct finish_args {
    const char *iname, *sname, *batch_id, *item_id;
    int64_t generation;
    int shard;
    const struct item_outcome *o;
    bool wrote; /* the last run queued the commit */
};

static enum status item_finish_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    struct finish_args *a = ud;
    const struct item_outcome *o = a->o;
    struct item it;
    enum status s;
    json_t *w;
    int old_shard;

    a->wrote = false;
    item_init(&it);
    if ((s = tx_read_item(tx, a->iname, a->batch_id, a->item_id, &it, &old_shard, err)))
        goto out;
    if (item_status_is_terminal(it.status) || it.generation != a->generation)
        goto out; /* a duplicated or stale delivery: nothing to write */

    it.status = o->status;
    it.lease_until = 0;
    it.completed_at = o->now;
    it.duration_ms = o->duration_ms;
    if (o->status == ITEM_COMPLETED) {
        it.has_result = o->result != NULL;
        memset(&it.result, 0, sizeof(it.result));
        if (o->result)
            it.result = *o->result;
        free(it.error.message);
        memset(&it.error, 0, sizeof(it.error));
        it.has_error = false;
    } else {
        it.has_result = false;
        memset(&it.result, 0, sizeof(it.result));
        if (o->error_code || o->error_message || o->status == ITEM_FAILED) {
            it.has_error = true;
            str_copy(it.error.code, sizeof(it.error.code), o->error_code);
            free(it.error.message);
            it.error.message = str_dup_bounded(o->error_message, FIRESTORE_STORE_MESSAGE_MAX);
            it.error.retryable = o->retryable;
        }
    }
    firestore_tx_write(tx, item_state_write(a->iname, &it, a->shard));
    /* The counter moves in the same commit; exists=true refuses a shard out of range. */
    w = firestore_write_transform(a->sname);
    firestore_write_exists(w, true);
    firestore_write_increment(w, "processed", firestore_value_int(1));
    firestore_write_increment(w,
                              o->status == ITEM_COMPLETED ? "success"
                              : o->status == ITEM_FAILED  ? "failure"
                                                          : "cancelled",
                              firestore_value_int(1));
    if (o->status == ITEM_COMPLETED && o->duration_ms != 0)
        firestore_write_increment(w, "durationMsSum", firestore_value_int(o->duration_ms));
    if (o->status == ITEM_COMPLETED && o->result && o->result->cost_micros != 0)
        firestore_write_increment(w, "costMicros", firestore_value_int(o->result->cost_micros));
    firestore_tx_write(tx, w);
    a->wrote = true;
out:
    item_release(&it);
    return s;
}

static enum status fs_item_finish(void *state, const char *batch_id, const char *item_id,
                                  int64_t generation, int shard, const struct item_outcome *o,
                                  bool *applied, struct error *err)
{
    struct fstore *st = state;
    char iname[NAME_CAP], sname[NAME_CAP];
    struct finish_args a = {iname, sname, batch_id, item_id, generation, shard, o, false};
    enum status s;

    *applied = false;
    if ((s = check_item_ids(batch_id, item_id, err)))
        return s;
    if (!o || !item_status_is_terminal(o->status))
        return error_set(err, ST_INVALID, NULL, "item %s of batch %s: outcome %s is not terminal",
                         item_id, batch_id, o ? item_status_name(o->status) : "(none)");
    if (shard < 0 || shard >= MAX_SHARDS)
        return error_set(err, ST_INVALID, NULL, "shard %d out of range for batch %s", shard,
                         batch_id);
    if ((s = check_fits(o->error_code, CODE_MAX, "error code", err)))
        return s;
    if (o->result && ((s = check_fits(o->result->key, sizeof(o->result->key), "result key", err)) ||
                      (s = check_fits(o->result->content_type, sizeof(o->result->content_type),
                                      "result content type", err)) ||
                      (s = check_fits(o->result->provider, sizeof(o->result->provider),
                                      "result provider", err))))
        return s;
    if ((s = item_name(st, batch_id, item_id, iname, err)) ||
        (s = shard_name(st, batch_id, shard, sname, err)))
        return s;
    s = firestore_run_transaction(st->fs, item_finish_fn, &a, err);
    if (s == ST_NOT_FOUND && a.wrote)
        return error_set(err, ST_INVALID, NULL, "shard %d of batch %s does not exist", shard,
                         batch_id);
    *applied = s == ST_OK && a.wrote;
    return s;
}

/* ---- counters and batch transitions --------------------------------------------------- */

static enum status shard_counts_add(const json_t *doc, struct batch_counts *n)
{
    const json_t *f = firestore_doc_fields(doc);
    int64_t v[6];

    if (!d_int(f, "processed", &v[0]) || !d_int(f, "success", &v[1]) ||
        !d_int(f, "failure", &v[2]) || !d_int(f, "cancelled", &v[3]) ||
        !d_int(f, "durationMsSum", &v[4]) || !d_int(f, "costMicros", &v[5]))
        return ST_INTERNAL;
    n->processed = i64_add_sat(n->processed, v[0]);
    n->success = i64_add_sat(n->success, v[1]);
    n->failure = i64_add_sat(n->failure, v[2]);
    n->cancelled = i64_add_sat(n->cancelled, v[3]);
    n->duration_ms_sum = i64_add_sat(n->duration_ms_sum, v[4]);
    n->cost_micros = i64_add_sat(n->cost_micros, v[5]);
    return ST_OK;
}

static enum status fs_get_counts(void *state, const char *batch_id, struct batch_counts *out,
                                 struct error *err)
{
    struct fstore *st = state;
    char bname[NAME_CAP];
    json_t *q, *docs = NULL, *doc;
    enum status s;
    size_t i;

    memset(out, 0, sizeof(*out));
    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)) ||
        (s = batch_name(st, batch_id, bname, err)))
        return s;
    q = json_pack("{s:[{s:s}], s:i}", "from", "collectionId", "shards", "limit", MAX_SHARDS);
    s = firestore_run_query(st->fs, bname, q, NULL, &docs, err);
    json_decref(q);
    if (s) {
        error_prefix(err, "cannot read counters of batch %s", batch_id);
        return s;
    }
    if (json_array_size(docs) == 0) {
        json_decref(docs);
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    }
    json_array_foreach(docs, i, doc)
    {
        if (shard_counts_add(doc, out) != ST_OK) {
            json_decref(docs);
            memset(out, 0, sizeof(*out));
            return corrupt(err, "shard of batch", batch_id, "counter");
        }
    }
    json_decref(docs);
    return ST_OK;
}

/* sum(shards.processed) with one aggregation query. */
static enum status processed_sum(struct fstore *st, const char *bname, const char *batch_id,
                                 double *out, struct error *err)
{
    json_t *agg, *fields = NULL;
    enum status s;

    agg = json_pack("{s:{s:[{s:s}]}, s:[{s:s, s:{s:{s:s}}}]}", "structuredQuery", "from",
                    "collectionId", "shards", "aggregations", "alias", "processed", "sum", "field",
                    "fieldPath", "processed");
    s = firestore_run_aggregation(st->fs, bname, agg, NULL, &fields, err);
    json_decref(agg);
    if (s)
        return s;
    if (!firestore_value_get_double(json_object_get(fields, "processed"), out)) {
        json_decref(fields);
        return corrupt(err, "shards of batch", batch_id, "processed sum");
    }
    json_decref(fields);
    return ST_OK;
}

/*
 * The completion transition without a transaction: read the batch (and its
 * updateTime), sum the shards, and commit the final status with the
 * precondition updateTime == the one read. While the batch is processing,
 * shards only grow, and everything that could make the decision stale
 * (another completion, a cancel, a retry) rewrites the batch document, so
 * the precondition lets exactly one caller win. A transaction would be
 * correct too, but every caller would queue on the batch document's lock.
 */
static enum status fs_try_complete(void *state, const char *batch_id, int64_t generation,
                                   int64_t now, bool *won, enum batch_status *final_status,
                                   struct error *err)
{
    const char *const mask[] = {"status", "generation", "totalImages", NULL};
    struct fstore *st = state;
    char bname[NAME_CAP], status[32], update_time[64];
    struct batch_counts n;
    json_t *doc = NULL, *f, *w, *writes;
    const json_t *fields;
    enum batch_status to;
    int64_t total = 0, gen = 0;
    double processed = 0;
    enum status s;

    *won = false;
    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)) ||
        (s = batch_name(st, batch_id, bname, err)))
        return s;
    s = firestore_get(st->fs, bname, mask, &doc, err);
    if (s == ST_NOT_FOUND)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    if (s)
        return s;
    fields = firestore_doc_fields(doc);
    if (!d_str(fields, "status", status, sizeof(status)) ||
        !batch_status_parse(status, final_status) || !d_int(fields, "generation", &gen) ||
        !d_int(fields, "totalImages", &total) || !firestore_doc_update_time(doc) ||
        !str_copy(update_time, sizeof(update_time), firestore_doc_update_time(doc))) {
        json_decref(doc);
        return corrupt(err, "batch", batch_id, "status");
    }
    json_decref(doc);
    if (*final_status != BATCH_PROCESSING || gen != generation)
        return ST_OK;
    /* Every item's end asks: one aggregation read answers "not yet" for all but the last. */
    if ((s = processed_sum(st, bname, batch_id, &processed, err)))
        return s;
    if (processed < (double)total)
        return ST_OK;
    if ((s = fs_get_counts(state, batch_id, &n, err)))
        return s;
    if (n.processed < total)
        return ST_OK;
    to = n.failure == 0 && n.cancelled == 0 ? BATCH_COMPLETED : BATCH_COMPLETED_WITH_FAILURES;
    f = json_object();
    set(f, "status", v_str(batch_status_name(to)));
    set(f, "updatedAt", firestore_value_timestamp(now));
    set(f, "completedAt", firestore_value_timestamp(now));
    w = firestore_write_update(bname, f);
    firestore_write_update_time(w, update_time);
    writes = json_array();
    json_array_append_new(writes, w);
    s = firestore_commit(st->fs, writes, NULL, NULL, err);
    json_decref(writes);
    if (s == ST_FAILED_PRECONDITION) {
        /* Someone changed the batch first: whoever it was, it was not us. */
        struct batch b;

        batch_init(&b);
        if (fs_get_batch(state, batch_id, &b, err) == ST_OK)
            *final_status = b.status;
        batch_release(&b);
        return ST_OK;
    }
    if (s)
        return s;
    *won = true;
    *final_status = to;
    return ST_OK;
}

struct retry_args {
    struct fstore *st;
    const char *bname, *batch_id;
    int64_t now;
    int64_t new_generation;
    struct item_page *redriven;
    size_t cap;
    int shards;
    int64_t per_shard[MAX_SHARDS];
};

static enum status retry_collect(void *ud, const json_t *doc, struct error *err)
{
    struct retry_args *a = ud;
    struct item *it = page_push(a->redriven, &a->cap);
    enum status s;
    int k;

    if ((s = decode_item(doc, it, &k, err)))
        return s;
    a->redriven->n++;
    if (k < 0 || k >= a->shards)
        return error_set(err, ST_INTERNAL, "store_corrupt",
                         "failed item %s of batch %s counted in shard %d of %d", it->id,
                         a->batch_id, k, a->shards);
    a->per_shard[k]++;
    return ST_OK;
}

static enum status retry_failed_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    static const char *const cleared[] = {"result", "error", "leaseUntil", "startedAt",
                                          "completedAt"};
    struct retry_args *a = ud;
    struct batch b;
    char name[NAME_CAP];
    json_t *where = NULL, *f, *w;
    enum status s;
    int64_t gen;
    size_t i, j;
    int k;

    page_reset(a->redriven);
    a->cap = 0;
    memset(a->per_shard, 0, sizeof(a->per_shard));
    batch_init(&b);
    if ((s = tx_read_batch(tx, a->bname, a->batch_id, &b, err)))
        goto out;
    a->new_generation = b.generation;
    a->shards = b.shards;
    /* Only a finished batch: re-driving while items of the current generation are still in
     * flight would leave the completion check of that generation with nobody to win it. */
    if (b.status != BATCH_COMPLETED && b.status != BATCH_COMPLETED_WITH_FAILURES) {
        s = error_set(err, ST_FAILED_PRECONDITION, NULL, "batch %s is %s: cannot retry it",
                      a->batch_id, batch_status_name(b.status));
        goto out;
    }
    where = status_is(ITEM_FAILED);
    if ((s = tx_scan_items(a->st, tx, a->bname, where, retry_collect, a, err)))
        goto out;
    if (a->redriven->n == 0)
        goto out;

    gen = b.generation + 1;
    for (k = 0; k < b.shards; k++) {
        if (!a->per_shard[k])
            continue;
        if ((s = shard_name(a->st, a->batch_id, k, name, err)))
            goto out;
        w = firestore_write_transform(name);
        firestore_write_exists(w, true);
        firestore_write_increment(w, "processed", firestore_value_int(-a->per_shard[k]));
        firestore_write_increment(w, "failure", firestore_value_int(-a->per_shard[k]));
        firestore_tx_write(tx, w);
    }
    for (i = 0; i < a->redriven->n; i++) {
        struct item *it = &a->redriven->items[i];

        /* Only what changes, the cleared fields by the mask alone: small writes. */
        if ((s = item_name(a->st, a->batch_id, it->id, name, err)))
            goto out;
        f = json_object();
        set(f, "status", v_str(item_status_name(ITEM_PENDING)));
        set(f, "generation", firestore_value_int(gen));
        set(f, "attempts", firestore_value_int(0));
        set(f, "provider", v_str(""));
        set(f, "providerJobId", v_str(""));
        set(f, "polls", firestore_value_int(0));
        set(f, "durationMs", firestore_value_int(0));
        set(f, "shard", firestore_value_int(-1));
        w = firestore_write_update(name, f);
        for (j = 0; j < ARRAY_SIZE(cleared); j++)
            firestore_write_mask_add(w, cleared[j]);
        firestore_tx_write(tx, w);

        it->status = ITEM_PENDING;
        it->generation = gen;
        it->attempts = 0;
        it->provider[0] = '\0';
        it->provider_job_id[0] = '\0';
        it->polls = 0;
        it->has_result = false;
        memset(&it->result, 0, sizeof(it->result));
        it->has_error = false;
        free(it->error.message);
        memset(&it->error, 0, sizeof(it->error));
        it->lease_until = 0;
        it->started_at = 0;
        it->completed_at = 0;
        it->duration_ms = 0;
    }
    f = json_object();
    set(f, "status", v_str(batch_status_name(BATCH_PROCESSING)));
    set(f, "generation", firestore_value_int(gen));
    set(f, "completedAt", firestore_value_null());
    set(f, "updatedAt", firestore_value_timestamp(a->now));
    firestore_tx_write(tx, firestore_write_update(a->bname, f));
    a->new_generation = gen;
out:
    json_decref(where);
    batch_release(&b);
    return s;
}

static enum status fs_retry_failed(void *state, const char *batch_id, int64_t now,
                                   int64_t *new_generation, struct item_page *redriven,
                                   struct error *err)
{
    struct fstore *st = state;
    char bname[NAME_CAP];
    struct retry_args a = {.st = st, .bname = bname, .batch_id = batch_id, .now = now};
    enum status s;

    memset(redriven, 0, sizeof(*redriven));
    *new_generation = 0;
    a.redriven = redriven;
    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)) ||
        (s = batch_name(st, batch_id, bname, err)))
        return s;
    s = firestore_run_transaction(st->fs, retry_failed_fn, &a, err);
    *new_generation = a.new_generation;
    if (s != ST_OK)
        page_reset(redriven);
    if (s != ST_OK && s != ST_FAILED_PRECONDITION && s != ST_NOT_FOUND)
        error_prefix(err, "cannot retry failed items of batch %s", batch_id);
    return s;
}

struct cancel_args {
    struct fstore *st;
    struct firestore_tx *tx;
    const char *bname, *batch_id;
    int64_t now;
    bool changed;
    struct item_page *in_flight;
    size_t cap;
    int shards;
    int64_t per_shard[MAX_SHARDS];
};

static enum status cancel_visit(void *ud, const json_t *doc, struct error *err)
{
    struct cancel_args *a = ud;
    char status[32];
    enum item_status is;
    const char *id = firestore_doc_id(doc);
    struct item *it;
    json_t *f, *w;
    enum status s;
    int k;

    if (!d_str(firestore_doc_fields(doc), "status", status, sizeof(status)) ||
        !item_status_parse(status, &is) || !id)
        return corrupt(err, "item", id, "status");
    if (is == ITEM_PENDING) {
        k = item_shard(id, a->shards);
        f = json_object();
        set(f, "status", v_str(item_status_name(ITEM_CANCELLED)));
        set(f, "completedAt", firestore_value_timestamp(a->now));
        set(f, "shard", firestore_value_int(k));
        w = firestore_write_update(firestore_doc_name(doc), f);
        firestore_write_mask_add(w, "leaseUntil");
        firestore_tx_write(a->tx, w);
        a->per_shard[k]++;
        return ST_OK;
    }
    it = page_push(a->in_flight, &a->cap);
    if ((s = decode_item(doc, it, NULL, err)))
        return s;
    a->in_flight->n++;
    return ST_OK;
}

static enum status cancel_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    static const enum item_status open[] = {ITEM_PENDING, ITEM_PROCESSING, ITEM_POLLING};
    struct cancel_args *a = ud;
    char name[NAME_CAP];
    struct batch b;
    json_t *where = NULL, *f, *w;
    enum status s;
    int k;

    a->changed = false;
    a->tx = tx;
    a->cap = 0;
    page_reset(a->in_flight);
    memset(a->per_shard, 0, sizeof(a->per_shard));
    batch_init(&b);
    if ((s = tx_read_batch(tx, a->bname, a->batch_id, &b, err)))
        goto out;
    a->shards = b.shards;
    if (b.status != BATCH_CANCELLED && batch_status_is_terminal(b.status))
        goto out;
    if (b.status != BATCH_CANCELLED) {
        f = json_object();
        set(f, "status", v_str(batch_status_name(BATCH_CANCELLED)));
        set(f, "updatedAt", firestore_value_timestamp(a->now));
        set(f, "completedAt", firestore_value_timestamp(a->now));
        firestore_tx_write(tx, firestore_write_update(a->bname, f));
        a->changed = true;
    }
    /* One pass over the open items: pending ones end cancelled, the others are in flight. */
    where = status_in(open, ARRAY_SIZE(open));
    if ((s = tx_scan_items(a->st, tx, a->bname, where, cancel_visit, a, err)))
        goto out;
    for (k = 0; k < b.shards; k++) {
        if (!a->per_shard[k])
            continue;
        if ((s = shard_name(a->st, a->batch_id, k, name, err)))
            goto out;
        w = firestore_write_transform(name);
        firestore_write_exists(w, true);
        firestore_write_increment(w, "processed", firestore_value_int(a->per_shard[k]));
        firestore_write_increment(w, "cancelled", firestore_value_int(a->per_shard[k]));
        firestore_tx_write(tx, w);
    }
out:
    json_decref(where);
    batch_release(&b);
    return s;
}

static enum status fs_cancel_batch(void *state, const char *batch_id, int64_t now, bool *changed,
                                   struct item_page *in_flight, struct error *err)
{
    struct fstore *st = state;
    char bname[NAME_CAP];
    struct cancel_args a = {.st = st, .bname = bname, .batch_id = batch_id, .now = now};
    enum status s;

    memset(in_flight, 0, sizeof(*in_flight));
    *changed = false;
    a.in_flight = in_flight;
    if ((s = check_id(batch_id, BATCH_ID_MAX, "batch id", err)) ||
        (s = batch_name(st, batch_id, bname, err)))
        return s;
    s = firestore_run_transaction(st->fs, cancel_fn, &a, err);
    if (s != ST_OK) {
        page_reset(in_flight);
        if (s != ST_NOT_FOUND)
            error_prefix(err, "cannot cancel batch %s", batch_id);
        return s;
    }
    *changed = a.changed;
    return ST_OK;
}

/* ---- dead letters ------------------------------------------------------------------- */

static enum status fs_put_dead_letter(void *state, const struct dead_letter *dl, struct error *err)
{
    struct fstore *st = state;
    char id[BATCH_ID_MAX + ITEM_ID_MAX + 2], name[NAME_CAP];
    json_t *f, *writes;
    enum status s;

    if ((s = check_item_ids(dl->batch_id, dl->item_id, err)) ||
        (s = check_fits(dl->error_code, CODE_MAX, "error code", err)))
        return s;
    str_printf(id, sizeof(id), "%s_%s", dl->batch_id, dl->item_id);
    if ((s = firestore_name(st->fs, name, sizeof(name), err, "dead_letters", id, NULL)))
        return s;
    f = json_object();
    set(f, "batchId", v_str(dl->batch_id));
    set(f, "itemId", v_str(dl->item_id));
    set(f, "generation", firestore_value_int(dl->generation));
    set(f, "errorCode", v_str(dl->error_code));
    set(f, "errorMessage",
        dl->error_message ? firestore_value_stringn(
                                dl->error_message,
                                str_bounded_len(dl->error_message, FIRESTORE_STORE_MESSAGE_MAX))
                          : firestore_value_null());
    set(f, "attempts", firestore_value_int(dl->attempts));
    put_json(f, "history", "historyJson", dl->history);
    set(f, "createdAt", firestore_value_timestamp(dl->now));
    writes = json_array();
    json_array_append_new(writes, firestore_write_set(name, f));
    s = firestore_commit(st->fs, writes, NULL, NULL, err);
    json_decref(writes);
    if (s)
        error_prefix(err, "cannot record dead letter of item %s of batch %s", dl->item_id,
                     dl->batch_id);
    return s;
}

/* ---- the result cache ---------------------------------------------------------------- */

#define CACHE_KEY_MAX 129

static enum status cache_name(struct fstore *st, const char *key, char *out, struct error *err)
{
    enum status s;

    if ((s = check_id(key, CACHE_KEY_MAX, "cache key", err)))
        return s;
    return firestore_name(st->fs, out, NAME_CAP, err, "result_cache", key, NULL);
}

/* ---- API keys and rate limits ---------------------------------------------- */

static enum status fs_api_key_put(void *state, const struct api_key *k, struct error *err)
{
    struct fstore *st = state;
    char name[NAME_CAP];
    json_t *f, *writes;
    enum status s;

    if ((s = check_id(k->hash, 65, "api key hash", err)) ||
        (s = firestore_name(st->fs, name, NAME_CAP, err, "api_keys", k->hash, NULL)))
        return s;
    f = json_object();
    set(f, "userId", v_str(k->user_id));
    set(f, "name", v_str(k->name));
    set(f, "disabled", json_pack("{s:b}", "booleanValue", k->disabled));
    set(f, "createdAt", firestore_value_timestamp(k->created_at));
    writes = json_array();
    json_array_append_new(writes, firestore_write_set(name, f));
    s = firestore_commit(st->fs, writes, NULL, NULL, err);
    json_decref(writes);
    return s;
}

static enum status fs_api_key_get(void *state, const char *hash, struct api_key *out,
                                  struct error *err)
{
    struct fstore *st = state;
    char name[NAME_CAP];
    const json_t *f;
    json_t *doc = NULL;
    int64_t created = 0;
    enum status s;

    memset(out, 0, sizeof(*out));
    if ((s = check_id(hash, 65, "api key hash", err)) ||
        (s = firestore_name(st->fs, name, NAME_CAP, err, "api_keys", hash, NULL)))
        return s;
    s = firestore_get(st->fs, name, NULL, &doc, err);
    if (s == ST_NOT_FOUND)
        return error_set(err, ST_NOT_FOUND, NULL, "unknown api key");
    if (s)
        return s;
    f = firestore_doc_fields(doc);
    if (!d_str(f, "userId", out->user_id, sizeof(out->user_id))) {
        json_decref(doc);
        return corrupt(err, "api key", hash, "userId");
    }
    d_str(f, "name", out->name, sizeof(out->name));
    out->disabled = json_is_true(json_object_get(json_object_get(f, "disabled"), "booleanValue"));
    if (firestore_value_get_timestamp(json_object_get(f, "createdAt"), &created))
        out->created_at = created;
    str_copy(out->hash, sizeof(out->hash), hash);
    json_decref(doc);
    return ST_OK;
}

/*
 * One increment transform per request, the new total read back from the
 * commit: no transaction, so concurrent requests of a user never contend.
 */
static enum status fs_rate_count(void *state, const char *user_id, const char *kind, int64_t window,
                                 int64_t amount, int64_t *total, struct error *err)
{
    struct fstore *st = state;
    char id[USER_ID_MAX + 64], hex[65], name[NAME_CAP];
    json_t *w, *writes, *resp = NULL, *v;
    enum status s;

    /* User ids are free text: the document id is a hash of them. */
    snprintf(id, sizeof(id), "%s\n%s\n%lld", user_id, kind, (long long)window);
    sha256_hex(id, strlen(id), hex);
    if ((s = firestore_name(st->fs, name, NAME_CAP, err, "rate_limits", hex, NULL)))
        return s;
    /* expiresAt lets a TTL policy (deploy/firestore.indexes.json) drop old windows. */
    {
        json_t *f = json_object();

        set(f, "expiresAt", firestore_value_timestamp(time_now_us() + 2 * 3600 * 1000000LL));
        w = firestore_write_update(name, f);
    }
    firestore_write_increment(w, "count", firestore_value_int(amount));
    writes = json_array();
    json_array_append_new(writes, w);
    s = firestore_commit(st->fs, writes, NULL, &resp, err);
    json_decref(writes);
    if (s)
        return s;
    v = json_array_get(json_object_get(json_array_get(json_object_get(resp, "writeResults"), 0),
                                       "transformResults"),
                       0);
    if (!firestore_value_get_int(v, total)) {
        json_decref(resp);
        return error_set(err, ST_INTERNAL, NULL, "rate counter answer without a total");
    }
    json_decref(resp);
    return ST_OK;
}

static enum status fs_cache_get(void *state, const char *key, struct item_result *out,
                                struct error *err)
{
    struct fstore *st = state;
    char name[NAME_CAP];
    const json_t *r;
    json_t *doc = NULL;
    enum status s;

    memset(out, 0, sizeof(*out));
    if ((s = cache_name(st, key, name, err)))
        return s;
    s = firestore_get(st->fs, name, NULL, &doc, err);
    if (s == ST_NOT_FOUND)
        return error_set(err, ST_NOT_FOUND, NULL, "no cached result for %.16s", key);
    if (s)
        return s;
    r = firestore_map_fields(firestore_doc_get(doc, "result"));
    if (!r || !d_str(r, "key", out->key, sizeof(out->key)) ||
        !d_str(r, "contentType", out->content_type, sizeof(out->content_type)) ||
        !d_int(r, "bytes", &out->bytes) ||
        !d_str(r, "provider", out->provider, sizeof(out->provider))) {
        json_decref(doc);
        memset(out, 0, sizeof(*out));
        return corrupt(err, "cached result", key, "result");
    }
    json_decref(doc);
    out->cached = true;
    return ST_OK;
}

static enum status fs_cache_put(void *state, const char *key, const struct item_result *result,
                                int64_t now, struct error *err)
{
    struct fstore *st = state;
    char name[NAME_CAP];
    json_t *f, *m, *w;
    enum status s;

    if ((s = cache_name(st, key, name, err)))
        return s;
    m = json_object();
    set(m, "key", v_str(result->key));
    set(m, "contentType", v_str(result->content_type));
    set(m, "bytes", firestore_value_int(result->bytes));
    set(m, "provider", v_str(result->provider));
    f = json_object();
    set(f, "result", firestore_value_map(m));
    set(f, "createdAt", firestore_value_timestamp(now));
    w = firestore_write_set(name, f);
    /* The first writer wins: a later put meets ALREADY_EXISTS and changes nothing. */
    firestore_write_exists(w, false);
    {
        json_t *writes = json_array();

        json_array_append_new(writes, w);
        s = firestore_commit(st->fs, writes, NULL, NULL, err);
        json_decref(writes);
    }
    if (s == ST_ALREADY_EXISTS) {
        error_clear(err);
        return ST_OK;
    }
    if (s)
        error_prefix(err, "cannot write cached result %.16s", key);
    return s;
}

/* ---- open and close ------------------------------------------------------------------ */

static void fs_close(void *state)
{
    struct fstore *st = state;

    if (!st)
        return;
    if (st->own_fs)
        firestore_free(st->fs);
    free(st);
}

static const struct store_ops firestore_ops = {
    .close = fs_close,
    .ping = fs_ping,
    .create_batch = fs_create_batch,
    .put_items = fs_put_items,
    .get_batch = fs_get_batch,
    .set_batch_status = fs_set_batch_status,
    .list_batches = fs_list_batches,
    .get_item = fs_get_item,
    .list_items = fs_list_items,
    .item_begin = fs_item_begin,
    .item_set_job = fs_item_set_job,
    .item_release_lease = fs_item_release_lease,
    .item_finish = fs_item_finish,
    .get_counts = fs_get_counts,
    .try_complete = fs_try_complete,
    .retry_failed = fs_retry_failed,
    .cancel_batch = fs_cancel_batch,
    .put_dead_letter = fs_put_dead_letter,
    .item_drop_job = fs_item_drop_job,
    .cache_get = fs_cache_get,
    .cache_put = fs_cache_put,
    .api_key_put = fs_api_key_put,
    .api_key_get = fs_api_key_get,
    .rate_count = fs_rate_count,
};

struct store *store_firestore_open(const struct firestore_store_options *o, struct error *err)
{
    struct fstore *st;
    struct store *store;

    if (!o) {
        error_set(err, ST_INVALID, NULL, "firestore store options are missing");
        return NULL;
    }
    if (o->put_chunk_writes < 0 || o->put_chunk_writes > PUT_CHUNK_MAX || o->put_parallel < 0 ||
        o->put_parallel > PARALLEL_MAX || o->tx_page < 0 || o->tx_page > LIST_LIMIT_MAX ||
        o->put_chunk_bytes > FIRESTORE_REQUEST_LIMIT - 65536 || o->idempotency_ttl_us < 0) {
        error_set(err, ST_INVALID, NULL,
                  "firestore store options out of range (chunk writes <= %d, parallel <= %d, "
                  "tx page <= %d, chunk bytes < 10 MiB)",
                  PUT_CHUNK_MAX, PARALLEL_MAX, LIST_LIMIT_MAX);
        return NULL;
    }
    st = xcalloc(1, sizeof(*st));
    st->fs = o->client;
    if (!st->fs) {
        st->fs = firestore_new(&o->client_options, err);
        if (!st->fs) {
            free(st);
            error_prefix(err, "cannot open firestore store");
            return NULL;
        }
        st->own_fs = true;
    }
    st->chunk_writes = o->put_chunk_writes ? o->put_chunk_writes : PUT_CHUNK_MAX;
    st->chunk_bytes = o->put_chunk_bytes ? o->put_chunk_bytes : DEFAULT_CHUNK_BYTES;
    st->parallel = o->put_parallel ? o->put_parallel : DEFAULT_PARALLEL;
    st->tx_page = o->tx_page ? o->tx_page : DEFAULT_TX_PAGE;
    st->idem_ttl_us = o->idempotency_ttl_us ? o->idempotency_ttl_us : IDEM_TTL_US;

    store = xcalloc(1, sizeof(*store));
    store->ops = &firestore_ops;
    store->state = st;
    store->name = "firestore";
    return store;
}

struct firestore *store_firestore_client(struct store *s)
{
    if (!s || s->ops != &firestore_ops)
        return NULL;
    return ((struct fstore *)s->state)->fs;
}
