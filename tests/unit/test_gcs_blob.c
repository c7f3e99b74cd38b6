/*
 * test_gcs_blob.c - the Cloud Storage blob adapter against fake-gcs (a child
 * process, FAKE_GCS_BIN): create-only uploads, retries, bounded downloads,
 * and signed URLs the fake verifies with the test key's public half.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob/gcs_blob.h"
#include "check_main.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fake_proc.h"
#include "gcp/auth.h"
#include "http/client.h"
#include "test_signer.h"

#ifndef FAKE_GCS_BIN
#error "FAKE_GCS_BIN must name the fake-gcs executable"
#endif

#define BUCKET "test-bucket"

static struct test_signer S;
static struct http_client *C;
static struct fake_proc gcs; /* without tokens */
static const char *fake_base = gcs.base;
static char tmp_dir[] = "/tmp/gcs-blob-XXXXXX";
static char pem_path[128], key_path[128];

/* ---- the fake ----------------------------------------------------------------------- */

/* Writes the test key's public half for fake-gcs, and its service-account key file. */
static void write_keys(void)
{
    json_t *key;
    FILE *fp;

    str_copy(tmp_dir, sizeof(tmp_dir), "/tmp/gcs-blob-XXXXXX"); /* once per test case */
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
    ck_assert(str_printf(pem_path, sizeof(pem_path), "%s/signer.pem", tmp_dir));
    ck_assert(str_printf(key_path, sizeof(key_path), "%s/sa.json", tmp_dir));
    fp = fopen(pem_path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(S.public_pem, fp);
    fclose(fp);
    /* token_uri is set per test: fake-metadata's port is not known yet. */
    key = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "client_email",
                    TEST_SIGNER_EMAIL, "private_key", S.private_pem, "private_key_id", "k1",
                    "token_uri", "http://127.0.0.1:1/token");
    ck_assert_int_eq(json_dump_file(key, key_path, 0), 0);
    json_decref(key);
}

static void start_gcs(struct fake_proc *p, const char *token)
{
    char pem_env[160], token_env[64];
    const char *env[] = {
        "LOG_LEVEL=ERROR", "FAKE_GCS_BUCKETS=" BUCKET, "FAKE_GCS_SIGNER_EMAIL=" TEST_SIGNER_EMAIL,
        pem_env,           token ? token_env : NULL,   NULL};

    ck_assert(str_printf(pem_env, sizeof(pem_env), "FAKE_GCS_SIGNER_PEM=%s", pem_path));
    ck_assert(str_printf(token_env, sizeof(token_env), "FAKE_GCS_TOKEN=%s", token ? token : ""));
    ck_assert_msg(fake_proc_start(p, FAKE_GCS_BIN, env), "fake-gcs did not start");
}

/* A JSON call to the fake's control endpoints; returns the answer (json_decref). */
static json_t *fake_call(const char *method, const char *path, const char *body)
{
    const char *headers[] = {"Content-Type: application/json", NULL};
    struct http_call call = {0};
    struct http_result res;
    struct error err;
    char url[256];
    json_t *j;

    snprintf(url, sizeof(url), "%s%s", fake_base, path);
    call.method = method;
    call.url = url;
    call.headers = headers;
    call.body = body;
    call.body_len = body ? strlen(body) : 0;
    http_result_init(&res);
    ck_assert_int_eq(http_client_do(C, &call, &res, &err), ST_OK);
    ck_assert_int_eq(res.status, 200);
    j = json_parse(res.body.data, res.body.len, &err);
    ck_assert_ptr_nonnull(j);
    http_result_release(&res);
    return j;
}

static int64_t stat_of(const char *field)
{
    json_t *j = fake_call("GET", "/fake/stats", NULL);
    int64_t v = json_int_or(j, field, -1);

    json_decref(j);
    return v;
}

static void control(const char *body)
{
    json_decref(fake_call("POST", "/fake/control", body));
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static void setup_once(void)
{
    test_signer_init(&S);
    C = http_client_new(
        &(struct http_client_options){.retry_base_ms = 5, .retry_cap_ms = 20, .timeout_ms = 10000});
    write_keys();
    start_gcs(&gcs, NULL);
}

static void teardown_once(void)
{
    char cmd[160];

    /* SIGTERM: the fake must exit 0 (under ASan: without leaks). */
    ck_assert_msg(fake_proc_stop(&gcs), "fake-gcs did not exit cleanly");
    fake_proc_stop_all();
    http_client_free(C);
    test_signer_release(&S);
    ck_assert(str_printf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir));
    ck_assert_int_eq(system(cmd), 0);
}

static void setup(void)
{
    control("{\"reset\": true, \"errorRate\": 0, \"failNext\": 0, \"failStatus\": 503, "
            "\"failAfterStore\": false, \"latencyMs\": 0}");
    atomic_store(&S.calls, 0);
    atomic_store(&S.fail, false);
}

static int64_t clock_offset_us;

static int64_t test_clock(void)
{
    return time_now_us() + clock_offset_us;
}

static struct blob *open_blob(const char *bucket, int64_t lifetime_s)
{
    struct gcs_options o = {0};
    struct error err;
    struct blob *b;

    o.bucket = bucket;
    o.api_base = fake_base;
    o.signed_url_base = fake_base;
    o.client = C;
    o.max_attempts = 3;
    o.url_lifetime_s = lifetime_s;
    o.sign = test_signer_sign;
    o.sign_ud = &S;
    o.signer_email = TEST_SIGNER_EMAIL;
    o.clock_us = test_clock;
    clock_offset_us = 0;
    b = blob_gcs_open(&o, &err);
    ck_assert_msg(b != NULL, "%s", err.message);
    return b;
}

/* Bytes with NULs and every value, deterministic per seed. */
static unsigned char *make_bytes(size_t n, unsigned seed)
{
    unsigned char *p = xmalloc(n ? n : 1);
    size_t i;

    for (i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131 + seed * 7 + (i >> 8)) & 0xFF);
    return p;
}

/* GET url without any credentials; returns the status, the body in *body (when non-NULL). */
static long fetch(const char *url, struct buf *body, char *ct, size_t ct_cap)
{
    struct http_call call = {0};
    struct http_result res;
    struct error err;
    long status;

    call.url = url;
    http_result_init(&res);
    ck_assert_int_eq(http_client_do(C, &call, &res, &err), ST_OK);
    status = res.status;
    if (body)
        ck_assert_int_eq(buf_append(body, res.body.data, res.body.len), ST_OK);
    if (ct)
        str_copy(ct, ct_cap, res.content_type);
    http_result_release(&res);
    return status;
}

/* ---- put and get ------------------------------------------------------------------------- */

static const struct {
    const char *key;
    size_t len;
    const char *type;
    const char *want_type;
} round_trips[] = {
    {"results/b_x/9f2c-00042-g1.png", 4096, "image/png", "image/png"},
    {"results/b_x/video.mp4", 300 * 1024, "video/mp4", "video/mp4"},
    {"a", 1, "text/plain; charset=utf-8", "text/plain; charset=utf-8"},
    {"results/empty.bin", 0, NULL, "application/octet-stream"},
    {"deep/er/and/deeper/k.-_.x", 17, "application/json", "application/json"},
};

START_TEST(put_get_round_trip)
{
    struct blob *b = open_blob(BUCKET, 0);
    unsigned char *data = make_bytes(round_trips[_i].len, (unsigned)_i);
    struct buf out;
    char ct[128];
    struct error err;

    ck_assert_int_eq(
        blob_put(b, round_trips[_i].key, data, round_trips[_i].len, round_trips[_i].type, &err),
        ST_OK);
    buf_init(&out, 1 << 20);
    ck_assert_int_eq(blob_get(b, round_trips[_i].key, &out, ct, sizeof(ct), &err), ST_OK);
    ck_assert_uint_eq(out.len, round_trips[_i].len);
    ck_assert(memcmp(out.data ? out.data : "", data, round_trips[_i].len) == 0);
    ck_assert_str_eq(ct, round_trips[_i].want_type);
    ck_assert_int_eq(stat_of("created"), 1);
    ck_assert_int_eq(stat_of("uploads"), 1);
    buf_release(&out);
    free(data);
    blob_close(b);
}
END_TEST

START_TEST(create_only)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct buf out;
    char ct[64];
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/b1/i1.png", "FIRST", 5, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_put(b, "results/b1/i1.png", "SECOND!", 7, "image/jpeg", &err),
                     ST_ALREADY_EXISTS);
    ck_assert_msg(strstr(err.message, "gs://" BUCKET "/results/b1/i1.png"), "%s", err.message);
    buf_init(&out, 1024);
    ck_assert_int_eq(blob_get(b, "results/b1/i1.png", &out, ct, sizeof(ct), &err), ST_OK);
    ck_assert_str_eq(buf_str(&out), "FIRST");
    ck_assert_str_eq(ct, "image/png");
    ck_assert_int_eq(stat_of("preconditionFailed"), 1);
    ck_assert_int_eq(stat_of("created"), 1);
    buf_release(&out);
    blob_close(b);
}
END_TEST

/* Concurrent puts of one key: exactly one creates it. */
struct racer {
    struct blob *b;
    int id;
    enum status st;
};

static void *race_put(void *ud)
{
    struct racer *r = ud;
    char body[16];
    struct error err;

    snprintf(body, sizeof(body), "writer-%d", r->id);
    r->st = blob_put(r->b, "results/race/one.png", body, strlen(body), "image/png", &err);
    return NULL;
}

START_TEST(create_only_race)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct racer r[8];
    pthread_t t[8];
    int i, ok = 0, exists = 0;

    for (i = 0; i < 8; i++) {
        r[i].b = b;
        r[i].id = i;
        ck_assert_int_eq(pthread_create(&t[i], NULL, race_put, &r[i]), 0);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += r[i].st == ST_OK;
        exists += r[i].st == ST_ALREADY_EXISTS;
    }
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(exists, 7);
    ck_assert_int_eq(stat_of("created"), 1);
    blob_close(b);
}
END_TEST

/* ---- retries -------------------------------------------------------------------------------- */

START_TEST(retry_on_503)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct buf out;
    char ct[64];
    struct error err;

    control("{\"failNext\": 2, \"failStatus\": 503}");
    ck_assert_int_eq(blob_put(b, "results/r/1.png", "DATA", 4, "image/png", &err), ST_OK);
    ck_assert_int_eq(stat_of("uploads"), 3);
    ck_assert_int_eq(stat_of("injectedErrors"), 2);
    ck_assert_int_eq(stat_of("created"), 1);

    control("{\"failNext\": 1, \"failStatus\": 429}");
    buf_init(&out, 64);
    ck_assert_int_eq(blob_get(b, "results/r/1.png", &out, ct, sizeof(ct), &err), ST_OK);
    ck_assert_str_eq(buf_str(&out), "DATA");
    ck_assert_int_eq(stat_of("downloads"), 2);
    buf_release(&out);
    blob_close(b);
}
END_TEST

/* The first attempt landed but its answer was lost: the retry meets the precondition. */
START_TEST(retry_after_lost_answer)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct buf out;
    char ct[64];
    struct error err;

    control("{\"failNext\": 1, \"failStatus\": 503, \"failAfterStore\": true}");
    ck_assert_int_eq(blob_put(b, "results/r/2.png", "ONCE", 4, "image/png", &err),
                     ST_ALREADY_EXISTS);
    ck_assert_int_eq(stat_of("created"), 1);
    ck_assert_int_eq(stat_of("uploads"), 2);
    buf_init(&out, 64);
    ck_assert_int_eq(blob_get(b, "results/r/2.png", &out, ct, sizeof(ct), &err), ST_OK);
    ck_assert_str_eq(buf_str(&out), "ONCE");
    buf_release(&out);
    blob_close(b);
}
END_TEST

START_TEST(retries_exhausted)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct buf out;
    char ct[64];
    struct error err;

    control("{\"failNext\": 100, \"failStatus\": 503}");
    ck_assert_int_eq(blob_put(b, "results/r/3.png", "X", 1, "image/png", &err), ST_UNAVAILABLE);
    ck_assert_msg(strstr(err.message, "http 503 backendError"), "%s", err.message);
    ck_assert_int_eq(stat_of("uploads"), 3); /* max_attempts */
    control("{\"failNext\": 100, \"failStatus\": 500}");
    buf_init(&out, 64);
    ck_assert_int_eq(blob_get(b, "results/r/3.png", &out, ct, sizeof(ct), &err), ST_UNAVAILABLE);
    control("{\"failNext\": 0}");
    ck_assert_int_eq(blob_get(b, "results/r/3.png", &out, ct, sizeof(ct), &err), ST_NOT_FOUND);
    ck_assert_int_eq(stat_of("created"), 0);
    buf_release(&out);
    blob_close(b);
}
END_TEST

/* ---- errors and bounds ---------------------------------------------------------------------- */

START_TEST(missing_is_not_found)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct buf out;
    char ct[64];
    struct error err;

    buf_init(&out, 64);
    ck_assert_int_eq(blob_get(b, "results/none.png", &out, ct, sizeof(ct), &err), ST_NOT_FOUND);
    ck_assert_msg(strstr(err.message, "gs://" BUCKET "/results/none.png") &&
                      strstr(err.message, "404 notFound"),
                  "%s", err.message);
    ck_assert_uint_eq(out.len, 0);
    /* Even a tiny buffer gets the 404, not "too large" for the error body. */
    buf_release(&out);
    buf_init(&out, 1);
    ck_assert_int_eq(blob_get(b, "results/none.png", &out, ct, sizeof(ct), &err), ST_NOT_FOUND);
    buf_release(&out);
    blob_close(b);

    b = open_blob("no-such-bucket", 0);
    ck_assert_int_eq(blob_put(b, "results/x.png", "X", 1, "image/png", &err), ST_NOT_FOUND);
    ck_assert_msg(strstr(err.message, "bucket does not exist"), "%s", err.message);
    blob_close(b);
}
END_TEST

static const struct {
    size_t object, prefill, max;
    enum status want;
} size_cases[] = {
    {100, 0, 100, ST_OK},
    {101, 0, 100, ST_TOO_LARGE},
    {100, 5, 105, ST_OK},
    {100, 6, 105, ST_TOO_LARGE},
    {0, 0, 0, ST_OK},
    {1, 0, 0, ST_TOO_LARGE},
    {300000, 0, 100000, ST_TOO_LARGE}, /* refused by the response cap, before the body */
};

START_TEST(size_cap)
{
    struct blob *b = open_blob(BUCKET, 0);
    unsigned char *data = make_bytes(size_cases[_i].object, 3);
    struct buf out;
    char ct[64] = "unchanged";
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/size.bin", data, size_cases[_i].object,
                              "application/octet-stream", &err),
                     ST_OK);
    buf_init(&out, size_cases[_i].max);
    if (size_cases[_i].prefill)
        ck_assert_int_eq(buf_append(&out, "PPPPPPPPPP", size_cases[_i].prefill), ST_OK);
    ck_assert_int_eq(blob_get(b, "results/size.bin", &out, ct, sizeof(ct), &err),
                     size_cases[_i].want);
    if (size_cases[_i].want == ST_OK) {
        ck_assert_uint_eq(out.len, size_cases[_i].prefill + size_cases[_i].object);
        ck_assert(memcmp(out.data + size_cases[_i].prefill, data, size_cases[_i].object) == 0);
    } else {
        ck_assert_uint_eq(out.len, size_cases[_i].prefill); /* out untouched */
        ck_assert_msg(strstr(err.message, "larger than"), "%s", err.message);
    }
    buf_release(&out);
    free(data);
    blob_close(b);
}
END_TEST

START_TEST(bad_content_type)
{
    struct blob *b = open_blob(BUCKET, 0);
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/ct.png", "X", 1, "image/png\r\nX-Evil: 1", &err),
                     ST_INVALID);
    ck_assert_int_eq(stat_of("uploads"), 0);
    blob_close(b);
}
END_TEST

/* ---- signed URLs --------------------------------------------------------------------------- */

START_TEST(signed_url_downloads)
{
    struct blob *b = open_blob(BUCKET, 900);
    unsigned char *data = make_bytes(5000, 9);
    char url[4096], ct[64];
    struct buf body;
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/b_x/out-1.png", data, 5000, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_url(b, "results/b_x/out-1.png", url, sizeof(url), &err), ST_OK);
    ck_assert_msg(str_starts_with(url, fake_base), "%s", url);
    ck_assert_ptr_nonnull(strstr(url, "/" BUCKET "/results/b_x/out-1.png?X-Goog-Algorithm="));
    buf_init(&body, 1 << 20);
    ck_assert_int_eq(fetch(url, &body, ct, sizeof(ct)), 200);
    ck_assert_uint_eq(body.len, 5000);
    ck_assert(memcmp(body.data, data, 5000) == 0);
    ck_assert_str_eq(ct, "image/png");
    ck_assert_int_eq(stat_of("signedServed"), 1);
    ck_assert_int_eq(stat_of("signatureMismatch"), 0);

    /* A URL for a key that was never stored: signature fine, 404 NoSuchKey. */
    buf_reset(&body);
    ck_assert_int_eq(blob_url(b, "results/b_x/never.png", url, sizeof(url), &err), ST_OK);
    ck_assert_int_eq(fetch(url, &body, NULL, 0), 404);
    ck_assert_ptr_nonnull(strstr(buf_str(&body), "<Code>NoSuchKey</Code>"));
    buf_release(&body);
    free(data);
    blob_close(b);
}
END_TEST

/* Replaces the first occurrence of from in s (in place, same length). */
static void tamper(char *s, const char *from, const char *to)
{
    char *p = strstr(s, from);

    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(strlen(from), strlen(to));
    memcpy(p, to, strlen(to));
}

static const struct {
    const char *from, *to; /* replace from with to; NULL: see the test */
} tampers[] = {
    {"out-2.png", "out-3.png"},                   /* another object */
    {"X-Goog-Expires=900", "X-Goog-Expires=901"}, /* a longer life */
    {"X-Goog-Signature=", NULL},                  /* a flipped signature digit */
    {"&response-content-type=text%2Fhtml", NULL}, /* a parameter added */
};

START_TEST(tampered_url_refused)
{
    struct blob *b = open_blob(BUCKET, 900);
    char url[4096];
    struct buf body;
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/b_x/out-2.png", "TWO", 3, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_put(b, "results/b_x/out-3.png", "THREE", 5, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_url(b, "results/b_x/out-2.png", url, sizeof(url), &err), ST_OK);
    if (tampers[_i].to) {
        tamper(url, tampers[_i].from, tampers[_i].to);
    } else if (tampers[_i].from[0] == '&') {
        ck_assert(strlen(url) + strlen(tampers[_i].from) < sizeof(url));
        memcpy(url + strlen(url), tampers[_i].from, strlen(tampers[_i].from) + 1);
    } else {
        char *sig = strstr(url, "X-Goog-Signature=") + strlen("X-Goog-Signature=");

        sig[10] = sig[10] == '0' ? '1' : '0';
    }
    buf_init(&body, 1 << 16);
    ck_assert_int_eq(fetch(url, &body, NULL, 0), 403);
    ck_assert_msg(strstr(buf_str(&body), "<Code>SignatureDoesNotMatch</Code>"), "%s",
                  buf_str(&body));
    ck_assert_ptr_nonnull(strstr(buf_str(&body), "<StringToSign>GOOG4-RSA-SHA256\n"));
    ck_assert_int_eq(stat_of("signatureMismatch"), 1);
    ck_assert_int_eq(stat_of("signedServed"), 0);
    buf_release(&body);
    blob_close(b);
}
END_TEST

START_TEST(expired_url_refused)
{
    struct blob *b = open_blob(BUCKET, 900);
    char url[4096];
    struct buf body;
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/b_x/old.png", "OLD", 3, "image/png", &err), ST_OK);
    clock_offset_us = -2 * 3600 * 1000000LL; /* signed two hours ago, for 15 minutes */
    ck_assert_int_eq(blob_url(b, "results/b_x/old.png", url, sizeof(url), &err), ST_OK);
    buf_init(&body, 1 << 16);
    ck_assert_int_eq(fetch(url, &body, NULL, 0), 400);
    ck_assert_msg(strstr(buf_str(&body), "<Code>ExpiredToken</Code>"), "%s", buf_str(&body));
    ck_assert_int_eq(stat_of("expired"), 1);
    buf_release(&body);
    blob_close(b);
}
END_TEST

START_TEST(wrong_signer_refused)
{
    struct gcs_options o = {0};
    struct blob *b;
    char url[4096];
    struct buf body;
    struct error err;

    o.bucket = BUCKET;
    o.api_base = fake_base;
    o.signed_url_base = fake_base;
    o.client = C;
    o.sign = test_signer_sign;
    o.sign_ud = &S;
    o.signer_email = "someone-else@my-proj.iam.gserviceaccount.com";
    b = blob_gcs_open(&o, &err);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(blob_put(b, "results/b_x/w.png", "W", 1, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_url(b, "results/b_x/w.png", url, sizeof(url), &err), ST_OK);
    buf_init(&body, 1 << 16);
    ck_assert_int_eq(fetch(url, &body, NULL, 0), 403);
    ck_assert_ptr_nonnull(strstr(buf_str(&body), "<Code>AccessDenied</Code>"));
    buf_release(&body);
    blob_close(b);
}
END_TEST

START_TEST(signed_url_cached)
{
    struct blob *b = open_blob(BUCKET, 900);
    char u1[4096], u2[4096];
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/b_x/c.png", "C", 1, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_url(b, "results/b_x/c.png", u1, sizeof(u1), &err), ST_OK);
    ck_assert_int_eq(blob_url(b, "results/b_x/c.png", u2, sizeof(u2), &err), ST_OK);
    ck_assert_str_eq(u1, u2);
    ck_assert_int_eq(atomic_load(&S.calls), 1);
    ck_assert_uint_eq(blob_gcs_sign_count(b), 1);
    ck_assert_int_eq(fetch(u2, NULL, NULL, 0), 200);
    /* Past half the lifetime: signed again, and the new URL works too. */
    clock_offset_us = 451 * 1000000LL;
    ck_assert_int_eq(blob_url(b, "results/b_x/c.png", u2, sizeof(u2), &err), ST_OK);
    ck_assert_int_eq(atomic_load(&S.calls), 2);
    ck_assert_str_ne(u1, u2);
    ck_assert_int_eq(fetch(u2, NULL, NULL, 0), 200);
    blob_close(b);
}
END_TEST

/* ---- with gcp/auth.c: tokens, a 401, signing by key file and by signBlob ------------------- */

static struct fake_proc gcs_tok; /* needs Authorization: Bearer ya29.fake-... */
static struct fake_proc meta;

static void setup_auth(void)
{
    char key_env[160];
    const char *env[] = {key_env, "FAKE_EMAIL=" TEST_SIGNER_EMAIL,
                         "FAKE_TOKEN_AUDIENCE=http://127.0.0.1:1/token", NULL};

    ck_assert(str_printf(key_env, sizeof(key_env), "FAKE_SA_KEY=%s", key_path));
    ck_assert_msg(fake_proc_start(&meta, FAKE_METADATA_BIN, env), "fake-metadata did not start");
    start_gcs(&gcs_tok, "ya29.fake-");
    atomic_store(&S.calls, 0);
}

static void teardown_auth(void)
{
    ck_assert_msg(fake_proc_stop(&gcs_tok), "fake-gcs did not exit cleanly");
    ck_assert_msg(fake_proc_stop(&meta), "fake-metadata did not exit cleanly");
}

static struct blob *open_with_auth(struct gcp_auth *auth, const struct fake_proc *p)
{
    struct gcs_options o = {0};
    struct error err;
    struct blob *b;

    o.bucket = BUCKET;
    o.api_base = p->base;
    o.signed_url_base = p->base;
    o.client = C;
    o.auth = auth;
    o.max_attempts = 3;
    o.url_lifetime_s = 900;
    b = blob_gcs_open(&o, &err);
    ck_assert_msg(b != NULL, "%s", err.message);
    return b;
}

START_TEST(key_file_auth)
{
    struct gcp_auth_options ao = {0};
    struct gcp_auth *auth;
    struct blob *b;
    struct buf out;
    char token_url[128], url[4096], ct[64];
    struct error err;
    json_t *ctl;
    long status;

    ck_assert(str_printf(token_url, sizeof(token_url), "%s/token", meta.base));
    ao.credentials_file = key_path;
    ao.token_url = token_url;
    auth = gcp_auth_new(&ao, C, &err);
    ck_assert_msg(auth != NULL, "%s", err.message);
    b = open_with_auth(auth, &gcs_tok);

    ck_assert_msg(blob_put(b, "results/a/1.png", "ONE", 3, "image/png", &err) == ST_OK, "%s",
                  err.message);
    buf_init(&out, 64);
    ck_assert_int_eq(blob_get(b, "results/a/1.png", &out, ct, sizeof(ct), &err), ST_OK);
    ck_assert_str_eq(buf_str(&out), "ONE");
    ck_assert_int_eq(fake_proc_stat(C, &meta, "tokenGrants"), 1);
    ck_assert_int_eq(fake_proc_stat(C, &gcs_tok, "unauthenticated"), 0);

    /* A 401: the token is refreshed once and the call goes through. */
    ctl = json_pack("{s:i, s:i}", "failNext", 1, "failStatus", 401);
    json_decref(fake_proc_call(C, &gcs_tok, "POST", "/fake/control", ctl, &status));
    json_decref(ctl);
    ck_assert_int_eq(status, 200);
    ck_assert_msg(blob_put(b, "results/a/2.png", "TWO", 3, "image/png", &err) == ST_OK, "%s",
                  err.message);
    ck_assert_int_eq(fake_proc_stat(C, &meta, "tokenGrants"), 2);
    ck_assert_int_eq(fake_proc_stat(C, &gcs_tok, "injectedErrors"), 1);

    /* Signed with the key file's key, as the key file's account, no network. */
    ck_assert_msg(blob_url(b, "results/a/1.png", url, sizeof(url), &err) == ST_OK, "%s",
                  err.message);
    ck_assert_ptr_nonnull(strstr(url, "X-Goog-Credential=signer%40my-proj"));
    ck_assert_int_eq(fetch(url, NULL, NULL, 0), 200);
    ck_assert_int_eq(fake_proc_stat(C, &meta, "signBlobRequests"), 0);
    buf_release(&out);
    blob_close(b);

    /* Without a token the fake refuses. */
    b = open_with_auth(NULL, &gcs_tok);
    ck_assert_int_eq(blob_put(b, "results/a/3.png", "X", 1, "image/png", &err), ST_UNAUTHENTICATED);
    blob_close(b);
    gcp_auth_free(auth);
}
END_TEST

/* Cloud Run: tokens from the metadata server, signatures from IAM signBlob (cached). */
START_TEST(metadata_and_signblob)
{
    struct gcp_auth_options ao = {0};
    struct gcp_auth *auth;
    struct blob *b;
    char base[128], iam[128], u1[4096], u2[4096];
    struct buf body;
    struct error err;

    ck_assert(str_printf(base, sizeof(base), "%s/computeMetadata/v1", meta.base));
    ck_assert(str_printf(iam, sizeof(iam), "%s/iam", meta.base));
    ao.metadata_base = base;
    ao.iam_base = iam;
    auth = gcp_auth_new(&ao, C, &err);
    ck_assert_msg(auth != NULL, "%s", err.message);
    b = open_with_auth(auth, &gcs_tok);
    ck_assert_msg(blob_put(b, "results/m/1.png", "META", 4, "image/png", &err) == ST_OK, "%s",
                  err.message);
    ck_assert_msg(blob_url(b, "results/m/1.png", u1, sizeof(u1), &err) == ST_OK, "%s", err.message);
    ck_assert_int_eq(blob_url(b, "results/m/1.png", u2, sizeof(u2), &err), ST_OK);
    ck_assert_str_eq(u1, u2);
    ck_assert_int_eq(fake_proc_stat(C, &meta, "signBlobRequests"), 1);
    ck_assert_int_eq(fake_proc_stat(C, &meta, "emailRequests"), 1);
    buf_init(&body, 64);
    ck_assert_int_eq(fetch(u2, &body, NULL, 0), 200);
    ck_assert_str_eq(buf_str(&body), "META");
    buf_release(&body);
    blob_close(b);
    gcp_auth_free(auth);
}
END_TEST

/* Emulator mode: no Authorization header, and nothing to sign with. */
START_TEST(emulator_mode)
{
    struct gcp_auth_options ao = {0};
    struct gcp_auth *auth;
    struct blob *b;
    char url[4096];
    struct error err;

    ao.none = true;
    auth = gcp_auth_new(&ao, C, &err);
    ck_assert_ptr_nonnull(auth);
    b = open_with_auth(auth, &gcs);
    ck_assert_int_eq(blob_put(b, "results/e/1.png", "E", 1, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_url(b, "results/e/1.png", url, sizeof(url), &err),
                     ST_FAILED_PRECONDITION);
    blob_close(b);
    gcp_auth_free(auth);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gcs_blob");
    TCase *tc = tcase_create("fake");

    tcase_add_unchecked_fixture(tc, setup_once, teardown_once);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, put_get_round_trip, 0, ARRAY_SIZE(round_trips));
    tcase_add_test(tc, create_only);
    tcase_add_test(tc, create_only_race);
    tcase_add_test(tc, retry_on_503);
    tcase_add_test(tc, retry_after_lost_answer);
    tcase_add_test(tc, retries_exhausted);
    tcase_add_test(tc, missing_is_not_found);
    tcase_add_loop_test(tc, size_cap, 0, ARRAY_SIZE(size_cases));
    tcase_add_test(tc, bad_content_type);
    tcase_add_test(tc, signed_url_downloads);
    tcase_add_loop_test(tc, tampered_url_refused, 0, ARRAY_SIZE(tampers));
    tcase_add_test(tc, expired_url_refused);
    tcase_add_test(tc, wrong_signer_refused);
    tcase_add_test(tc, signed_url_cached);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_add_unchecked_fixture(tc, setup_once, teardown_once);
    tcase_add_checked_fixture(tc, setup_auth, teardown_auth);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, key_file_auth);
    tcase_add_test(tc, metadata_and_signblob);
    tcase_add_test(tc, emulator_mode);
    suite_add_tcase(s, tc);
    return s;
}
