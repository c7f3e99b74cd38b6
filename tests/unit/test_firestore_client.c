/*
 * The Firestore client against Google's Firestore emulator
 * (FIRESTORE_EMULATOR_HOST), directly and through firestore-proxy with
 * injected ABORTED / UNAVAILABLE / RESOURCE_EXHAUSTED: preconditions,
 * transforms, values as stored, batchWrite statuses, queries and
 * aggregations, the transaction runner under contention and faults, and
 * the store's reads and writes per processed item as the proxy counts them.
 *
 * Without FIRESTORE_EMULATOR_HOST the suite is skipped (exit 77), unless
 * REQUIRE_FIRESTORE_EMULATOR=1 makes that a failure.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch/model.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/firestore.h"
#include "http/client.h"
#include "store/firestore_store.h"

#ifndef FS_PROXY_BIN
#error "FS_PROXY_BIN must name the firestore-proxy executable"
#endif

extern char **environ;

static const char *emulator;
static char project[64];
static struct http_client *http;
static struct firestore *FS; /* straight to the emulator */

/* ---- fixtures ------------------------------------------------------------- */

static void wipe(void)
{
    const char *headers[] = {"Authorization: Bearer owner", NULL};
    struct http_call call = {.method = "DELETE", .headers = headers, .timeout_ms = 10000};
    struct http_result res;
    struct error err = {0};
    char url[256];
    int attempt;

    ck_assert(str_printf(url, sizeof(url),
                         "http://%s/emulator/v1/projects/%s/databases/(default)/documents",
                         emulator, project));
    call.url = url;
    http_result_init(&res);
    for (attempt = 1; attempt <= 40; attempt++) {
        if (http_client_do(http, &call, &res, &err) == ST_OK && res.status == 200)
            break;
        time_sleep_ms(500);
    }
    ck_assert_msg(res.status == 200, "cannot wipe the emulator: %s", err.message);
    http_result_release(&res);
}

static struct firestore *client_for(const char *host, int max_attempts, int tx_attempts)
{
    struct firestore_options o = {.emulator_host = host,
                                  .project_id = project,
                                  .http = http,
                                  .max_attempts = max_attempts,
                                  .retry_base_ms = 10,
                                  .retry_cap_ms = 200,
                                  .tx_max_attempts = tx_attempts};
    struct error err = {0};
    struct firestore *fs = firestore_new(&o, &err);

    ck_assert_msg(fs != NULL, "%s", err.message);
    return fs;
}

static void setup(void)
{
    wipe();
    FS = client_for(emulator, 0, 0);
}

static void teardown(void)
{
    firestore_free(FS);
    FS = NULL;
}

static void name_of(char *out, const char *col, const char *id)
{
    struct error err = {0};

    ck_assert_int_eq(firestore_name(FS, out, FIRESTORE_NAME_MAX, &err, col, id, NULL), ST_OK);
}

/* Commits one write (stolen) and returns the status. */
static enum status commit1(struct firestore *fs, json_t *w, json_t **resp, struct error *err)
{
    json_t *writes = json_array();
    enum status s;

    json_array_append_new(writes, w);
    s = firestore_commit(fs, writes, NULL, resp, err);
    json_decref(writes);
    return s;
}

static int64_t get_int(struct firestore *fs, const char *name, const char *field)
{
    struct error err = {0};
    json_t *doc = NULL;
    int64_t v = -1;

    ck_assert_msg(firestore_get(fs, name, NULL, &doc, &err) == ST_OK, "%s", err.message);
    ck_assert(firestore_value_get_int(firestore_doc_get(doc, field), &v));
    json_decref(doc);
    return v;
}

/* ---- commits -------------------------------------------------------------- */

START_TEST(commit_preconditions)
{
    char name[FIRESTORE_NAME_MAX], other[FIRESTORE_NAME_MAX];
    const char *const mask[] = {"b", NULL};
    struct error err = {0};
    json_t *f, *w, *doc = NULL, *resp = NULL;
    char stale[64];

    name_of(name, "jobs", "j1");
    name_of(other, "jobs", "missing");
    f = json_pack("{s:o, s:o}", "a", firestore_value_int(1), "b", firestore_value_string("x"));
    w = firestore_write_set(name, f);
    firestore_write_exists(w, false);
    ck_assert_int_eq(commit1(FS, json_incref(w), &resp, &err), ST_OK);
    str_copy(stale, sizeof(stale),
             json_string_value(json_object_get(
                 json_array_get(json_object_get(resp, "writeResults"), 0), "updateTime")));
    json_decref(resp);
    /* The same create again: ALREADY_EXISTS, and it is not retried (one call). */
    {
        const char *labels[] = {"commit", "already_exists"};
        struct metric *m = metric_counter("firestore_calls_total", "", "method,outcome");
        double before = metric_value(m, labels);
        struct firestore_stats st0, st1;

        firestore_stats(FS, &st0);
        ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_ALREADY_EXISTS);
        firestore_stats(FS, &st1);
        ck_assert_uint_eq(st1.calls - st0.calls, 1);
        ck_assert(metric_value(m, labels) == before + 1);
    }
    ck_assert_str_eq(err.code, "firestore_already_exists");

    w = firestore_write_update(other, json_pack("{s:o}", "a", firestore_value_int(2)));
    firestore_write_exists(w, true);
    ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_NOT_FOUND);

    /* updateTime: the current one passes, then it is stale. */
    w = firestore_write_update(name, json_pack("{s:o}", "a", firestore_value_int(3)));
    firestore_write_update_time(w, stale);
    ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_OK);
    w = firestore_write_update(name, json_pack("{s:o}", "a", firestore_value_int(4)));
    firestore_write_update_time(w, stale);
    ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_FAILED_PRECONDITION);
    ck_assert_int_eq(get_int(FS, name, "a"), 3);

    /* A masked get; a missing document. */
    ck_assert_int_eq(firestore_get(FS, name, mask, &doc, &err), ST_OK);
    ck_assert_ptr_null(firestore_doc_get(doc, "a"));
    ck_assert_ptr_nonnull(firestore_doc_get(doc, "b"));
    json_decref(doc);
    ck_assert_int_eq(firestore_get(FS, other, NULL, &doc, &err), ST_NOT_FOUND);
    ck_assert_ptr_null(doc);

    /* A mask path absent from the fields deletes the field. */
    w = firestore_write_update(name, NULL);
    firestore_write_mask_add(w, "b");
    ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_OK);
    ck_assert_int_eq(firestore_get(FS, name, NULL, &doc, &err), ST_OK);
    ck_assert_ptr_null(firestore_doc_get(doc, "b"));
    json_decref(doc);
    ck_assert_int_eq(commit1(FS, firestore_write_delete(name), NULL, &err), ST_OK);
    ck_assert_int_eq(firestore_get(FS, name, NULL, &doc, &err), ST_NOT_FOUND);
}
END_TEST

START_TEST(transforms_with_empty_mask)
{
    char name[FIRESTORE_NAME_MAX];
    struct error err = {0};
    json_t *w, *resp = NULL, *results, *doc = NULL;
    int64_t v, t;
    double d;

    name_of(name, "stats", "shard_07");
    /* Only transforms: the document is created by the first increment. */
    w = firestore_write_transform(name);
    firestore_write_increment(w, "count", firestore_value_int(1));
    ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_OK);
    w = firestore_write_transform(name);
    firestore_write_increment(w, "count", firestore_value_int(41));
    firestore_write_increment(w, "sum", firestore_value_double(0.5));
    firestore_write_maximum(w, "max", firestore_value_int(7));
    firestore_write_minimum(w, "min", firestore_value_int(-7));
    firestore_write_request_time(w, "lastAt");
    ck_assert_int_eq(commit1(FS, w, &resp, &err), ST_OK);
    results = json_object_get(json_array_get(json_object_get(resp, "writeResults"), 0),
                              "transformResults");
    ck_assert_uint_eq(json_array_size(results), 5);
    ck_assert(firestore_value_get_int(json_array_get(results, 0), &v));
    ck_assert_int_eq(v, 42);
    ck_assert(firestore_value_get_timestamp(json_array_get(results, 4), &t));
    ck_assert_int_lt(llabs(t - time_now_us()), 60 * 1000000LL);
    json_decref(resp);

    /* Transforms touch nothing else; exists=true on a missing shard fails the whole commit. */
    w = firestore_write_update(name, json_pack("{s:o}", "label", firestore_value_string("x")));
    ck_assert_int_eq(commit1(FS, w, NULL, &err), ST_OK);
    ck_assert_int_eq(get_int(FS, name, "count"), 42);
    {
        char missing[FIRESTORE_NAME_MAX];
        json_t *writes = json_array();

        name_of(missing, "stats", "shard_99");
        w = firestore_write_transform(name);
        firestore_write_increment(w, "count", firestore_value_int(1));
        json_array_append_new(writes, w);
        w = firestore_write_transform(missing);
        firestore_write_exists(w, true);
        firestore_write_increment(w, "count", firestore_value_int(1));
        json_array_append_new(writes, w);
        ck_assert_int_eq(firestore_commit(FS, writes, NULL, NULL, &err), ST_NOT_FOUND);
        json_decref(writes);
    }
    ck_assert_int_eq(firestore_get(FS, name, NULL, &doc, &err), ST_OK);
    ck_assert(firestore_value_get_int(firestore_doc_get(doc, "count"), &v));
    ck_assert_int_eq(v, 42); /* atomic: the first write did not apply either */
    ck_assert(firestore_value_get_double(firestore_doc_get(doc, "sum"), &d));
    ck_assert(d == 0.5);
    ck_assert(firestore_value_get_int(firestore_doc_get(doc, "max"), &v));
    ck_assert_int_eq(v, 7);
    json_decref(doc);
}
END_TEST

START_TEST(values_as_stored)
{
    static const char *const odd_keys[] = {"a.b",         "x-y", "1abc",      "bak`tik",
                                           "back\\slash", "ünï", "with space"};
    unsigned char bytes[256];
    char name[FIRESTORE_NAME_MAX], path[64];
    struct error err = {0};
    json_t *f, *doc = NULL, *plain = NULL, *back = NULL, *w;
    const char *mask[2] = {NULL, NULL};
    struct buf b;
    int64_t i64;
    double d;
    size_t i;

    for (i = 0; i < sizeof(bytes); i++)
        bytes[i] = (unsigned char)i;
    name_of(name, "values", "all");
    plain = json_loads("{\"nested\":{\"a\":[1,2.5,null,\"s\",{\"deep\":{}}],\"e\":[]},"
                       "\"ключ\":\"значение\"}",
                       0, NULL);
    f = json_object();
    json_object_set_new(f, "max", firestore_value_int(INT64_MAX));
    json_object_set_new(f, "min", firestore_value_int(INT64_MIN));
    json_object_set_new(f, "nan", firestore_value_double(NAN));
    json_object_set_new(f, "inf", firestore_value_double(INFINITY));
    json_object_set_new(f, "ninf", firestore_value_double(-INFINITY));
    json_object_set_new(f, "tiny", firestore_value_double(4.9e-324));
    json_object_set_new(f, "bytes", firestore_value_bytes(bytes, sizeof(bytes)));
    json_object_set_new(f, "ts", firestore_value_timestamp(1767225600123456));
    json_object_set_new(f, "old", firestore_value_timestamp(-1));
    json_object_set_new(f, "emptyMap", firestore_value_map(NULL));
    json_object_set_new(f, "emptyArray", firestore_value_array(NULL));
    json_object_set_new(f, "geo", firestore_value_geo(-33.5, 151.25));
    json_object_set_new(f, "ref", firestore_value_reference(name));
    ck_assert_int_eq(firestore_value_from_json(plain, &w, &err), ST_OK);
    json_object_set_new(f, "plain", w);
    for (i = 0; i < ARRAY_SIZE(odd_keys); i++)
        json_object_set_new(f, odd_keys[i], firestore_value_int((int64_t)i));
    ck_assert_int_eq(commit1(FS, firestore_write_set(name, f), NULL, &err), ST_OK);

    ck_assert_int_eq(firestore_get(FS, name, NULL, &doc, &err), ST_OK);
    ck_assert(firestore_value_get_int(firestore_doc_get(doc, "max"), &i64));
    ck_assert_int_eq(i64, INT64_MAX);
    ck_assert(firestore_value_get_int(firestore_doc_get(doc, "min"), &i64));
    ck_assert_int_eq(i64, INT64_MIN);
    ck_assert(firestore_value_get_double(firestore_doc_get(doc, "nan"), &d) && isnan(d));
    ck_assert(firestore_value_get_double(firestore_doc_get(doc, "inf"), &d) && d == INFINITY);
    ck_assert(firestore_value_get_double(firestore_doc_get(doc, "ninf"), &d) && d == -INFINITY);
    ck_assert(firestore_value_get_double(firestore_doc_get(doc, "tiny"), &d) && d == 4.9e-324);
    buf_init(&b, 1024);
    ck_assert_int_eq(firestore_value_get_bytes(firestore_doc_get(doc, "bytes"), &b), ST_OK);
    ck_assert_uint_eq(b.len, sizeof(bytes));
    ck_assert(memcmp(b.data, bytes, sizeof(bytes)) == 0);
    buf_release(&b);
    ck_assert(firestore_value_get_timestamp(firestore_doc_get(doc, "ts"), &i64));
    ck_assert_int_eq(i64, 1767225600123456);
    ck_assert(firestore_value_get_timestamp(firestore_doc_get(doc, "old"), &i64));
    ck_assert_int_eq(i64, -1);
    ck_assert_int_eq(firestore_value_kind(firestore_doc_get(doc, "emptyMap")), FS_MAP);
    ck_assert_int_eq(firestore_value_kind(firestore_doc_get(doc, "emptyArray")), FS_ARRAY);
    ck_assert_uint_eq(firestore_array_size(firestore_doc_get(doc, "emptyArray")), 0);
    ck_assert_int_eq(firestore_value_to_json(firestore_doc_get(doc, "plain"), &back, &err), ST_OK);
    ck_assert_msg(json_equal(back, plain), "plain json changed on the way");
    json_decref(back);
    json_decref(doc);

    /* Odd field names need quoted paths in masks; the keys in "fields" stay raw. */
    for (i = 0; i < ARRAY_SIZE(odd_keys); i++) {
        const char *seg[1] = {odd_keys[i]};

        ck_assert_int_eq(firestore_field_path(path, sizeof(path), seg, 1), ST_OK);
        w = firestore_write_update(
            name, json_pack("{s:o}", odd_keys[i], firestore_value_int(100 + (int64_t)i)));
        ck_assert_msg(commit1(FS, w, NULL, &err) == ST_OK, "%s: %s", odd_keys[i], err.message);
        mask[0] = path;
        ck_assert_msg(firestore_get(FS, name, mask, &doc, &err) == ST_OK, "%s: %s", path,
                      err.message);
        ck_assert_uint_eq(json_object_size(firestore_doc_fields(doc)), 1);
        ck_assert(firestore_value_get_int(firestore_doc_get(doc, odd_keys[i]), &i64));
        ck_assert_int_eq(i64, 100 + (int64_t)i);
        json_decref(doc);
    }
    json_decref(plain);
}
END_TEST

START_TEST(batch_get_aligns)
{
    char a[FIRESTORE_NAME_MAX], b[FIRESTORE_NAME_MAX], c[FIRESTORE_NAME_MAX];
    const char *names[] = {a, b, a, c};
    const char *const mask[] = {"v", NULL};
    struct error err = {0};
    json_t *docs = NULL;

    name_of(a, "bg", "a");
    name_of(b, "bg", "b");
    name_of(c, "bg", "c");
    ck_assert_int_eq(
        commit1(FS,
                firestore_write_set(a, json_pack("{s:o, s:o}", "v", firestore_value_int(1), "w",
                                                 firestore_value_int(2))),
                NULL, &err),
        ST_OK);
    ck_assert_int_eq(
        commit1(FS, firestore_write_set(c, json_pack("{s:o}", "v", firestore_value_int(3))), NULL,
                &err),
        ST_OK);
    ck_assert_int_eq(firestore_batch_get(FS, names, 4, mask, NULL, &docs, &err), ST_OK);
    ck_assert_uint_eq(json_array_size(docs), 4);
    ck_assert_str_eq(firestore_doc_name(json_array_get(docs, 0)), a);
    ck_assert(json_is_null(json_array_get(docs, 1)));
    ck_assert_str_eq(firestore_doc_name(json_array_get(docs, 2)), a); /* duplicates elided */
    ck_assert_str_eq(firestore_doc_name(json_array_get(docs, 3)), c);
    ck_assert_ptr_null(firestore_doc_get(json_array_get(docs, 0), "w")); /* masked */
    json_decref(docs);
}
END_TEST

START_TEST(batch_write_statuses)
{
    char a[FIRESTORE_NAME_MAX], b[FIRESTORE_NAME_MAX], c[FIRESTORE_NAME_MAX];
    struct error err = {0};
    json_t *writes = json_array(), *w;
    int codes[3];

    name_of(a, "bw", "a");
    name_of(b, "bw", "b");
    name_of(c, "bw", "c");
    ck_assert_int_eq(commit1(FS, firestore_write_set(b, NULL), NULL, &err), ST_OK);
    w = firestore_write_set(a, json_pack("{s:o}", "v", firestore_value_int(1)));
    firestore_write_exists(w, false);
    json_array_append_new(writes, w);
    w = firestore_write_set(b, json_pack("{s:o}", "v", firestore_value_int(1)));
    firestore_write_exists(w, false);
    json_array_append_new(writes, w);
    w = firestore_write_update(c, json_pack("{s:o}", "v", firestore_value_int(1)));
    firestore_write_exists(w, true);
    json_array_append_new(writes, w);
    ck_assert_int_eq(firestore_batch_write(FS, writes, codes, &err), ST_OK);
    ck_assert_int_eq(codes[0], 0);
    ck_assert_int_eq(codes[1], 6); /* ALREADY_EXISTS */
    ck_assert_int_eq(codes[2], 5); /* NOT_FOUND */
    json_decref(writes);
    ck_assert_int_eq(get_int(FS, a, "v"), 1);
}
END_TEST

START_TEST(queries_and_aggregations)
{
    char name[FIRESTORE_NAME_MAX], id[16];
    struct error err = {0};
    json_t *writes = json_array(), *q, *docs = NULL, *agg, *fields = NULL;
    int codes[30];
    int64_t v;
    int i;

    for (i = 0; i < 30; i++) {
        str_printf(id, sizeof(id), "d%02d", i);
        name_of(name, "q", id);
        json_array_append_new(
            writes, firestore_write_set(name, json_pack("{s:o, s:o}", "n", firestore_value_int(i),
                                                        "odd", firestore_value_bool(i % 2))));
    }
    ck_assert_int_eq(firestore_batch_write(FS, writes, codes, &err), ST_OK);
    json_decref(writes);

    /* odd == true, n descending, after n = 21, skip 1, 3 of them: 17, 15, 13. */
    q = json_loads("{\"from\":[{\"collectionId\":\"q\"}],"
                   "\"where\":{\"fieldFilter\":{\"field\":{\"fieldPath\":\"odd\"},\"op\":\"EQUAL\","
                   "\"value\":{\"booleanValue\":true}}},"
                   "\"orderBy\":[{\"field\":{\"fieldPath\":\"n\"},\"direction\":\"DESCENDING\"}],"
                   "\"startAt\":{\"values\":[{\"integerValue\":\"21\"}],\"before\":false},"
                   "\"offset\":1,\"limit\":3}",
                   0, NULL);
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(firestore_run_query(FS, firestore_root(FS), q, NULL, &docs, &err), ST_OK);
    ck_assert_uint_eq(json_array_size(docs), 3);
    ck_assert(firestore_value_get_int(firestore_doc_get(json_array_get(docs, 0), "n"), &v));
    ck_assert_int_eq(v, 17);
    ck_assert(firestore_value_get_int(firestore_doc_get(json_array_get(docs, 2), "n"), &v));
    ck_assert_int_eq(v, 13);
    json_decref(docs);
    json_decref(q);

    /* No results is an empty array, not an error. */
    q = json_loads("{\"from\":[{\"collectionId\":\"nothing\"}]}", 0, NULL);
    ck_assert_int_eq(firestore_run_query(FS, firestore_root(FS), q, NULL, &docs, &err), ST_OK);
    ck_assert_uint_eq(json_array_size(docs), 0);
    json_decref(docs);
    json_decref(q);

    agg = json_loads("{\"structuredQuery\":{\"from\":[{\"collectionId\":\"q\"}]},"
                     "\"aggregations\":[{\"alias\":\"n\",\"count\":{}},"
                     "{\"alias\":\"total\",\"sum\":{\"field\":{\"fieldPath\":\"n\"}}}]}",
                     0, NULL);
    ck_assert_int_eq(firestore_run_aggregation(FS, firestore_root(FS), agg, NULL, &fields, &err),
                     ST_OK);
    ck_assert(firestore_value_get_int(json_object_get(fields, "n"), &v));
    ck_assert_int_eq(v, 30);
    ck_assert(firestore_value_get_int(json_object_get(fields, "total"), &v));
    ck_assert_int_eq(v, 435);
    json_decref(fields);
    json_decref(agg);

    /* A malformed query: the error of the stream, mapped. */
    q = json_loads("{\"from\":[{\"collectionId\":\"q\"}],\"where\":{\"fieldFilter\":{\"field\":"
                   "{\"fieldPath\":\"n\"},\"op\":\"BOGUS\",\"value\":{\"integerValue\":\"1\"}}}}",
                   0, NULL);
    ck_assert_int_eq(firestore_run_query(FS, firestore_root(FS), q, NULL, &docs, &err), ST_INVALID);
    json_decref(q);
}
END_TEST

/* ---- transactions -------------------------------------------------------------- */

struct incr_args {
    struct firestore *fs;
    const char *name;
    enum status fail_with; /* ST_OK: commit normally */
};

static enum status incr_fn(struct firestore_tx *tx, void *ud, struct error *err)
{
    struct incr_args *a = ud;
    const char *names[1] = {a->name};
    json_t *docs = NULL;
    int64_t n = 0;
    enum status s;

    if ((s = firestore_tx_get(tx, names, 1, NULL, &docs, err)))
        return s;
    firestore_value_get_int(firestore_doc_get(json_array_get(docs, 0), "n"), &n);
    json_decref(docs);
    firestore_tx_write(
        tx, firestore_write_update(a->name, json_pack("{s:o}", "n", firestore_value_int(n + 1))));
    if (a->fail_with != ST_OK)
        return error_set(err, a->fail_with, NULL, "the body gave up");
    return ST_OK;
}

struct incr_thread {
    struct incr_args args;
    int times;
    int errors;
    int transient; /* failures the caller retried */
};

/*
 * A transient failure (a read answered RESOURCE_EXHAUSTED, which reads do not
 * retry; retries spent) is retried by the caller, as a queue would redeliver:
 * the count stays exact because a failed transaction applied nothing.
 */
static void *incr_main(void *p)
{
    struct incr_thread *t = p;
    enum status s;
    int i;

    for (i = 0; i < t->times; i++) {
        struct error err = {0};

        while ((s = firestore_run_transaction(t->args.fs, incr_fn, &t->args, &err)) != ST_OK &&
               status_is_transient(s) && t->transient < 1000)
            t->transient++;
        if (s != ST_OK) {
            fprintf(stderr, "increment failed: %s\n", err.message);
            t->errors++;
        }
    }
    return NULL;
}

/* Two threads increment one document `times` times each through the runner. */
static void contend(struct firestore *fs, const char *name, int times)
{
    struct incr_thread t[2] = {{{fs, name, ST_OK}, times, 0, 0}, {{fs, name, ST_OK}, times, 0, 0}};
    struct firestore_stats st;
    pthread_t th[2];
    int64_t t0 = time_mono_ms();
    int i;

    for (i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, incr_main, &t[i]), 0);
    for (i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    firestore_stats(fs, &st);
    fprintf(stderr,
            "2 threads x %d increments: %lld ms, %llu calls, %llu aborted attempts, %d transient "
            "failures retried by the caller\n",
            times, (long long)(time_mono_ms() - t0), (unsigned long long)st.calls,
            (unsigned long long)st.aborts, t[0].transient + t[1].transient);
    ck_assert_int_eq(t[0].errors + t[1].errors, 0);
    ck_assert_int_eq(get_int(FS, name, "n"), 2 * times);
}

START_TEST(transaction_contention_is_exact)
{
    char name[FIRESTORE_NAME_MAX];

    name_of(name, "counters", "c");
    contend(FS, name, 50);
}
END_TEST

START_TEST(transaction_failures_roll_back)
{
    char name[FIRESTORE_NAME_MAX];
    struct incr_args a = {FS, NULL, ST_FAILED_PRECONDITION};
    struct error err = {0};
    char *tx = NULL;

    name_of(name, "counters", "r");
    a.name = name;
    ck_assert_int_eq(commit1(FS, firestore_write_set(name, NULL), NULL, &err), ST_OK);
    ck_assert_int_eq(firestore_run_transaction(FS, incr_fn, &a, &err), ST_FAILED_PRECONDITION);
    ck_assert_str_eq(err.message, "the body gave up");
    /* Rolled back: its lock is gone, a second transaction commits at once. */
    a.fail_with = ST_OK;
    ck_assert_int_eq(firestore_run_transaction(FS, incr_fn, &a, &err), ST_OK);
    ck_assert_int_eq(get_int(FS, name, "n"), 1);

    /* The explicit calls. */
    ck_assert_int_eq(firestore_begin_transaction(FS, true, NULL, &tx, &err), ST_OK);
    ck_assert_ptr_nonnull(tx);
    ck_assert_int_eq(firestore_rollback(FS, tx, &err), ST_OK);
    free(tx);
    ck_assert_int_eq(firestore_begin_transaction(FS, false, NULL, &tx, &err), ST_OK);
    {
        const char *names[1] = {name};
        json_t *docs = NULL, *writes = json_array();

        ck_assert_int_eq(firestore_batch_get(FS, names, 1, NULL, tx, &docs, &err), ST_OK);
        json_decref(docs);
        json_array_append_new(
            writes, firestore_write_update(name, json_pack("{s:o}", "n", firestore_value_int(10))));
        ck_assert_int_eq(firestore_commit(FS, writes, tx, NULL, &err), ST_OK);
        json_decref(writes);
    }
    free(tx);
    ck_assert_int_eq(get_int(FS, name, "n"), 10);
}
END_TEST

/* ---- through the proxy ------------------------------------------------------------ */

static pid_t proxy_pid;
static char proxy_host[64];
static char port_file[128];

static void proxy_start(void)
{
    char target[160], port_env[160], text[16] = "";
    const char *overrides[] = {target, port_env, "LOG_LEVEL=WARNING", "PROXY_SEED=7"};
    const char *envp[256], *argv[] = {FS_PROXY_BIN, NULL};
    size_t n = 0, i;
    FILE *f;
    int tries;

    str_printf(port_file, sizeof(port_file), "/tmp/fs_proxy_port_%ld", (long)getpid());
    unlink(port_file);
    str_printf(target, sizeof(target), "FIRESTORE_TARGET=%s", emulator);
    str_printf(port_env, sizeof(port_env), "PROXY_PORT_FILE=%s", port_file);
    for (i = 0; environ[i] && n < ARRAY_SIZE(envp) - ARRAY_SIZE(overrides) - 1; i++) {
        if (!str_starts_with(environ[i], "FIRESTORE_TARGET=") &&
            !str_starts_with(environ[i], "PROXY_") && !str_starts_with(environ[i], "PORT=") &&
            !str_starts_with(environ[i], "LOG_LEVEL="))
            envp[n++] = environ[i];
    }
    for (i = 0; i < ARRAY_SIZE(overrides); i++)
        envp[n++] = overrides[i];
    envp[n] = NULL;
    proxy_pid = fork();
    ck_assert_int_ge(proxy_pid, 0);
    if (proxy_pid == 0) {
        execve(FS_PROXY_BIN, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    for (tries = 0; tries < 200; tries++) {
        f = fopen(port_file, "r");
        if (f) {
            bool ok = fgets(text, sizeof(text), f) != NULL;

            fclose(f);
            if (ok)
                break;
        }
        time_sleep_ms(25);
    }
    ck_assert_msg(text[0], "firestore-proxy did not start");
    text[strcspn(text, "\n")] = '\0';
    str_printf(proxy_host, sizeof(proxy_host), "127.0.0.1:%s", text);
}

static void proxy_stop(void)
{
    int status = 0;

    if (proxy_pid > 0) {
        kill(proxy_pid, SIGTERM);
        waitpid(proxy_pid, &status, 0);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "firestore-proxy ended with status %d", status);
    }
    proxy_pid = 0;
    unlink(port_file);
}

/* POST/GET on the proxy's control API; *out (optional) the answer. */
static void proxy_call(const char *method, const char *path, const char *body, json_t **out)
{
    struct http_call call = {.method = method, .timeout_ms = 10000};
    struct error err = {0};
    json_t *req = body ? json_loads(body, 0, NULL) : NULL, *answer = NULL;
    char url[256];
    long status = 0;

    str_printf(url, sizeof(url), "http://%s%s", proxy_host, path);
    call.url = url;
    ck_assert_int_eq(http_client_json(http, &call, req, &status, &answer, &err), ST_OK);
    ck_assert_msg(status == 200, "%s %s: %ld", method, path, status);
    json_decref(req);
    if (out)
        *out = answer;
    else
        json_decref(answer);
}

static int64_t proxy_total(const char *what)
{
    json_t *stats = NULL;
    int64_t v;

    proxy_call("GET", "/proxy/stats", NULL, &stats);
    v = json_integer_value(json_object_get(json_object_get(stats, "totals"), what));
    json_decref(stats);
    return v;
}

static void proxy_setup(void)
{
    setup();
    proxy_start();
}

static void proxy_teardown(void)
{
    proxy_stop();
    teardown();
}

START_TEST(faults_leave_transactions_exact)
{
    struct firestore *pfs = client_for(proxy_host, 12, 30);
    char name[FIRESTORE_NAME_MAX];

    proxy_call("POST", "/proxy/control",
               "{\"abortRate\":0.2,\"unavailableRate\":0.1,\"exhaustedRate\":0.05}", NULL);
    name_of(name, "counters", "faulty");
    contend(pfs, name, 25);
    fprintf(stderr, "proxy: %lld calls, %lld aborted, %lld unavailable, %lld exhausted\n",
            (long long)proxy_total("calls"), (long long)proxy_total("aborted"),
            (long long)proxy_total("unavailable"), (long long)proxy_total("exhausted"));
    ck_assert_int_gt(proxy_total("aborted"), 0);
    ck_assert_int_gt(proxy_total("unavailable"), 0);
    firestore_free(pfs);
}
END_TEST

START_TEST(faults_leave_batch_write_exact)
{
    struct firestore *pfs = client_for(proxy_host, 12, 30);
    char name[FIRESTORE_NAME_MAX], id[16];
    struct error err = {0};
    json_t *writes = json_array(), *w, *agg, *fields = NULL;
    int codes[300];
    int64_t n = 0;
    int i;

    proxy_call("POST", "/proxy/control",
               "{\"abortRate\":0.3,\"unavailableRate\":0.1,\"exhaustedRate\":0.1}", NULL);
    for (i = 0; i < 300; i++) {
        str_printf(id, sizeof(id), "w%03d", i);
        name_of(name, "bulk", id);
        w = firestore_write_set(name, json_pack("{s:o}", "i", firestore_value_int(i)));
        firestore_write_exists(w, false);
        json_array_append_new(writes, w);
    }
    ck_assert_int_eq(firestore_batch_write(pfs, writes, codes, &err), ST_OK);
    for (i = 0; i < 300; i++)
        ck_assert_msg(codes[i] == 0, "write %d: code %d", i, codes[i]);
    ck_assert_int_gt(proxy_total("aborted"), 0);
    ck_assert_int_eq(proxy_total("writes"), 300);
    json_decref(writes);

    proxy_call("POST", "/proxy/control", "{\"abortRate\":0,\"unavailableRate\":0.3}", NULL);
    agg = json_loads("{\"structuredQuery\":{\"from\":[{\"collectionId\":\"bulk\"}]},"
                     "\"aggregations\":[{\"alias\":\"n\",\"count\":{}}]}",
                     0, NULL);
    ck_assert_int_eq(firestore_run_aggregation(pfs, firestore_root(pfs), agg, NULL, &fields, &err),
                     ST_OK);
    ck_assert(firestore_value_get_int(json_object_get(fields, "n"), &n));
    ck_assert_int_eq(n, 300);
    json_decref(fields);
    json_decref(agg);
    firestore_free(pfs);
}
END_TEST

/* Runs expr again while it fails transiently, as a redelivering queue would. */
#define RETRY_TRANSIENT(st, expr)                                                                  \
    do {                                                                                           \
        int tries_ = 0;                                                                            \
        while (status_is_transient((st) = (expr)) && ++tries_ < 50)                                \
            ;                                                                                      \
    } while (0)

/* Runs item_begin + item_finish + try_complete on items [from, to) of a batch. */
static int process_items(struct store *s, const char *batch_id, int64_t from, int64_t to,
                         int shards, int *won)
{
    int errors = 0;
    enum status st;
    int64_t i;

    for (i = from; i < to; i++) {
        struct item_outcome o = {.status = i % 7 == 3 ? ITEM_FAILED : ITEM_COMPLETED,
                                 .error_code = "x",
                                 .duration_ms = 10,
                                 .now = time_now_us()};
        char id[ITEM_ID_MAX];
        struct error err = {0};
        enum batch_status final;
        enum item_begin r;
        struct item it;
        bool applied = false, w = false;

        item_id_for_index(batch_id, i, id);
        RETRY_TRANSIENT(
            st, store_item_begin(s, batch_id, id, 1, time_now_us(), 30000000, &r, &it, &err));
        if (st) {
            fprintf(stderr, "begin %s: %s\n", id, err.message);
            errors++;
        }
        item_release(&it);
        RETRY_TRANSIENT(
            st, store_item_finish(s, batch_id, id, 1, item_shard(id, shards), &o, &applied, &err));
        if (st || !applied) {
            fprintf(stderr, "finish %s: %s (applied %d)\n", id, err.message, applied);
            errors++;
        }
        RETRY_TRANSIENT(st, store_try_complete(s, batch_id, 1, time_now_us(), &w, &final, &err));
        if (st) {
            fprintf(stderr, "complete %s: %s\n", id, err.message);
            errors++;
        }
        *won += w;
    }
    return errors;
}

static struct store *store_via_proxy(void)
{
    struct firestore_store_options o = {0};
    struct error err = {0};
    struct store *s;

    o.client_options.emulator_host = proxy_host;
    o.client_options.project_id = project;
    o.client_options.http = http;
    o.client_options.max_attempts = 12;
    o.client_options.retry_base_ms = 10;
    o.client_options.retry_cap_ms = 200;
    o.client_options.tx_max_attempts = 30;
    s = store_firestore_open(&o, &err);
    ck_assert_msg(s != NULL, "%s", err.message);
    return s;
}

static void make_batch(struct store *s, const char *id, int64_t n, int shards)
{
    struct item *items = xcalloc((size_t)n, sizeof(*items));
    struct batch b, existing;
    struct error err = {0};
    enum status st;
    int64_t i;

    batch_init(&b);
    str_copy(b.id, sizeof(b.id), id);
    str_copy(b.user_id, sizeof(b.user_id), "user-bench");
    str_copy(b.type, sizeof(b.type), "virtual-staging");
    b.total = n;
    b.generation = 1;
    b.shards = shards;
    b.created_at = b.updated_at = time_now_us();
    RETRY_TRANSIENT(st, store_create_batch(s, &b, &existing, &err));
    ck_assert_msg(st == ST_OK, "%s", err.message);
    batch_release(&existing);
    for (i = 0; i < n; i++) {
        item_init(&items[i]);
        item_id_for_index(id, i, items[i].id);
        items[i].index = i;
        items[i].url = xstrdup("https://img.example/x.jpg");
    }
    RETRY_TRANSIENT(st, store_put_items(s, id, items, (size_t)n, &err));
    for (i = 0; i < n; i++)
        item_release(&items[i]);
    free(items);
    ck_assert_msg(st == ST_OK, "%s", err.message);
    RETRY_TRANSIENT(
        st, store_set_batch_status(s, id, BATCH_CREATING, BATCH_PROCESSING, time_now_us(), &err));
    ck_assert_msg(st == ST_OK, "%s", err.message);
}

START_TEST(store_operations_per_item)
{
    enum { N = 60, SHARDS = 4 };
    struct store *s = store_via_proxy();
    struct batch_counts n;
    struct error err = {0};
    struct batch b;
    int64_t t0, calls, reads, writes;
    int won = 0;

    make_batch(s, "b_bench", N, SHARDS);
    proxy_call("POST", "/proxy/stats/reset", NULL, NULL);
    t0 = time_mono_ms();
    ck_assert_int_eq(process_items(s, "b_bench", 0, N, SHARDS, &won), 0);
    calls = proxy_total("calls");
    reads = proxy_total("reads");
    writes = proxy_total("writes");
    fprintf(stderr,
            "store per processed item (begin + finish + try_complete, %d items, %d shards): "
            "%.2f calls, %.2f reads, %.2f writes, %.1f ms\n",
            N, SHARDS, (double)calls / N, (double)reads / N, (double)writes / N,
            (double)(time_mono_ms() - t0) / N);
    ck_assert_int_eq(won, 1);
    /* begin 1R 1W, finish 1R 2W, try_complete 2R (+ 1 + shards R and 1 W once). */
    ck_assert_int_le(reads, 4 * N + 1 + SHARDS);
    ck_assert_int_le(writes, 3 * N + 1);
    ck_assert_int_eq(store_get_counts(s, "b_bench", &n, &err), ST_OK);
    ck_assert_int_eq(n.processed, N);
    ck_assert_int_eq(store_get_batch(s, "b_bench", &b, &err), ST_OK);
    ck_assert_int_eq(b.status, BATCH_COMPLETED_WITH_FAILURES);
    batch_release(&b);
    store_close(s);
}
END_TEST

START_TEST(store_under_faults_is_exact)
{
    enum { N = 40, SHARDS = 3 };
    struct store *s = store_via_proxy();
    struct batch_counts n;
    struct error err = {0};
    struct batch b;
    enum status st;
    int won = 0;

    proxy_call("POST", "/proxy/control",
               "{\"abortRate\":0.2,\"unavailableRate\":0.1,\"exhaustedRate\":0.05}", NULL);
    make_batch(s, "b_faulty", N, SHARDS);
    ck_assert_int_eq(process_items(s, "b_faulty", 0, N, SHARDS, &won), 0);
    /* Duplicated deliveries and completion checks change nothing. */
    {
        enum batch_status final;
        bool w = true;
        int i;

        for (i = 0; i < 5; i++) {
            struct item_outcome o = {.status = ITEM_COMPLETED, .now = time_now_us()};
            char id[ITEM_ID_MAX];
            bool applied = true;

            item_id_for_index("b_faulty", i, id);
            RETRY_TRANSIENT(st, store_item_finish(s, "b_faulty", id, 1, item_shard(id, SHARDS), &o,
                                                  &applied, &err));
            ck_assert_int_eq(st, ST_OK);
            ck_assert(!applied);
            RETRY_TRANSIENT(st,
                            store_try_complete(s, "b_faulty", 1, time_now_us(), &w, &final, &err));
            ck_assert_int_eq(st, ST_OK);
            ck_assert(!w);
        }
    }
    ck_assert_int_eq(won, 1);
    proxy_call("POST", "/proxy/control",
               "{\"abortRate\":0,\"unavailableRate\":0,"
               "\"exhaustedRate\":0}",
               NULL);
    ck_assert_int_eq(store_get_counts(s, "b_faulty", &n, &err), ST_OK);
    ck_assert_int_eq(n.processed, N);
    ck_assert_int_eq(n.success + n.failure, N);
    ck_assert_int_eq(store_get_batch(s, "b_faulty", &b, &err), ST_OK);
    ck_assert_int_eq(b.status, BATCH_COMPLETED_WITH_FAILURES);
    batch_release(&b);
    fprintf(stderr,
            "store under faults: %lld calls, %lld aborted, %lld unavailable, %lld "
            "exhausted\n",
            (long long)proxy_total("calls"), (long long)proxy_total("aborted"),
            (long long)proxy_total("unavailable"), (long long)proxy_total("exhausted"));
    store_close(s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("firestore_client");
    TCase *tc = tcase_create("emulator");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, commit_preconditions);
    tcase_add_test(tc, transforms_with_empty_mask);
    tcase_add_test(tc, values_as_stored);
    tcase_add_test(tc, batch_get_aligns);
    tcase_add_test(tc, batch_write_statuses);
    tcase_add_test(tc, queries_and_aggregations);
    tcase_add_test(tc, transaction_failures_roll_back);
    tcase_add_test(tc, transaction_contention_is_exact);
    suite_add_tcase(s, tc);

    tc = tcase_create("proxy");
    tcase_add_checked_fixture(tc, proxy_setup, proxy_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, faults_leave_transactions_exact);
    tcase_add_test(tc, faults_leave_batch_write_exact);
    tcase_add_test(tc, store_operations_per_item);
    tcase_add_test(tc, store_under_faults_is_exact);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *require = getenv("REQUIRE_FIRESTORE_EMULATOR");
    SRunner *sr;
    int failed;

    emulator = getenv("FIRESTORE_EMULATOR_HOST");
    if (!emulator || !*emulator) {
        if (require && strcmp(require, "1") == 0) {
            fprintf(stderr, "FIRESTORE_EMULATOR_HOST is not set but REQUIRE_FIRESTORE_EMULATOR=1: "
                            "start the emulator (gcloud emulators firestore start "
                            "--host-port=127.0.0.1:PORT) and export the variable\n");
            return EXIT_FAILURE;
        }
        printf("skipped: FIRESTORE_EMULATOR_HOST not set\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    str_printf(project, sizeof(project), "client-%ld-%lld", (long)getpid(),
               (long long)(time_now_us() / 1000000));
    http = http_client_new(NULL);
    sr = srunner_create(suite());
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    http_client_free(http);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
