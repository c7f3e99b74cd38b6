/*
 * routes.c - wiring of the worker: push authentication (the same OIDC code
 * for Google's tokens and the local dispatcher's), providers, the local
 * dispatcher when the queue is local, and POST /api/batch/worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/runtime.h"
#include "batch/batch.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"
#include "app/providers.h"
#include "queue/local_queue.h"
#include "worker.h"

#define LOCAL_ISSUER "https://local-dispatcher.batchd.invalid"
#define LOCAL_EMAIL  "dispatcher@local.batchd.invalid"
#define MAX_ISSUERS  8

struct worker {
    const struct settings *settings;
    struct runtime rt;
    struct batch_env env;
    struct provider_set providers;
    struct buf webhook_key;
    struct oidc_verifier *verifier;
    struct oidc_local_issuer *issuer;
    struct dispatcher *dispatcher;
    char *issuers_text;
    const char *issuers[MAX_ISSUERS + 1];
};

static void worker_push(struct http_request *req, struct http_response *resp, void *ud)
{
    struct worker *w = ud;
    struct push_meta meta;
    struct task_reply reply;
    struct error err;
    const char *body, *v;
    size_t len;
    int64_t n;
    const char *labels[2];

    error_clear(&err);
    if (oidc_verify_authorization(w->verifier, http_request_header(req, "Authorization"), NULL,
                                  &err) != ST_OK) {
        log_write(LOG_WARNING, json_pack("{s:s}", "code", error_code(&err)), "push refused: %s",
                  err.message);
        http_respond_error(resp, &err);
        return;
    }
    memset(&meta, 0, sizeof(meta));
    meta.task_name = http_request_header(req, "X-CloudTasks-TaskName");
    v = http_request_header(req, "X-CloudTasks-TaskRetryCount");
    if (v && str_to_i64(v, 0, INT32_MAX, &n))
        meta.retry_count = n;
    v = http_request_header(req, "X-CloudTasks-TaskExecutionCount");
    if (v && str_to_i64(v, 0, INT32_MAX, &n))
        meta.execution_count = n;
    if (meta.task_name)
        log_context_add_str("taskName", meta.task_name);
    body = http_request_body(req, &len);
    batch_handle_task(&w->env, body, len, &meta, &reply);
    /* On the request's access-log line: what became of the task. */
    log_context_add_str("outcome", reply.outcome);
    labels[0] = reply.outcome;
    labels[1] = NULL;
    metric_add(metric_counter("worker_tasks_total", "tasks handled by outcome", "outcome"), labels,
               1);
    if (reply.retry_after_s > 0) {
        char ra[16];

        snprintf(ra, sizeof(ra), "%d", reply.retry_after_s);
        http_response_header(resp, "Retry-After", ra);
    }
    http_respond_json(resp, reply.http_status,
                      json_pack("{s:s, s:s}", "outcome", reply.outcome, "message", reply.message));
}

/* Reads the local dispatcher's key, creating it (0600) on first start. */
static char *load_or_create_key(const char *path, struct error *err)
{
    char dir[4096], *slash, *pem = NULL;
    struct buf text;
    FILE *f;

    f = fopen(path, "r");
    if (f) {
        char chunk[4096];
        size_t n;

        buf_init(&text, 64 * 1024);
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
            if (buf_append(&text, chunk, n) != ST_OK)
                break;
        fclose(f);
        return buf_take(&text, NULL);
    }
    if (!str_copy(dir, sizeof(dir), path)) {
        error_set(err, ST_INVALID, NULL, "key path too long");
        return NULL;
    }
    for (slash = dir + 1; (slash = strchr(slash, '/')) != NULL; slash++) {
        *slash = '\0';
        mkdir(dir, 0700);
        *slash = '/';
    }
    if (jwt_rsa_generate(2048, &pem, err) != ST_OK)
        return NULL;
    {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        size_t len = strlen(pem);

        if (fd < 0 && errno == EEXIST) {
            /* Another worker won the race: use its key. */
            free(pem);
            return load_or_create_key(path, err);
        }
        if (fd < 0 || write(fd, pem, len) != (ssize_t)len) {
            error_set(err, ST_IO, NULL, "cannot write %s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            free(pem);
            return NULL;
        }
        close(fd);
    }
    log_info("created the local dispatcher key %s", path);
    return pem;
}

static enum status mint(void *ud, const char *audience, char **token, struct error *err)
{
    return oidc_local_issuer_token(ud, audience, token, err);
}

/* OIDC_ISSUERS="a,b": the list the verifier accepts (pointers into issuers_text). */
static void split_issuers(struct worker *w, const char *text)
{
    char *p;
    size_t n = 0;

    w->issuers_text = xstrdup(text);
    for (p = w->issuers_text; p && *p && n < MAX_ISSUERS;) {
        char *comma = strchr(p, ',');

        if (comma)
            *comma = '\0';
        if (*p)
            w->issuers[n++] = p;
        p = comma ? comma + 1 : NULL;
    }
    w->issuers[n] = NULL;
}

static enum status setup_auth(struct worker *w, bool local_queue, struct error *err)
{
    const struct settings *s = w->settings;
    struct oidc_config oc;

    memset(&oc, 0, sizeof(oc));
    oc.audience = s->oidc_audience;
    if (local_queue) {
        struct oidc_local_issuer_config lc;
        char *pem = load_or_create_key(s->local_key_path, err);

        if (!pem)
            return err->status;
        memset(&lc, 0, sizeof(lc));
        lc.private_key_pem = pem;
        lc.issuer = LOCAL_ISSUER;
        lc.email = s->oidc_service_account ? s->oidc_service_account : LOCAL_EMAIL;
        w->issuer = oidc_local_issuer_new(&lc, err);
        free(pem);
        if (!w->issuer)
            return err->status;
        w->issuers[0] = LOCAL_ISSUER;
        oc.issuers = w->issuers;
        oc.email = lc.email;
        oc.jwks_json = oidc_local_issuer_jwks(w->issuer);
    } else {
        if (!s->oidc_service_account)
            return error_set(err, ST_INVALID, "invalid_config",
                             "missing OIDC_SERVICE_ACCOUNT: the worker must pin the identity of "
                             "the tasks' service account");
        if (s->oidc_issuers) {
            split_issuers(w, s->oidc_issuers);
            oc.issuers = w->issuers;
        }
        oc.email = s->oidc_service_account;
        oc.jwks_url = s->oidc_jwks_url;
        oc.fetch = oidc_http_fetch;
        oc.fetch_ud = w->rt.client;
    }
    w->verifier = oidc_verifier_new(&oc, err);
    return w->verifier ? ST_OK : err->status;
}

static enum status worker_setup(const struct settings *s, struct http_server *srv, void **state,
                                struct error *err)
{
    struct worker *w = xcalloc(1, sizeof(*w));
    bool local_queue;

    buf_init(&w->webhook_key, 1024);

    w->settings = s;
    if (runtime_open(s, &w->rt, err) != ST_OK)
        goto fail;
    local_queue = strcmp(w->rt.queue->name, "local") == 0;
    if (setup_auth(w, local_queue, err) != ST_OK)
        goto fail;
    if (providers_load_prices(s, err) != ST_OK ||
        provider_set_open(s, w->rt.client, &w->providers, err) != ST_OK)
        goto fail;
    w->env.store = w->rt.store;
    w->env.queue = w->rt.queue;
    w->env.blob = w->rt.blob;
    w->env.providers = w->providers.routes;
    w->env.n_providers = w->providers.n_routes;
    w->env.item_cost = providers_item_cost;
    w->env.fetch = providers_fetch;
    w->env.fetch_ud = &w->providers;
    w->env.deliver = providers_deliver;
    w->env.deliver_ud = &w->providers;
    if (s->webhook_secret) {
        if (providers_webhook_key(s->webhook_secret, &w->webhook_key, err) != ST_OK)
            goto fail;
        w->env.webhook_key = (const unsigned char *)w->webhook_key.data;
        w->env.webhook_key_len = w->webhook_key.len;
    } else {
        log_warn("WEBHOOK_SECRET is not set: webhooks are delivered unsigned");
    }
    w->env.cfg = &w->rt.batch_config;
    w->env.now = time_now_us;
    http_server_route(srv, "POST", "/api/batch/worker", 0, worker_push, w);
    if (local_queue && s->dispatcher) {
        struct dispatcher_options d;

        memset(&d, 0, sizeof(d));
        d.sqlite_path = s->sqlite_path;
        d.qc = &w->rt.queue_config;
        d.target_url = s->worker_url;
        d.audience = s->oidc_audience;
        d.mint = mint;
        d.mint_ud = w->issuer;
        d.client = w->rt.client;
        d.duplicate_probability = s->dispatcher_duplicate_rate;
        w->dispatcher = dispatcher_start(&d, err);
        if (!w->dispatcher)
            goto fail;
        log_write(LOG_INFO, json_pack("{s:s}", "target", s->worker_url),
                  "local dispatcher pushing to %s", s->worker_url);
    }
    *state = w;
    return ST_OK;
fail:
    worker_service.teardown(w);
    return err->status ? err->status : ST_INVALID;
}

static enum status worker_ready(void *state, struct error *err)
{
    struct worker *w = state;

    return store_ping(w->rt.store, err);
}

/* Before the server drains: stop pushing, so in-flight pushes are the last ones. */
static void worker_draining(void *state)
{
    struct worker *w = state;

    if (w->dispatcher) {
        dispatcher_stop(w->dispatcher, (int)w->settings->shutdown_grace_ms);
        w->dispatcher = NULL;
    }
}

static void worker_teardown(void *state)
{
    struct worker *w = state;

    if (!w)
        return;
    worker_draining(w);
    provider_set_close(&w->providers);
    buf_release(&w->webhook_key);
    oidc_verifier_free(w->verifier);
    oidc_local_issuer_free(w->issuer);
    runtime_close(&w->rt);
    free(w->issuers_text);
    free(w);
}

const struct service_def worker_service = {
    "worker",
    "The Cloud Tasks push target: verifies each push, calls the provider, stores the output and "
    "updates the batch counters exactly once.",
    SCOPE_WORKER,
    worker_setup,
    worker_ready,
    worker_draining,
    NULL,
    NULL,
    worker_teardown,
};
