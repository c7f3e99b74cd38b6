#include "fake_common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"

#define KEY_FILE_MAX   JWT_KEY_PEM_MAX
#define EMAILS_MAX     32
#define TOKEN_LIFETIME 3600

/* ---- environment ---------------------------------------------------------- */

const char *fake_env_str(const char *name, const char *def)
{
    const char *v = getenv(name);

    return v && v[0] ? v : def;
}

int64_t fake_env_int(const char *name, int64_t def, int64_t min, int64_t max)
{
    const char *v = getenv(name);
    int64_t n;

    if (!v || !v[0])
        return def;
    if (!str_to_i64(v, min, max, &n)) {
        fprintf(stderr, "fake: %s=%s is not an integer in [%lld, %lld]\n", name, v, (long long)min,
                (long long)max);
        exit(2);
    }
    return n;
}

double fake_env_double(const char *name, double def, double min, double max)
{
    const char *v = getenv(name);
    double d;

    if (!v || !v[0])
        return def;
    if (!str_to_double(v, &d) || d < min || d > max) {
        fprintf(stderr, "fake: %s=%s is not a number in [%g, %g]\n", name, v, min, max);
        exit(2);
    }
    return d;
}

/* ---- serving ---------------------------------------------------------------- */

static sigset_t stop_signals;

void fake_signals_block(void)
{
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A test that dies (a failed assertion without fork) must not leave its fakes behind. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        exit(0);
}

struct http_server *fake_server_new(const char *name, size_t max_body)
{
    struct http_server_options o;
    struct http_server *srv;
    struct error err;

    memset(&o, 0, sizeof(o));
    o.bind_address = "127.0.0.1";
    o.port = (int)fake_env_int("PORT", 0, 0, 65535);
    o.max_body_bytes = max_body;
    o.service = name;
    o.access_log = strcmp(fake_env_str("FAKE_ACCESS_LOG", "0"), "1") == 0;
    o.idle_timeout_s = 30;
    srv = http_server_new(&o, &err);
    if (!srv) {
        fprintf(stderr, "%s: %s\n", name, err.message);
        exit(1);
    }
    return srv;
}

int fake_serve(struct http_server *srv, const char *name)
{
    struct error err;
    int sig = 0;

    if (http_server_start(srv, &err) != ST_OK) {
        fprintf(stderr, "%s: %s\n", name, err.message);
        http_server_free(srv);
        return 1;
    }
    printf("PORT=%d\n", http_server_port(srv));
    fflush(stdout);
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    http_server_shutdown(srv, 1000);
    http_server_free(srv);
    return 0;
}

/* ---- answers ------------------------------------------------------------------ */

void fake_respond_rpc_error(struct http_response *resp, int code, const char *rpc_status,
                            const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_respond_json(resp, code,
                      json_pack("{s:{s:i, s:s, s:s}}", "error", "code", code, "message", msg,
                                "status", rpc_status));
}

void fake_sleep_ms(int64_t ms)
{
    if (ms > 0)
        time_sleep_ms(ms);
}

double fake_random(void)
{
    return random_unit();
}

/* ---- the fake Google ID-token issuer ----------------------------------------- */

struct fake_google {
    char *key_path; /* NULL: generate */
    pthread_mutex_t mu;
    char *pem; /* loaded or generated on first use: RSA generation is slow */
    char *jwks;
    char *emails[EMAILS_MAX];
    struct oidc_local_issuer *issuers[EMAILS_MAX];
    size_t n;
};

static char *read_key(const char *path)
{
    char chunk[4096];
    struct buf b;
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f) {
        fprintf(stderr, "fake: cannot open key %s: %s\n", path, strerror(errno));
        exit(1);
    }
    buf_init(&b, KEY_FILE_MAX);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&b, chunk, n) != ST_OK) {
            fprintf(stderr, "fake: key %s is too large\n", path);
            exit(1);
        }
    }
    fclose(f);
    return buf_take(&b, NULL);
}

/* The key and its JWKS, made on first use (the caller holds g->mu). */
static void key_ensure(struct fake_google *g)
{
    json_t *jwks = NULL;
    struct error err;

    if (g->pem)
        return;
    if (g->key_path) {
        g->pem = read_key(g->key_path);
    } else if (jwt_rsa_generate(0, &g->pem, &err) != ST_OK) {
        fprintf(stderr, "fake: %s\n", err.message);
        exit(1);
    }
    if (jwt_jwks_from_private_pem(g->pem, &jwks, &err) != ST_OK) {
        fprintf(stderr, "fake: issuer key: %s\n", err.message);
        exit(1);
    }
    g->jwks = json_dump_compact(jwks);
    json_decref(jwks);
}

struct fake_google *fake_google_new(const char *key_path)
{
    struct fake_google *g = xcalloc(1, sizeof(*g));

    g->key_path = key_path && key_path[0] ? xstrdup(key_path) : NULL;
    pthread_mutex_init(&g->mu, NULL);
    if (g->key_path) {
        /* A configured key is checked at start-up, so that a bad one fails the start. */
        key_ensure(g);
    }
    return g;
}

void fake_google_free(struct fake_google *g)
{
    size_t i;

    if (!g)
        return;
    for (i = 0; i < g->n; i++) {
        oidc_local_issuer_free(g->issuers[i]);
        free(g->emails[i]);
    }
    pthread_mutex_destroy(&g->mu);
    free(g->jwks);
    free(g->pem);
    free(g->key_path);
    free(g);
}

/* The issuer of email (one per service account, all with the same key). */
static struct oidc_local_issuer *issuer_for(struct fake_google *g, const char *email,
                                            struct error *err)
{
    struct oidc_local_issuer_config c;
    struct oidc_local_issuer *li = NULL;
    size_t i;

    pthread_mutex_lock(&g->mu);
    key_ensure(g);
    for (i = 0; i < g->n; i++) {
        if (strcmp(g->emails[i], email) == 0) {
            li = g->issuers[i];
            goto out;
        }
    }
    if (g->n == EMAILS_MAX) {
        error_set(err, ST_RATE_LIMITED, NULL, "fake issuer: more than %d service accounts",
                  EMAILS_MAX);
        goto out;
    }
    memset(&c, 0, sizeof(c));
    c.private_key_pem = g->pem;
    c.issuer = FAKE_GOOGLE_ISSUER;
    c.email = email;
    c.lifetime_s = TOKEN_LIFETIME;
    li = oidc_local_issuer_new(&c, err);
    if (li) {
        g->emails[g->n] = xstrdup(email);
        g->issuers[g->n++] = li;
    }
out:
    pthread_mutex_unlock(&g->mu);
    return li;
}

enum status fake_google_token(struct fake_google *g, const char *audience, const char *email,
                              char **out, struct error *err)
{
    struct oidc_local_issuer *li;

    *out = NULL;
    li = issuer_for(g, email, err);
    if (!li)
        return err ? err->status : ST_INTERNAL;
    return oidc_local_issuer_token(li, audience, out, err);
}

static void serve_jwks(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake_google *g = ud;
    char cc[64];

    UNUSED(req);
    str_printf(cc, sizeof(cc), "public, max-age=%d, must-revalidate, no-transform",
               FAKE_JWKS_MAX_AGE);
    http_response_header(resp, "Cache-Control", cc);
    pthread_mutex_lock(&g->mu);
    key_ensure(g);
    http_respond_bytes(resp, 200, "application/json; charset=UTF-8", g->jwks, strlen(g->jwks));
    pthread_mutex_unlock(&g->mu);
}

void fake_google_routes(struct fake_google *g, struct http_server *srv)
{
    http_server_route(srv, "GET", FAKE_JWKS_PATH, 0, serve_jwks, g);
}
