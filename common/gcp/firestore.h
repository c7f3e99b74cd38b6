/*
 * firestore.h - a Firestore REST v1 client (reference gcp.md section 2) on
 * libcurl and jansson, without an SDK.
 *
 * Representation. Values are jansson objects in Firestore's own typed JSON
 * form, exactly as they travel: {"integerValue": "42"}, {"mapValue":
 * {"fields": {...}}}... The firestore_value_* builders make them from C
 * values and the readers take them apart, accepting every shape the server
 * may send (integers as strings or numbers, "NaN"/"Infinity" doubles, an
 * empty map without "fields", an empty array without "values", timestamps
 * with 0-9 fractional digits). Timestamps are int64 µs since the epoch on
 * the C side. firestore_value_from_json()/_to_json() convert whole plain
 * JSON documents (options, metadata) both ways.
 *
 * Documents are the REST Document objects ({"name", "fields", "createTime",
 * "updateTime"}); writes are REST Write objects built by firestore_write_*.
 * Keys inside "fields" are raw names; field paths (masks, transforms,
 * queries) are quoted with firestore_field_path().
 *
 * Calls. Every call sends "Authorization: Bearer <token>" from the
 * gcp_auth port, or "Bearer owner" when the client has no auth (the
 * emulator). Errors are read from error.status, not only from the HTTP
 * code (409 is ABORTED or ALREADY_EXISTS, 400 may be FAILED_PRECONDITION),
 * and mapped to our statuses:
 *
 *   ABORTED -> ST_ABORTED            ALREADY_EXISTS -> ST_ALREADY_EXISTS
 *   NOT_FOUND -> ST_NOT_FOUND        FAILED_PRECONDITION -> ST_FAILED_PRECONDITION
 *   RESOURCE_EXHAUSTED -> ST_RATE_LIMITED   UNAVAILABLE, CANCELLED -> ST_UNAVAILABLE
 *   DEADLINE_EXCEEDED -> ST_TIMEOUT  INVALID_ARGUMENT, OUT_OF_RANGE -> ST_INVALID
 *   UNAUTHENTICATED -> ST_UNAUTHENTICATED   PERMISSION_DENIED -> ST_PERMISSION_DENIED
 *   INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED -> ST_INTERNAL
 *
 * with err->code "firestore_<status in lowercase>" (e.g. firestore_aborted).
 *
 * Retries follow the official client's policy (gcp.md 2.1), with full-jitter
 * exponential backoff and max_attempts attempts per call:
 *   commit                        RESOURCE_EXHAUSTED, UNAVAILABLE (never DEADLINE_EXCEEDED:
 *                                 the commit may have applied)
 *   batchGet, runQuery, runAggregationQuery   UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED
 *   get, beginTransaction, rollback           RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL,
 *                                             DEADLINE_EXCEEDED
 *   batchWrite                    RESOURCE_EXHAUSTED, UNAVAILABLE, ABORTED, for the whole
 *                                 call and per write (only the failed writes are resent)
 * Transport failures count as UNAVAILABLE (connect, reset) or DEADLINE_EXCEEDED
 * (timeout). A 401 with a real auth drops the cached token and retries once.
 *
 * Metrics: firestore_calls_total{method,outcome} per HTTP attempt,
 * firestore_call_seconds{method}, firestore_documents_read_total{method}
 * (documents found by get/batchGet/runQuery; one per aggregation) and
 * firestore_documents_written_total{method} (writes committed, or applied by
 * batchWrite), firestore_transactions_total{outcome} per transaction attempt
 * (committed, read_only, aborted, failed). The same counts per client:
 * firestore_stats().
 *
 * Thread safety: a client is immutable after firestore_new() (its counters
 * are atomic); every call may run on any thread at once.
 */
#ifndef GCP_FIRESTORE_H
#define GCP_FIRESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/error.h"
#include "gcp/auth.h"
#include "http/client.h"

#define FIRESTORE_DEFAULT_BASE  "https://firestore.googleapis.com"
#define FIRESTORE_NAME_MAX      1024 /* our document names; Firestore allows 6 KiB */
#define FIRESTORE_PATH_MAX      1500 /* field path bytes (gcp.md 2.3) */
#define FIRESTORE_MAX_DEPTH     20   /* map/array nesting (gcp.md 2.3) */
#define FIRESTORE_REQUEST_LIMIT (10 * 1024 * 1024)

struct firestore;

/* ---- client ------------------------------------------------------------- */

struct firestore_options {
    /*
     * host:port of an emulator (the FIRESTORE_EMULATOR_HOST convention): the
     * base becomes http://host:port and no token is sent ("Bearer owner"),
     * auth being ignored. NULL or "": base_url is used.
     */
    const char *emulator_host;
    const char *base_url;      /* default FIRESTORE_DEFAULT_BASE */
    const char *project_id;    /* required */
    const char *database_id;   /* default "(default)" */
    struct gcp_auth *auth;     /* borrowed; NULL: no token, "Bearer owner" (emulator) */
    struct http_client *http;  /* borrowed; NULL: the client makes (and owns) its own */
    long timeout_ms;           /* per attempt; default 30000 */
    int max_attempts;          /* per call, first included; default 5 */
    long retry_base_ms;        /* backoff base; default 100 */
    long retry_cap_ms;         /* backoff cap; default 5000 */
    int tx_max_attempts;       /* attempts of a transaction; default 8 */
    size_t max_response_bytes; /* default 64 MiB */
};

/*
 * New client: caller frees with firestore_free(). NULL with err (ST_INVALID)
 * when the project id is missing or a name does not fit.
 */
struct firestore *firestore_new(const struct firestore_options *o, struct error *err);
void firestore_free(struct firestore *fs);

/* "projects/{p}/databases/{d}" and ".../documents". Borrowed, valid with fs. */
const char *firestore_database(const struct firestore *fs);
const char *firestore_root(const struct firestore *fs);
/* The base URL in use ("http://host:port" on an emulator). Borrowed. */
const char *firestore_base_url(const struct firestore *fs);

/*
 * Builds the full name of a document or collection under the root from
 * NULL-terminated path segments: firestore_name(fs, out, cap, err,
 * "batches", id, "items", item_id, NULL). Every segment must be a valid
 * id: non-empty, no '/', not "." or "..", not "__...__" (ST_INVALID);
 * ST_TOO_LARGE when out is too small.
 */
enum status firestore_name(const struct firestore *fs, char *out, size_t cap, struct error *err,
                           ...) __attribute__((sentinel));

/* True when seg can be a document or collection id. */
bool firestore_id_valid(const char *seg);

struct firestore_stats {
    uint64_t calls;   /* HTTP attempts */
    uint64_t retries; /* attempts that were retries */
    uint64_t reads;   /* documents read */
    uint64_t writes;  /* documents written */
    uint64_t aborts;  /* transaction attempts that ended ABORTED */
};

/* A snapshot of the client's counters. */
void firestore_stats(const struct firestore *fs, struct firestore_stats *out);

/* ---- values --------------------------------------------------------------- */

enum firestore_kind {
    FS_INVALID = 0, /* not a Value */
    FS_NULL,
    FS_BOOL,
    FS_INT,
    FS_DOUBLE,
    FS_TIMESTAMP,
    FS_STRING,
    FS_BYTES,
    FS_REFERENCE,
    FS_GEO,
    FS_ARRAY,
    FS_MAP,
};

/* Builders: each returns a new Value (caller frees with json_decref). */
json_t *firestore_value_null(void);
json_t *firestore_value_bool(bool b);
json_t *firestore_value_int(int64_t i);
json_t *firestore_value_double(double d); /* NaN and ±Inf as "NaN", "Infinity", "-Infinity" */
/* A timestamp; times outside years 0001-9999 are clamped to that range. */
json_t *firestore_value_timestamp(int64_t us);
/* NULL gives nullValue; bytes that are not UTF-8 become U+FFFD (Firestore stores UTF-8). */
json_t *firestore_value_string(const char *s);
json_t *firestore_value_stringn(const char *s, size_t n);
json_t *firestore_value_bytes(const void *data, size_t n); /* standard base64 */
json_t *firestore_value_reference(const char *name);
json_t *firestore_value_geo(double latitude, double longitude);
/* values: an array of Values (stolen, NULL for empty). */
json_t *firestore_value_array(json_t *values);
/* fields: an object of raw key -> Value (stolen, NULL for empty). */
json_t *firestore_value_map(json_t *fields);

/* The kind of a Value (FS_INVALID for anything else). */
enum firestore_kind firestore_value_kind(const json_t *v);

/*
 * Readers: false when v is not of that kind (or malformed: an integer
 * string out of int64 range, a bad timestamp...). Strings are borrowed from v.
 */
bool firestore_value_get_bool(const json_t *v, bool *out);
bool firestore_value_get_int(const json_t *v, int64_t *out);
/* Accepts doubleValue (numbers, "NaN", "Infinity", "-Infinity") and integerValue. */
bool firestore_value_get_double(const json_t *v, double *out);
bool firestore_value_get_timestamp(const json_t *v, int64_t *us);
bool firestore_value_get_string(const json_t *v, const char **out);
bool firestore_value_get_reference(const json_t *v, const char **out);
bool firestore_value_get_geo(const json_t *v, double *latitude, double *longitude);
/* Appends the decoded bytes to out (ST_INVALID when v is not valid bytes, ST_TOO_LARGE). */
enum status firestore_value_get_bytes(const json_t *v, struct buf *out);
/* Arrays: size (0 for an empty or non-array) and element i (borrowed, NULL past the end). */
size_t firestore_array_size(const json_t *v);
json_t *firestore_array_get(const json_t *v, size_t i);
/* Maps: the fields object (borrowed; NULL when empty or not a map) and one entry. */
json_t *firestore_map_fields(const json_t *v);
json_t *firestore_map_get(const json_t *v, const char *key);

/*
 * Plain JSON -> Value: null, booleans, integers (integerValue), reals
 * (doubleValue), strings, arrays and objects (mapValue). ST_INVALID, naming
 * the place, for what Firestore cannot store: an array directly inside an
 * array, an empty or "__...__" key, nesting deeper than FIRESTORE_MAX_DEPTH.
 * *out is a new reference.
 */
enum status firestore_value_from_json(const json_t *plain, json_t **out, struct error *err);

/*
 * Value -> plain JSON, the inverse for the kinds above (an integral double
 * stays a real). The other kinds become: timestamps RFC 3339 strings, bytes
 * standard base64 strings, references strings, geo points {"latitude",
 * "longitude"}, non-finite doubles the strings "NaN", "Infinity",
 * "-Infinity". ST_INVALID for a malformed Value. *out is a new reference.
 */
enum status firestore_value_to_json(const json_t *value, json_t **out, struct error *err);

/* ---- documents ------------------------------------------------------------ */

/* The document's name / last path segment / fields object (borrowed; NULL when absent). */
const char *firestore_doc_name(const json_t *doc);
const char *firestore_doc_id(const json_t *doc);
json_t *firestore_doc_fields(const json_t *doc);
/* One field's Value (borrowed) or NULL. */
json_t *firestore_doc_get(const json_t *doc, const char *key);
/* updateTime of the document (borrowed) or NULL. */
const char *firestore_doc_update_time(const json_t *doc);

/* ---- field paths ---------------------------------------------------------- */

/* True for a segment usable bare: [A-Za-z_][A-Za-z_0-9]*. */
bool firestore_field_simple(const char *segment);

/*
 * Appends one segment, quoted with backticks when not simple (inside, ` and
 * \ are escaped with \). ST_INVALID for an empty segment, ST_TOO_LARGE past
 * out's bound.
 */
enum status firestore_field_quote(struct buf *out, const char *segment);

/*
 * Writes the field path of n segments joined with '.' into out (cap bytes).
 * ST_INVALID for no or an empty segment, ST_TOO_LARGE when it does not fit
 * or exceeds FIRESTORE_PATH_MAX.
 */
enum status firestore_field_path(char *out, size_t cap, const char *const *segments, size_t n);

/* ---- writes --------------------------------------------------------------- */

/*
 * Write builders return a new Write (caller frees with json_decref, or hands
 * it to firestore_tx_write()). fields is an object of raw key -> Value,
 * stolen (NULL for none).
 *
 * _set overwrites the whole document; _update changes only the top-level
 * fields given (updateMask = their quoted names); _transform touches only
 * the fields of the transforms added afterwards (empty fields and mask).
 */
json_t *firestore_write_set(const char *name, json_t *fields);
json_t *firestore_write_update(const char *name, json_t *fields);
json_t *firestore_write_transform(const char *name);
json_t *firestore_write_delete(const char *name);
/* Adds a field path to an update's mask: the field is deleted when absent from fields. */
void firestore_write_mask_add(json_t *write, const char *field_path);
/* Preconditions: currentDocument.exists, or currentDocument.updateTime. */
void firestore_write_exists(json_t *write, bool exists);
void firestore_write_update_time(json_t *write, const char *update_time);
/* updateTransforms, applied in order after the update; value stolen. */
void firestore_write_increment(json_t *write, const char *field_path, json_t *value);
void firestore_write_maximum(json_t *write, const char *field_path, json_t *value);
void firestore_write_minimum(json_t *write, const char *field_path, json_t *value);
void firestore_write_request_time(json_t *write, const char *field_path);
/* Size of a write as sent (compact JSON bytes), for chunking. */
size_t firestore_write_size(const json_t *write);

/* ---- calls ---------------------------------------------------------------- */

/*
 * mask: a NULL-terminated list of field paths to return (NULL: all fields).
 * transaction: a transaction id, or NULL.
 */

/* GET of one document: *doc a new reference, ST_NOT_FOUND when missing. */
enum status firestore_get(struct firestore *fs, const char *name, const char *const *mask,
                          json_t **doc, struct error *err);

/*
 * batchGet of n documents. *docs: a new array of n elements aligned with
 * names, each the document or JSON null when missing. Read inside a
 * transaction this way on the emulator (never GET ?transaction=, gcp.md 2.13).
 */
enum status firestore_batch_get(struct firestore *fs, const char *const *names, size_t n,
                                const char *const *mask, const char *transaction, json_t **docs,
                                struct error *err);

/*
 * Commits writes (an array, borrowed) atomically and in order, inside
 * transaction when given. *response (optional, new reference): the commit
 * response (writeResults with transformResults, commitTime).
 */
enum status firestore_commit(struct firestore *fs, const json_t *writes, const char *transaction,
                             json_t **response, struct error *err);

/*
 * Begins a transaction: read-write (retrying retry_of when non-NULL, which
 * keeps its place in lock queues) or read-only. *transaction: malloc'd id,
 * caller frees with free().
 */
enum status firestore_begin_transaction(struct firestore *fs, bool read_only, const char *retry_of,
                                        char **transaction, struct error *err);
enum status firestore_rollback(struct firestore *fs, const char *transaction, struct error *err);

/*
 * runQuery of a structuredQuery (borrowed) under parent (firestore_root()
 * or a document name). *docs: a new array of the documents, in order.
 */
enum status firestore_run_query(struct firestore *fs, const char *parent, const json_t *query,
                                const char *transaction, json_t **docs, struct error *err);

/*
 * runAggregationQuery of a structuredAggregationQuery (borrowed).
 * *fields: a new object alias -> Value (aggregateFields).
 */
enum status firestore_run_aggregation(struct firestore *fs, const char *parent,
                                      const json_t *aggregation, const char *transaction,
                                      json_t **fields, struct error *err);

/*
 * batchWrite: writes (an array, borrowed; at most one per document) applied
 * independently, not atomically. codes[i] receives the final gRPC code of
 * write i (0 OK, 6 ALREADY_EXISTS, ...; -1 when no answer came for it);
 * writes failing with ABORTED, RESOURCE_EXHAUSTED or UNAVAILABLE are resent
 * alone, up to max_attempts rounds. Returns ST_OK when the calls themselves
 * succeeded, whatever the codes; otherwise the call's error.
 */
enum status firestore_batch_write(struct firestore *fs, const json_t *writes, int *codes,
                                  struct error *err);

/* ---- transactions ----------------------------------------------------------- */

struct firestore_tx;

/*
 * The body of a transaction: reads with firestore_tx_get()/_query(), then
 * queues writes with firestore_tx_write(). It may run several times, so it
 * must reset whatever it outputs at its start (firestore_tx_attempt() says
 * which run it is). ST_OK commits the queued writes; anything else rolls
 * back and is returned (ST_ABORTED retries the whole function).
 */
typedef enum status (*firestore_tx_fn)(struct firestore_tx *tx, void *ud, struct error *err);

/*
 * Runs fn in a read-write transaction. The transaction starts with fn's
 * first read (newTransaction on that read, which saves a round trip); a
 * function that writes without reading commits its writes atomically
 * without a transaction. With no writes queued the transaction is rolled
 * back (its locks released) and ST_OK returned. On ABORTED (from a read or
 * the commit) the attempt is rolled back and the whole function runs again
 * in a new transaction that retries the old one (retryTransaction), after a
 * jittered backoff, up to tx_max_attempts times; then ST_ABORTED. Any other
 * failure rolls back and is returned.
 */
enum status firestore_run_transaction(struct firestore *fs, firestore_tx_fn fn, void *ud,
                                      struct error *err);

/* Reads inside the transaction (see firestore_batch_get / firestore_run_query). */
enum status firestore_tx_get(struct firestore_tx *tx, const char *const *names, size_t n,
                             const char *const *mask, json_t **docs, struct error *err);
enum status firestore_tx_query(struct firestore_tx *tx, const char *parent, const json_t *query,
                               json_t **docs, struct error *err);
/* Queues a write (stolen) for the commit. */
void firestore_tx_write(struct firestore_tx *tx, json_t *write);
/* Writes queued so far and their size in bytes (to stay within the request limit). */
size_t firestore_tx_write_count(const struct firestore_tx *tx);
size_t firestore_tx_write_bytes(const struct firestore_tx *tx);
/* 1 for the first run of fn, 2 for the first retry... */
int firestore_tx_attempt(const struct firestore_tx *tx);
/* The client (borrowed). */
struct firestore *firestore_tx_client(const struct firestore_tx *tx);

/* ---- errors and framing (exposed for tests) ------------------------------- */

/* gRPC codes by name ("ABORTED" -> 10); -1 when unknown. And back (NULL when unknown). */
int firestore_rpc_code(const char *name);
const char *firestore_rpc_name(int code);
/* Our status for a gRPC code. */
enum status firestore_rpc_status(int code);

/*
 * The status of a response: ST_OK for 2xx without an error object;
 * otherwise from error.status (or a numeric error.code), falling back to
 * the HTTP status; err names method, status and message. *rpc (optional)
 * receives the gRPC code (0 for OK).
 */
enum status firestore_response_status(const char *method, long http, const json_t *body, int *rpc,
                                      struct error *err);

/*
 * Parses a runQuery (or batchGet, runAggregationQuery) response body: a
 * JSON array of elements, or a top-level {"error"} object. Fails on the
 * error object or on any element carrying "error". On success *elements is
 * a new array of the elements, *transaction (optional) a malloc'd copy of
 * the first element's transaction (NULL when none).
 */
enum status firestore_parse_stream(const char *method, long http, const json_t *body,
                                   json_t **elements, char **transaction, struct error *err);

/* The documents of a parsed runQuery stream (new array; elements without "document" skipped). */
json_t *firestore_stream_documents(const json_t *elements);

#endif
