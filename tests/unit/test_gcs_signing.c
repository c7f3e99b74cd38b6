/*
 * test_gcs_signing.c - V4 signed URLs of the Cloud Storage adapter against
 * gcp.md 3.3: the reference canonical request byte for byte, the string to
 * sign, the signature format, the query order, the object-name encoding
 * table, the expiry bounds, and the per-key URL cache (no network).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "blob/gcs_blob.h"
#include "check_main.h"
#include "core/codec.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "test_signer.h"

/* gcp.md 3.3, "Example canonical request (GET, 15 min)", verbatim. */
static const char reference_canonical[] =
    "GET\n"
    "/my-bucket/reports/2026/a%20b.pdf\n"
    "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=signer%40my-proj.iam.gserviceaccount.com%"
    "2F20260501%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20260501T120000Z&X-Goog-Expires=900&"
    "X-Goog-SignedHeaders=host\n"
    "host:storage.googleapis.com\n"
    "\n"
    "host\n"
    "UNSIGNED-PAYLOAD";

static struct test_signer S;
static struct http_client *C;

static int64_t at(const char *rfc3339)
{
    int64_t t = 0;

    ck_assert_msg(time_parse_rfc3339(rfc3339, &t), "bad time %s", rfc3339);
    return t;
}

/* Lowercase hex SHA-256 by OpenSSL directly, independent of core/codec. */
static void openssl_sha256_hex(const char *s, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0, i;

    ck_assert_int_eq(EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL), 1);
    for (i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static struct gcs_v4_input reference_input(void)
{
    struct gcs_v4_input in = {0};

    in.method = "GET";
    in.host = "storage.googleapis.com";
    in.bucket = "my-bucket";
    in.object = "reports/2026/a b.pdf";
    in.email = TEST_SIGNER_EMAIL;
    in.now_us = at("2026-05-01T12:00:00Z");
    in.expires_s = 900;
    return in;
}

/* Once per suite: key generation is slow under the sanitizers. */
static void setup_once(void)
{
    test_signer_init(&S);
    C = http_client_new(NULL);
}

static void teardown_once(void)
{
    http_client_free(C);
    test_signer_release(&S);
}

static void setup(void)
{
    atomic_store(&S.calls, 0);
    atomic_store(&S.fail, false);
}

/* ---- the reference example ------------------------------------------------------------- */

START_TEST(reference_canonical_request)
{
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;
    char digest[65], want_sts[256];

    gcs_v4_parts_init(&p);
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_OK);
    ck_assert_str_eq(buf_str(&p.canonical_request), reference_canonical);
    ck_assert_uint_eq(p.canonical_request.len, strlen(reference_canonical));
    ck_assert_str_eq(buf_str(&p.path), "/my-bucket/reports/2026/a%20b.pdf");

    openssl_sha256_hex(reference_canonical, digest);
    snprintf(want_sts, sizeof(want_sts),
             "GOOG4-RSA-SHA256\n20260501T120000Z\n20260501/auto/storage/goog4_request\n%s", digest);
    ck_assert_str_eq(buf_str(&p.string_to_sign), want_sts);

    /* Fractions of a second do not change the timestamp. */
    in.now_us += 999999;
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_OK);
    ck_assert_str_eq(buf_str(&p.canonical_request), reference_canonical);
    gcs_v4_parts_release(&p);
}
END_TEST

/* The whole URL, its signature format, and the signature verified with the public key. */
START_TEST(signature_format)
{
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;
    unsigned char *sig = NULL, raw[512];
    size_t sig_len = 0, i;
    char url[4096], prefix[1024];
    const char *hex;

    gcs_v4_parts_init(&p);
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_OK);
    ck_assert_int_eq(
        test_signer_sign(&S, p.string_to_sign.data, p.string_to_sign.len, &sig, &sig_len, &err),
        ST_OK);
    ck_assert_uint_eq(sig_len, 256);
    ck_assert_int_eq(
        gcs_v4_url("https://storage.googleapis.com", &p, sig, sig_len, url, sizeof(url), &err),
        ST_OK);
    snprintf(prefix, sizeof(prefix),
             "https://storage.googleapis.com%s?%s&X-Goog-Signature=", buf_str(&p.path),
             buf_str(&p.query));
    ck_assert_msg(str_starts_with(url, prefix), "url %s", url);
    hex = url + strlen(prefix);
    ck_assert_uint_eq(strlen(hex), 512); /* RSA-2048: 256 bytes, lowercase hex */
    for (i = 0; i < 512; i++) {
        char c = hex[i];

        ck_assert_msg((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), "bad hex digit %c", c);
        raw[i / 2] = (unsigned char)((i % 2 ? raw[i / 2] : 0) |
                                     ((c <= '9' ? c - '0' : c - 'a' + 10) << (i % 2 ? 0 : 4)));
    }
    ck_assert(test_signer_verify(&S, p.string_to_sign.data, p.string_to_sign.len, raw, 256));
    ck_assert(!test_signer_verify(&S, p.canonical_request.data, p.canonical_request.len, raw, 256));
    ck_assert_int_eq(gcs_v4_url("https://storage.googleapis.com", &p, sig, sig_len, url, 100, &err),
                     ST_TOO_LARGE);
    free(sig);
    gcs_v4_parts_release(&p);
}
END_TEST

/* ---- query order ---------------------------------------------------------------------- */

static const struct {
    const char *const extra[7];
    const char *query_tail; /* what follows X-Goog-SignedHeaders=host */
    const char *query_head; /* what precedes X-Goog-Algorithm ("" when nothing) */
} query_cases[] = {
    /* Byte order: upper-case X-Goog-* sort before lower-case names. */
    {{"response-content-disposition", "attachment; filename=\"a b.pdf\"", "generation", "1714",
      NULL},
     "&generation=1714&response-content-disposition=attachment%3B%20filename%3D%22a%20b.pdf%22",
     ""},
    {{"A-first", "1", NULL}, "", "A-first=1&"},
    /* Sorted by name first (then value): "a" before "a-b" although "a-b=" < "a=". */
    {{"a-b", "1", "a", "2", NULL}, "&a=2&a-b=1", ""},
    {{"z", "b", "z", "a", NULL}, "&z=a&z=b", ""},
    {{"sp ace", "x+y", NULL}, "&sp%20ace=x%2By", ""},
};

START_TEST(query_sorted)
{
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;
    char want[1024];

    in.extra_query = query_cases[_i].extra;
    gcs_v4_parts_init(&p);
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_OK);
    snprintf(want, sizeof(want),
             "%sX-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=signer%%40my-proj.iam."
             "gserviceaccount.com%%2F20260501%%2Fauto%%2Fstorage%%2Fgoog4_request&X-Goog-Date="
             "20260501T120000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host%s",
             query_cases[_i].query_head, query_cases[_i].query_tail);
    ck_assert_str_eq(buf_str(&p.query), want);
    gcs_v4_parts_release(&p);
}
END_TEST

START_TEST(extra_query_refused)
{
    static const char *const goog[] = {"X-Goog-Signature", "abc", NULL};
    static const char *const empty[] = {"", "v", NULL};
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;

    gcs_v4_parts_init(&p);
    in.extra_query = goog;
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_INVALID);
    in.extra_query = empty;
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_INVALID);
    gcs_v4_parts_release(&p);
}
END_TEST

/* ---- object-name encoding ---------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *json;        /* JSON API path segment and name= ('/' encoded) */
    const char *signed_path; /* signed URL path ('/' kept) */
} enc_cases[] = {
    {"a b", "a%20b", "a%20b"},
    {"caf\xc3\xa9", "caf%C3%A9", "caf%C3%A9"},
    {"\xe6\x97\xa5\xe6\x9c\xac.png", "%E6%97%A5%E6%9C%AC.png", "%E6%97%A5%E6%9C%AC.png"},
    {"\xf0\x9f\x98\x80", "%F0%9F%98%80", "%F0%9F%98%80"},
    {"a~b", "a~b", "a~b"},
    {"results/b_x/9f2c-00042-g1.png", "results%2Fb_x%2F9f2c-00042-g1.png",
     "results/b_x/9f2c-00042-g1.png"},
    {"a+b", "a%2Bb", "a%2Bb"},
    {"what?", "what%3F", "what%3F"},
    {"#1", "%231", "%231"},
    {"100%", "100%25", "100%25"},
    {"%2F", "%252F", "%252F"},
    {"a=b&c;d:e@f", "a%3Db%26c%3Bd%3Ae%40f", "a%3Db%26c%3Bd%3Ae%40f"},
    {"AZaz09-._~", "AZaz09-._~", "AZaz09-._~"},
    {"tab\there", "tab%09here", "tab%09here"},
    {"back\\slash", "back%5Cslash", "back%5Cslash"},
    {"//x/", "%2F%2Fx%2F", "//x/"},
};

START_TEST(encoding_table)
{
    struct buf b;

    buf_init(&b, 1024);
    ck_assert_int_eq(gcs_percent_encode(&b, enc_cases[_i].name, false), ST_OK);
    ck_assert_str_eq(buf_str(&b), enc_cases[_i].json);
    buf_reset(&b);
    ck_assert_int_eq(gcs_percent_encode(&b, enc_cases[_i].name, true), ST_OK);
    ck_assert_str_eq(buf_str(&b), enc_cases[_i].signed_path);
    buf_release(&b);
}
END_TEST

START_TEST(encoding_in_signed_path)
{
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;
    char want[256];

    in.object = enc_cases[_i].name;
    gcs_v4_parts_init(&p);
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_OK);
    snprintf(want, sizeof(want), "/my-bucket/%s", enc_cases[_i].signed_path);
    ck_assert_str_eq(buf_str(&p.path), want);
    ck_assert(str_starts_with(buf_str(&p.canonical_request) + 4, want));
    gcs_v4_parts_release(&p);
}
END_TEST

START_TEST(encoding_bounded)
{
    struct buf b;

    buf_init(&b, 5);
    ck_assert_int_eq(gcs_percent_encode(&b, "a b", false), ST_OK); /* "a%20b": 5 bytes */
    ck_assert_int_eq(gcs_percent_encode(&b, "c", false), ST_TOO_LARGE);
    buf_release(&b);
}
END_TEST

/* ---- expiry and input bounds ---------------------------------------------------------------- */

static const struct {
    int64_t expires;
    enum status want;
} expiry_cases[] = {
    {1, ST_OK},      {900, ST_OK},     {604800, ST_OK},         {604801, ST_INVALID},
    {0, ST_INVALID}, {-5, ST_INVALID}, {INT64_MAX, ST_INVALID},
};

START_TEST(expiry_bounds)
{
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;
    char want[64];

    in.expires_s = expiry_cases[_i].expires;
    gcs_v4_parts_init(&p);
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), expiry_cases[_i].want);
    if (expiry_cases[_i].want == ST_OK) {
        snprintf(want, sizeof(want), "&X-Goog-Expires=%lld&", (long long)in.expires_s);
        ck_assert_ptr_nonnull(strstr(buf_str(&p.query), want));
    } else {
        ck_assert_uint_eq(p.canonical_request.len, 0);
    }
    gcs_v4_parts_release(&p);
}
END_TEST

START_TEST(lifetime_bounds_at_open)
{
    struct gcs_options o = {0};
    struct error err;
    struct blob *b;

    o.bucket = "my-bucket";
    o.client = C;
    o.url_lifetime_s = GCS_URL_LIFETIME_MAX_S + 1;
    ck_assert_ptr_null(blob_gcs_open(&o, &err));
    ck_assert_int_eq(err.status, ST_INVALID);
    o.url_lifetime_s = GCS_URL_LIFETIME_MAX_S;
    b = blob_gcs_open(&o, &err);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(b->name, "gcs");
    blob_close(b);
}
END_TEST

static const struct {
    const char *bucket, *api_base, *url_base;
} bad_opens[] = {
    {"ab", NULL, NULL},
    {"My-Bucket", NULL, NULL},
    {"-bucket", NULL, NULL},
    {"bucket/x", NULL, NULL},
    {"my-bucket", "ftp://x", NULL},
    {"my-bucket", "https://x/path", NULL},
    {"my-bucket", NULL, "storage.googleapis.com"},
    {"my-bucket", NULL, "https://"},
    {"my-bucket", NULL, "https://user@host"},
};

START_TEST(open_refuses)
{
    struct gcs_options o = {0};
    struct error err;

    o.bucket = bad_opens[_i].bucket;
    o.api_base = bad_opens[_i].api_base;
    o.signed_url_base = bad_opens[_i].url_base;
    o.client = C;
    ck_assert_ptr_null(blob_gcs_open(&o, &err));
    ck_assert_int_eq(err.status, ST_INVALID);
}
END_TEST

START_TEST(missing_inputs)
{
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;

    gcs_v4_parts_init(&p);
    in.object = "";
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_INVALID);
    in = reference_input();
    in.email = NULL;
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_INVALID);
    in = reference_input();
    in.host = "";
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_INVALID);
    gcs_v4_parts_release(&p);
}
END_TEST

/* ---- blob_url: the adapter's URLs and their cache ------------------------------------------- */

static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static struct blob *open_signing(size_t cache_max, int64_t lifetime_s, const char *url_base)
{
    struct gcs_options o = {0};
    struct error err;
    struct blob *b;

    o.bucket = "my-bucket";
    o.client = C;
    o.sign = test_signer_sign;
    o.sign_ud = &S;
    o.signer_email = TEST_SIGNER_EMAIL;
    o.url_lifetime_s = lifetime_s;
    o.url_cache_max = cache_max;
    o.signed_url_base = url_base;
    o.clock_us = fake_clock;
    b = blob_gcs_open(&o, &err);
    ck_assert_msg(b != NULL, "%s", err.message);
    return b;
}

/* blob_url() gives exactly what the pure pieces describe, for the configured host. */
START_TEST(url_matches_pieces)
{
    struct blob *b = open_signing(0, 900, "http://127.0.0.1:4443/");
    struct gcs_v4_input in = reference_input();
    struct gcs_v4_parts p;
    struct error err;
    char url[4096], prefix[1024];

    fake_now = at("2026-05-01T12:00:00Z");
    ck_assert_int_eq(blob_url(b, "reports/2026/a-b.pdf", url, sizeof(url), &err), ST_OK);
    in.host = "127.0.0.1:4443";
    in.object = "reports/2026/a-b.pdf";
    gcs_v4_parts_init(&p);
    ck_assert_int_eq(gcs_v4_build(&in, &p, &err), ST_OK);
    ck_assert_ptr_nonnull(strstr(buf_str(&p.canonical_request), "\nhost:127.0.0.1:4443\n\nhost\n"));
    snprintf(prefix, sizeof(prefix),
             "http://127.0.0.1:4443%s?%s&X-Goog-Signature=", buf_str(&p.path), buf_str(&p.query));
    ck_assert_msg(str_starts_with(url, prefix), "url %s\nwant %s", url, prefix);
    ck_assert_uint_eq(strlen(url), strlen(prefix) + 512);
    /* Cached, but too long for the caller's buffer: refused without signing again. */
    ck_assert_int_eq(blob_url(b, "reports/2026/a-b.pdf", url, 64, &err), ST_TOO_LARGE);
    ck_assert_int_eq(atomic_load(&S.calls), 1);
    /* Not cached and too long: refused after signing. */
    ck_assert_int_eq(blob_url(b, "reports/2026/other.pdf", url, 64, &err), ST_TOO_LARGE);
    gcs_v4_parts_release(&p);
    blob_close(b);
}
END_TEST

START_TEST(url_cached_until_half_life)
{
    struct blob *b = open_signing(0, 3600, NULL);
    char u1[4096], u2[4096], u3[4096], other[4096];
    struct error err;

    fake_now = at("2026-05-01T12:00:00Z");
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", u1, sizeof(u1), &err), ST_OK);
    ck_assert_int_eq(atomic_load(&S.calls), 1);
    fake_now += 1799 * 1000000LL; /* just under half of the hour */
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", u2, sizeof(u2), &err), ST_OK);
    ck_assert_int_eq(atomic_load(&S.calls), 1);
    ck_assert_str_eq(u1, u2);
    ck_assert_uint_eq(blob_gcs_sign_count(b), 1);

    /* Another key is signed on its own. */
    ck_assert_int_eq(blob_url(b, "results/b1/i2.png", other, sizeof(other), &err), ST_OK);
    ck_assert_int_eq(atomic_load(&S.calls), 2);
    ck_assert_ptr_nonnull(strstr(other, "/my-bucket/results/b1/i2.png?"));

    /* Half the lifetime has passed: a new signature, a new date. */
    fake_now += 1 * 1000000LL;
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", u3, sizeof(u3), &err), ST_OK);
    ck_assert_int_eq(atomic_load(&S.calls), 3);
    ck_assert_str_ne(u1, u3);
    ck_assert_ptr_nonnull(strstr(u3, "X-Goog-Date=20260501T123000Z"));

    /* A clock that went backwards does not serve a URL dated in the future. */
    fake_now -= 3600 * 1000000LL;
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", u3, sizeof(u3), &err), ST_OK);
    ck_assert_int_eq(atomic_load(&S.calls), 4);
    blob_close(b);
}
END_TEST

START_TEST(url_signer_failure)
{
    struct blob *b = open_signing(0, 900, NULL);
    struct gcs_options o = {0};
    char url[4096];
    struct error err;

    fake_now = at("2026-05-01T12:00:00Z");
    atomic_store(&S.fail, true);
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", url, sizeof(url), &err), ST_UNAVAILABLE);
    ck_assert_msg(strstr(err.message, "gs://my-bucket/results/b1/i1.png"), "%s", err.message);
    atomic_store(&S.fail, false);
    /* Failures are not cached. */
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", url, sizeof(url), &err), ST_OK);
    blob_close(b);

    /* Neither auth nor a signer: nothing can sign. */
    o.bucket = "my-bucket";
    o.client = C;
    b = blob_gcs_open(&o, &err);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(blob_url(b, "results/b1/i1.png", url, sizeof(url), &err),
                     ST_FAILED_PRECONDITION);
    blob_close(b);
    /* A signer without its email is refused. */
    o.sign = test_signer_sign;
    o.sign_ud = &S;
    ck_assert_ptr_null(blob_gcs_open(&o, &err));
}
END_TEST

/* More keys than the cache holds: every URL is still the right one. */
START_TEST(url_cache_bounded)
{
    struct blob *b = open_signing(16, 900, NULL);
    char key[64], url[4096], want[128];
    struct error err;
    int i, round;

    fake_now = at("2026-05-01T12:00:00Z");
    for (round = 0; round < 2; round++) {
        for (i = 0; i < 100; i++) {
            snprintf(key, sizeof(key), "results/b1/i%03d.png", i);
            snprintf(want, sizeof(want), "/my-bucket/%s?", key);
            ck_assert_int_eq(blob_url(b, key, url, sizeof(url), &err), ST_OK);
            ck_assert_msg(strstr(url, want), "url %s for %s", url, key);
        }
    }
    /* At most 16 of the 100 survive: the second round mostly re-signs. */
    ck_assert_int_ge(atomic_load(&S.calls), 100 + 100 - 16);
    blob_close(b);
}
END_TEST

struct worker {
    struct blob *b;
    int id;
    int bad;
};

static void *url_worker(void *ud)
{
    struct worker *w = ud;
    char key[64], url[4096], want[128];
    struct error err;
    int i;

    for (i = 0; i < 300; i++) {
        int k = (i * 7 + w->id) % 50;

        snprintf(key, sizeof(key), "results/b2/i%02d.png", k);
        snprintf(want, sizeof(want), "/my-bucket/%s?", key);
        if (blob_url(w->b, key, url, sizeof(url), &err) != ST_OK || !strstr(url, want))
            w->bad++;
    }
    return NULL;
}

START_TEST(url_cache_threads)
{
    struct blob *b = open_signing(32, 900, NULL);
    struct worker w[6];
    pthread_t t[6];
    int i;

    fake_now = at("2026-05-01T12:00:00Z");
    for (i = 0; i < 6; i++) {
        w[i].b = b;
        w[i].id = i;
        w[i].bad = 0;
        ck_assert_int_eq(pthread_create(&t[i], NULL, url_worker, &w[i]), 0);
    }
    for (i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].bad, 0);
    }
    ck_assert_int_lt(atomic_load(&S.calls), 6 * 300);
    blob_close(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gcs_signing");
    TCase *tc = tcase_create("core");

    tcase_add_unchecked_fixture(tc, setup_once, teardown_once);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reference_canonical_request);
    tcase_add_test(tc, signature_format);
    tcase_add_loop_test(tc, query_sorted, 0, ARRAY_SIZE(query_cases));
    tcase_add_test(tc, extra_query_refused);
    tcase_add_loop_test(tc, encoding_table, 0, ARRAY_SIZE(enc_cases));
    tcase_add_loop_test(tc, encoding_in_signed_path, 0, ARRAY_SIZE(enc_cases));
    tcase_add_test(tc, encoding_bounded);
    tcase_add_loop_test(tc, expiry_bounds, 0, ARRAY_SIZE(expiry_cases));
    tcase_add_test(tc, lifetime_bounds_at_open);
    tcase_add_loop_test(tc, open_refuses, 0, ARRAY_SIZE(bad_opens));
    tcase_add_test(tc, missing_inputs);
    tcase_add_test(tc, url_matches_pieces);
    tcase_add_test(tc, url_cached_until_half_life);
    tcase_add_test(tc, url_signer_failure);
    tcase_add_test(tc, url_cache_bounded);
    tcase_add_test(tc, url_cache_threads);
    suite_add_tcase(s, tc);
    return s;
}
