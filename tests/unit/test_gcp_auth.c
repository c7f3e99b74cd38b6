/*
 * gcp/auth.h against fake-metadata: metadata-server tokens (one refresh
 * for many callers, the 5-minute margin on an injected clock, invalidate,
 * Metadata-Flavor both ways), the service-account JWT bearer grant (the
 * assertion as the token endpoint receives it), signing with a key file and
 * through signBlob, and project/email discovery from both sources.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "check_main.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fake_proc.h"
#include "gcp/auth.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"

#define SA_EMAIL "svc@key-project.iam.gserviceaccount.com"
#define MD_EMAIL "worker@md-project.iam.gserviceaccount.com"
#define KEY_ID   "k-0123456789abcdef"
#define THREADS  32

/* Two RSA keys for the whole run: generating one costs a noticeable fraction of a second. */
static char *pem_a, *pem_b;
static char tmp_dir[64];
static struct http_client *client;
static atomic_llong clock_now;

static int64_t test_clock(void)
{
    return (int64_t)atomic_load(&clock_now);
}

static void suite_setup(void)
{
    struct error err;

    log_init("test_gcp_auth", NULL, LOG_CRITICAL, 2);
    if (!pem_a) {
        ck_assert_int_eq(jwt_rsa_generate(0, &pem_a, &err), ST_OK);
        ck_assert_int_eq(jwt_rsa_generate(0, &pem_b, &err), ST_OK);
    }
    str_copy(tmp_dir, sizeof(tmp_dir), "/tmp/gcp-auth-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
    client = http_client_new(NULL);
}

static void suite_teardown(void)
{
    char path[128];

    fake_proc_stop_all();
    http_client_free(client);
    client = NULL;
    str_printf(path, sizeof(path), "rm -rf %s", tmp_dir);
    ck_assert_int_eq(system(path), 0);
}

/* Writes a service-account key file and returns its path (static buffer per slot). */
static const char *write_key(const char *file, const char *pem, const char *token_uri,
                             const char *project)
{
    static char paths[4][160];
    static int next;
    char *path = paths[next++ % 4];
    json_t *key;

    ck_assert(str_printf(path, 160, "%s/%s", tmp_dir, file));
    key = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "client_email",
                    SA_EMAIL, "private_key", pem, "private_key_id", KEY_ID, "token_uri", token_uri,
                    "client_id", "1234567890");
    if (project)
        json_object_set_new(key, "project_id", json_string(project));
    ck_assert_int_eq(json_dump_file(key, path, 0), 0);
    json_decref(key);
    return path;
}

static void start_fake(struct fake_proc *p, const char *const *env)
{
    ck_assert_msg(fake_proc_start(p, FAKE_METADATA_BIN, env), "fake-metadata did not start");
}

static void stop_fake(struct fake_proc *p)
{
    ck_assert_msg(fake_proc_stop(p), "fake-metadata did not exit cleanly");
}

static struct gcp_auth *metadata_auth(const struct fake_proc *p, int64_t (*clock)(void))
{
    struct gcp_auth_options o;
    struct gcp_auth *a;
    struct error err;
    char base[128];

    memset(&o, 0, sizeof(o));
    ck_assert(str_printf(base, sizeof(base), "%s/computeMetadata/v1", p->base));
    o.metadata_base = base;
    o.iam_base = NULL;
    o.clock = clock;
    a = gcp_auth_new(&o, client, &err);
    ck_assert_msg(a != NULL, "%s", err.message);
    return a;
}

static void header_is(struct gcp_auth *a, const char *want)
{
    char h[GCP_TOKEN_MAX];
    struct error err;
    enum status st = gcp_auth_header(a, h, sizeof(h), &err);

    ck_assert_msg(st == ST_OK, "gcp_auth_header: %s: %s", status_name(st), err.message);
    ck_assert_str_eq(h, want);
}

/* Decodes one base64url segment of a JWT into a JSON object. */
static json_t *jwt_part(const char *jwt, int index)
{
    const char *start = jwt, *end;
    struct buf b;
    json_t *v;
    int i;

    for (i = 0; i < index; i++) {
        start = strchr(start, '.');
        ck_assert_ptr_nonnull(start);
        start++;
    }
    end = strchr(start, '.');
    ck_assert_ptr_nonnull(end);
    buf_init(&b, 1 << 16);
    ck_assert_int_eq(base64_decode(&b, start, (size_t)(end - start)), ST_OK);
    v = json_parse(buf_str(&b), b.len, NULL);
    buf_release(&b);
    ck_assert_ptr_nonnull(v);
    return v;
}

static bool signature_valid(const char *pem, const void *data, size_t len, const unsigned char *sig,
                            size_t sig_len)
{
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    struct error err;
    bool ok;

    ck_assert_int_eq(jwt_key_load_private(pem, &key, &err), ST_OK);
    ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
         EVP_DigestVerify(md, sig, sig_len, data, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok;
}

/* ---- metadata server ---------------------------------------------------- */

struct racer {
    struct gcp_auth *a;
    pthread_barrier_t *start;
    char header[GCP_TOKEN_MAX];
    enum status st;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct error err;

    pthread_barrier_wait(r->start);
    r->st = gcp_auth_header(r->a, r->header, sizeof(r->header), &err);
    return NULL;
}

START_TEST(concurrent_callers_share_one_refresh)
{
    static const char *const env[] = {"FAKE_TOKEN_LATENCY_MS=300", NULL};
    struct racer racers[THREADS];
    pthread_t tid[THREADS];
    pthread_barrier_t start;
    struct fake_proc p;
    struct gcp_auth *a;
    int i;

    start_fake(&p, env);
    a = metadata_auth(&p, NULL);
    pthread_barrier_init(&start, NULL, THREADS);
    for (i = 0; i < THREADS; i++) {
        racers[i] = (struct racer){.a = a, .start = &start};
        ck_assert_int_eq(pthread_create(&tid[i], NULL, race, &racers[i]), 0);
    }
    for (i = 0; i < THREADS; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&start);
    for (i = 0; i < THREADS; i++) {
        ck_assert_int_eq(racers[i].st, ST_OK);
        ck_assert_str_eq(racers[i].header, "Bearer ya29.fake-metadata-1");
    }
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 1);
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenRequests"), 1);
    /* And afterwards from the cache. */
    header_is(a, "Bearer ya29.fake-metadata-1");
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenRequests"), 1);
    gcp_auth_free(a);
    stop_fake(&p);
}
END_TEST

START_TEST(cached_until_five_minutes_before_expiry)
{
    static const char *const env[] = {"FAKE_TOKEN_LIFETIME=3600", NULL};
    const int64_t t0 = 1800000000;
    struct fake_proc p;
    struct gcp_auth *a;

    start_fake(&p, env);
    atomic_store(&clock_now, t0);
    a = metadata_auth(&p, test_clock);
    header_is(a, "Bearer ya29.fake-metadata-1");
    atomic_store(&clock_now, t0 + 3600 - 301); /* 301 s left: still cached */
    header_is(a, "Bearer ya29.fake-metadata-1");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 1);
    atomic_store(&clock_now, t0 + 3600 - 299); /* inside the margin: refreshed */
    header_is(a, "Bearer ya29.fake-metadata-2");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 2);
    /* The new expiry counts from the new receipt. */
    atomic_store(&clock_now, t0 + 3600 - 299 + 3600 - 301);
    header_is(a, "Bearer ya29.fake-metadata-2");

    /* invalidate() (after a 401) forces a fetch at once. */
    gcp_auth_invalidate(a);
    header_is(a, "Bearer ya29.fake-metadata-3");
    header_is(a, "Bearer ya29.fake-metadata-3");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 3);
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenRequests"), 3);
    gcp_auth_free(a);
    stop_fake(&p);
}
END_TEST

START_TEST(failed_refresh_keeps_a_valid_token)
{
    static const char *const env[] = {"FAKE_TOKEN_LIFETIME=3600", NULL};
    const int64_t t0 = 1800000000;
    char h[GCP_TOKEN_MAX];
    struct fake_proc p;
    struct gcp_auth *a;
    struct error err;

    start_fake(&p, env);
    atomic_store(&clock_now, t0);
    a = metadata_auth(&p, test_clock);
    header_is(a, "Bearer ya29.fake-metadata-1");
    stop_fake(&p);
    /* The server is gone: a token with 100 s left is still handed out... */
    atomic_store(&clock_now, t0 + 3500);
    header_is(a, "Bearer ya29.fake-metadata-1");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 2);
    /* ...without asking again for 10 s... */
    atomic_store(&clock_now, t0 + 3509);
    header_is(a, "Bearer ya29.fake-metadata-1");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 2);
    atomic_store(&clock_now, t0 + 3511);
    header_is(a, "Bearer ya29.fake-metadata-1");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 3);
    /* ...and once expired, the failure shows. */
    atomic_store(&clock_now, t0 + 3601);
    ck_assert_int_eq(gcp_auth_header(a, h, sizeof(h), &err), ST_UNAVAILABLE);
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 4);
    ck_assert_str_eq(h, "");
    ck_assert_ptr_nonnull(strstr(err.message, "metadata server"));
    gcp_auth_free(a);
}
END_TEST

START_TEST(metadata_flavor_both_ways)
{
    static const char *const no_flavor[] = {NULL};
    char h[GCP_TOKEN_MAX], url[256];
    struct gcp_auth_options o;
    struct http_result res;
    struct fake_proc p;
    struct gcp_auth *a;
    struct error err;
    int64_t t0;

    start_fake(&p, NULL);
    /* The fake, like the real server, refuses a request without the header... */
    ck_assert(str_printf(url, sizeof(url),
                         "%s/computeMetadata/v1/instance/service-accounts/default/token", p.base));
    {
        struct http_call call = {.url = url, .headers = no_flavor};

        http_result_init(&res);
        ck_assert_int_eq(http_client_do(client, &call, &res, &err), ST_OK);
        ck_assert_int_eq(res.status, 403);
        ck_assert_str_eq(http_result_header(&res, "Metadata-Flavor"), "Google");
        http_result_release(&res);
    }
    ck_assert_int_eq(fake_proc_stat(client, &p, "flavorRefusals"), 1);
    /* ...so a token fetched through gcp_auth proves it sends one. */
    a = metadata_auth(&p, NULL);
    header_is(a, "Bearer ya29.fake-metadata-1");
    gcp_auth_free(a);

    /* An answer without Metadata-Flavor: Google is not the metadata server's. */
    memset(&o, 0, sizeof(o));
    ck_assert(str_printf(url, sizeof(url), "%s/not-metadata", p.base));
    o.metadata_base = url;
    a = gcp_auth_new(&o, client, &err);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(gcp_auth_header(a, h, sizeof(h), &err), ST_UNAVAILABLE);
    ck_assert_msg(strstr(err.message, "Metadata-Flavor") != NULL, "%s", err.message);
    gcp_auth_free(a);
    stop_fake(&p);

    /* Nothing listening: unavailable, quickly (three tries, short connect timeout). */
    o.metadata_base = "http://127.0.0.1:1/computeMetadata/v1";
    a = gcp_auth_new(&o, client, &err);
    t0 = time_mono_ms();
    ck_assert_int_eq(gcp_auth_header(a, h, sizeof(h), &err), ST_UNAVAILABLE);
    ck_assert_int_lt(time_mono_ms() - t0, 5000);
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 1);
    gcp_auth_free(a);
}
END_TEST

/* ---- service-account key ----------------------------------------------------- */

START_TEST(key_file_jwt_bearer_grant)
{
    char token_uri[128], env_key[256], h[GCP_TOKEN_MAX];
    const char *env[] = {env_key, NULL};
    json_t *answer, *header, *claims;
    const char *path, *assertion;
    struct gcp_auth_options o;
    struct fake_proc p;
    struct gcp_auth *a;
    struct error err;
    long status;
    int64_t now = time(NULL);

    /* The key file points at the fake; the fake checks with the same key's public half. */
    path = write_key("sa.json", pem_a, "http://placeholder/token", "key-project");
    ck_assert(str_printf(env_key, sizeof(env_key), "FAKE_SA_KEY=%s", path));
    start_fake(&p, env);
    ck_assert(str_printf(token_uri, sizeof(token_uri), "%s/token", p.base));
    path = write_key("sa.json", pem_a, token_uri, "key-project");

    memset(&o, 0, sizeof(o));
    o.credentials_file = path;
    o.metadata_base = "http://127.0.0.1:1/never-used";
    a = gcp_auth_new(&o, client, &err);
    ck_assert_msg(a != NULL, "%s", err.message);
    header_is(a, "Bearer ya29.fake-sa-1");
    header_is(a, "Bearer ya29.fake-sa-1");
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenGrants"), 1);
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenRequests"), 0);

    /* The assertion as the token endpoint received it. */
    answer = fake_proc_call(client, &p, "GET", "/fake/last-assertion", NULL, &status);
    ck_assert_int_eq(status, 200);
    assertion = json_str_or(answer, "assertion", "");
    header = jwt_part(assertion, 0);
    claims = jwt_part(assertion, 1);
    ck_assert_str_eq(json_str_or(header, "alg", ""), "RS256");
    ck_assert_str_eq(json_str_or(header, "typ", ""), "JWT");
    ck_assert_str_eq(json_str_or(header, "kid", ""), KEY_ID);
    ck_assert_str_eq(json_str_or(claims, "iss", ""), SA_EMAIL);
    ck_assert_str_eq(json_str_or(claims, "scope", ""), GCP_SCOPE_CLOUD);
    ck_assert_str_eq(json_str_or(claims, "aud", ""), token_uri);
    ck_assert_int_le(llabs(json_int_or(claims, "iat", 0) - now), 5);
    ck_assert_int_eq(json_int_or(claims, "exp", 0) - json_int_or(claims, "iat", 0), 3600);
    ck_assert_int_eq(json_object_size(claims), 5);
    json_decref(header);
    json_decref(claims);
    json_decref(answer);
    gcp_auth_free(a);

    /* Another scope is what the claim says. */
    o.scope = "https://www.googleapis.com/auth/datastore";
    a = gcp_auth_new(&o, client, &err);
    header_is(a, "Bearer ya29.fake-sa-2");
    answer = fake_proc_call(client, &p, "GET", "/fake/last-assertion", NULL, &status);
    claims = jwt_part(json_str_or(answer, "assertion", ""), 1);
    ck_assert_str_eq(json_str_or(claims, "scope", ""), o.scope);
    json_decref(claims);
    json_decref(answer);
    gcp_auth_free(a);

    /* A key the token endpoint does not know: refused, with the endpoint's error code. */
    o.scope = NULL;
    o.credentials_file = write_key("other.json", pem_b, token_uri, "key-project");
    a = gcp_auth_new(&o, client, &err);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(gcp_auth_header(a, h, sizeof(h), &err), ST_UNAUTHENTICATED);
    ck_assert_msg(strstr(err.message, "invalid_grant") != NULL, "%s", err.message);
    ck_assert_ptr_null(strstr(err.message, "eyJ")); /* never the assertion */
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenRefusals"), 1);
    gcp_auth_free(a);
    stop_fake(&p);
}
END_TEST

START_TEST(token_url_override_keeps_google_audience)
{
    char env_key[256], token_url[128];
    const char *env[] = {env_key, "FAKE_TOKEN_AUDIENCE=https://oauth2.googleapis.com/token", NULL};
    struct gcp_auth_options o;
    struct fake_proc p;
    struct gcp_auth *a;
    struct error err;
    const char *path;

    /* A real key names Google's token endpoint; the override only moves the request. */
    path = write_key("google.json", pem_a, "https://oauth2.googleapis.com/token", "key-project");
    ck_assert(str_printf(env_key, sizeof(env_key), "FAKE_SA_KEY=%s", path));
    start_fake(&p, env);
    ck_assert(str_printf(token_url, sizeof(token_url), "%s/token", p.base));
    memset(&o, 0, sizeof(o));
    o.credentials_file = path;
    o.token_url = token_url;
    a = gcp_auth_new(&o, client, &err);
    ck_assert_msg(a != NULL, "%s", err.message);
    header_is(a, "Bearer ya29.fake-sa-1");
    gcp_auth_free(a);
    stop_fake(&p);
}
END_TEST

START_TEST(bad_key_files_are_refused)
{
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"not json", "json"},
        {"[1]", "json object"},
        {"{\"type\":\"authorized_user\",\"client_email\":\"a@b\",\"private_key\":\"x\"}",
         "service_account"},
        {"{\"client_email\":\"a@b\"}", "private_key"},
        {"{\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE "
         "KEY-----\\n\"}",
         "client_email"},
        {"{\"client_email\":\"a@b\",\"private_key\":\"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----"
         "END PRIVATE KEY-----\\n\"}",
         "private_key"},
    };
    struct gcp_auth_options o;
    struct error err;
    char path[160];
    size_t i;

    memset(&o, 0, sizeof(o));
    ck_assert(str_printf(path, sizeof(path), "%s/bad.json", tmp_dir));
    o.credentials_file = path;
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        FILE *f = fopen(path, "w");

        ck_assert_ptr_nonnull(f);
        fputs(cases[i].text, f);
        fclose(f);
        error_clear(&err);
        ck_assert_msg(gcp_auth_new(&o, client, &err) == NULL, "case %zu accepted", i);
        ck_assert_int_eq(err.status, ST_INVALID);
        ck_assert_msg(strstr(err.message, cases[i].needle) != NULL, "case %zu: %s", i, err.message);
    }
    o.credentials_file = "/nonexistent/key.json";
    ck_assert_ptr_null(gcp_auth_new(&o, client, &err));
    ck_assert_int_eq(err.status, ST_INVALID);
    ck_assert_ptr_null(gcp_auth_new(&o, NULL, &err));
}
END_TEST

/* ---- signing ------------------------------------------------------------------ */

START_TEST(sign_with_key_file)
{
    static const char blob[] = "GOOG4-RSA-SHA256\n20260501T120000Z\nscope\nhash";
    struct gcp_auth_options o;
    unsigned char *sig = NULL;
    struct gcp_auth *a;
    struct error err;
    size_t n = 0;

    memset(&o, 0, sizeof(o));
    o.credentials_file = write_key("sign.json", pem_a, "https://oauth2.googleapis.com/token", NULL);
    a = gcp_auth_new(&o, client, &err);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(gcp_auth_sign(a, blob, strlen(blob), &sig, &n, &err), ST_OK);
    ck_assert_uint_eq(n, 256);
    ck_assert(signature_valid(pem_a, blob, strlen(blob), sig, n));
    ck_assert(!signature_valid(pem_b, blob, strlen(blob), sig, n));
    ck_assert(!signature_valid(pem_a, blob, strlen(blob) - 1, sig, n));
    free(sig);
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 0); /* local: no token needed */
    gcp_auth_free(a);
}
END_TEST

START_TEST(sign_with_iam_signblob)
{
    static const char blob[] = "string to sign";
    char env_key[256], iam[128];
    const char *env[] = {env_key, "FAKE_EMAIL=" SA_EMAIL, NULL};
    struct gcp_auth_options o;
    unsigned char *sig = NULL;
    char base[128];
    struct fake_proc p;
    struct gcp_auth *a;
    struct error err;
    size_t n = 0;

    ck_assert(
        str_printf(env_key, sizeof(env_key), "FAKE_SA_KEY=%s",
                   write_key("iam.json", pem_b, "https://oauth2.googleapis.com/token", NULL)));
    start_fake(&p, env);
    memset(&o, 0, sizeof(o));
    ck_assert(str_printf(base, sizeof(base), "%s/computeMetadata/v1", p.base));
    ck_assert(str_printf(iam, sizeof(iam), "%s/iam", p.base));
    o.metadata_base = base;
    o.iam_base = iam;
    a = gcp_auth_new(&o, client, &err);
    ck_assert_ptr_nonnull(a);
    ck_assert_msg(gcp_auth_sign(a, blob, strlen(blob), &sig, &n, &err) == ST_OK, "%s", err.message);
    ck_assert(signature_valid(pem_b, blob, strlen(blob), sig, n));
    free(sig);
    ck_assert_int_eq(fake_proc_stat(client, &p, "signBlobRequests"), 1);
    ck_assert_int_eq(fake_proc_stat(client, &p, "tokenRequests"), 1);
    ck_assert_int_eq(fake_proc_stat(client, &p, "emailRequests"), 1);
    gcp_auth_free(a);
    stop_fake(&p);
}
END_TEST

/* ---- identity ------------------------------------------------------------------ */

START_TEST(project_and_email_from_key_file)
{
    char out[256];
    struct gcp_auth_options o;
    struct gcp_auth *a;
    struct error err;

    memset(&o, 0, sizeof(o));
    o.credentials_file =
        write_key("id.json", pem_a, "https://oauth2.googleapis.com/token", "key-project");
    o.metadata_base = "http://127.0.0.1:1/never-used";
    a = gcp_auth_new(&o, client, &err);
    ck_assert_int_eq(gcp_auth_project(a, out, sizeof(out), &err), ST_OK);
    ck_assert_str_eq(out, "key-project");
    ck_assert_int_eq(gcp_auth_email(a, out, sizeof(out), &err), ST_OK);
    ck_assert_str_eq(out, SA_EMAIL);
    ck_assert_int_eq(gcp_auth_email(a, out, 4, &err), ST_INVALID);
    gcp_auth_free(a);

    /* A key without project_id names no project. */
    o.credentials_file =
        write_key("noproj.json", pem_a, "https://oauth2.googleapis.com/token", NULL);
    a = gcp_auth_new(&o, client, &err);
    ck_assert_int_eq(gcp_auth_project(a, out, sizeof(out), &err), ST_OK);
    ck_assert_str_eq(out, "");
    gcp_auth_free(a);
}
END_TEST

START_TEST(project_and_email_from_metadata)
{
    static const char *const env[] = {"FAKE_PROJECT=md-project", "FAKE_EMAIL=" MD_EMAIL, NULL};
    struct fake_proc p;
    struct gcp_auth *a;
    struct error err;
    char out[256];

    start_fake(&p, env);
    a = metadata_auth(&p, NULL);
    ck_assert_int_eq(gcp_auth_project(a, out, sizeof(out), &err), ST_OK);
    ck_assert_str_eq(out, "md-project");
    ck_assert_int_eq(gcp_auth_email(a, out, sizeof(out), &err), ST_OK);
    ck_assert_str_eq(out, MD_EMAIL);
    /* Cached: asked once each. */
    ck_assert_int_eq(gcp_auth_project(a, out, sizeof(out), &err), ST_OK);
    ck_assert_int_eq(gcp_auth_email(a, out, sizeof(out), &err), ST_OK);
    ck_assert_int_eq(fake_proc_stat(client, &p, "projectRequests"), 1);
    ck_assert_int_eq(fake_proc_stat(client, &p, "emailRequests"), 1);
    gcp_auth_free(a);
    stop_fake(&p);
}
END_TEST

START_TEST(metadata_identity_token_verifies)
{
    static const char *const env[] = {"FAKE_EMAIL=" MD_EMAIL, NULL};
    const char *issuers[] = {"https://accounts.google.com", NULL};
    const char *headers[] = {"Metadata-Flavor: Google", NULL};
    char url[256], jwks_url[128];
    struct oidc_verifier *v;
    struct oidc_config cfg;
    struct http_result res;
    struct fake_proc p;
    struct error err;

    /* The fake metadata server mints Google-style ID tokens, verified against its JWKS. */
    start_fake(&p, env);
    ck_assert(str_printf(url, sizeof(url),
                         "%s/computeMetadata/v1/instance/service-accounts/default/identity"
                         "?audience=https%%3A%%2F%%2Fworker.example&format=full",
                         p.base));
    ck_assert(str_printf(jwks_url, sizeof(jwks_url), "%s/oauth2/v3/certs", p.base));
    {
        struct http_call call = {.url = url, .headers = headers};

        http_result_init(&res);
        ck_assert_int_eq(http_client_do(client, &call, &res, &err), ST_OK);
        ck_assert_int_eq(res.status, 200);
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.issuers = issuers;
    cfg.audience = "https://worker.example";
    cfg.email = MD_EMAIL;
    cfg.jwks_url = jwks_url;
    cfg.fetch = oidc_http_fetch;
    cfg.fetch_ud = client;
    v = oidc_verifier_new(&cfg, &err);
    ck_assert_ptr_nonnull(v);
    ck_assert_msg(oidc_verify(v, buf_str(&res.body), NULL, &err) == ST_OK, "%s", err.message);
    http_result_release(&res);
    oidc_verifier_free(v);
    ck_assert_int_eq(fake_proc_stat(client, &p, "identityRequests"), 1);
    stop_fake(&p);
}
END_TEST

START_TEST(emulator_mode_has_no_token)
{
    struct gcp_auth_options o;
    unsigned char *sig = NULL;
    struct gcp_auth *a;
    struct error err;
    char out[256] = "x";
    size_t n;

    memset(&o, 0, sizeof(o));
    o.none = true;
    o.metadata_base = "http://127.0.0.1:1/never-used";
    a = gcp_auth_new(&o, client, &err);
    header_is(a, "");
    ck_assert_uint_eq(gcp_auth_fetch_count(a), 0);
    ck_assert_int_eq(gcp_auth_project(a, out, sizeof(out), &err), ST_OK);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(gcp_auth_sign(a, "x", 1, &sig, &n, &err), ST_FAILED_PRECONDITION);
    ck_assert_ptr_null(sig);
    gcp_auth_free(a);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gcp_auth");
    TCase *tc = tcase_create("auth");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, suite_setup, suite_teardown);
    tcase_add_test(tc, concurrent_callers_share_one_refresh);
    tcase_add_test(tc, cached_until_five_minutes_before_expiry);
    tcase_add_test(tc, failed_refresh_keeps_a_valid_token);
    tcase_add_test(tc, metadata_flavor_both_ways);
    tcase_add_test(tc, key_file_jwt_bearer_grant);
    tcase_add_test(tc, token_url_override_keeps_google_audience);
    tcase_add_test(tc, bad_key_files_are_refused);
    tcase_add_test(tc, sign_with_key_file);
    tcase_add_test(tc, sign_with_iam_signblob);
    tcase_add_test(tc, project_and_email_from_key_file);
    tcase_add_test(tc, project_and_email_from_metadata);
    tcase_add_test(tc, metadata_identity_token_verifies);
    tcase_add_test(tc, emulator_mode_has_no_token);
    suite_add_tcase(s, tc);
    return s;
}
