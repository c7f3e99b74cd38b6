/*
 * routes.c - the partner API (DESIGN.md section 6) over the batch domain.
 * Handlers translate HTTP to domain calls and back; no business logic here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/providers.h"
#include "app/runtime.h"
#include "batch/batch.h"
#include <strings.h>

#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "creator.h"

struct creator {
    const struct settings *settings;
    struct runtime rt;
    struct batch_env env;
};

static enum lang request_lang(struct http_request *req)
{
    return lang_from_header(http_request_header(req, "Accept-Language"));
}

static void respond_error(struct http_response *resp, struct error *err)
{
    http_respond_error(resp, err);
}

/* Who is calling: with AUTH=apikey, the owner of the request's API key. */
struct caller {
    bool authenticated;
    char user[USER_ID_MAX];
};

static bool resolve_caller(struct creator *c, struct http_request *req, enum lang lang,
                           struct caller *who, struct error *err)
{
    const char *auth = http_request_header(req, "Authorization");
    const char *key = http_request_header(req, "X-API-Key");
    struct api_key k;
    char hash[65];

    memset(who, 0, sizeof(*who));
    if (strcmp(c->settings->auth, "apikey") != 0)
        return true;
    if (!key && auth && strncasecmp(auth, "Bearer ", 7) == 0)
        key = auth + 7;
    while (key && *key == ' ')
        key++;
    if (!key || !*key) {
        lang_error(err, lang, ST_UNAUTHENTICATED, "api_key_required");
        return false;
    }
    /* Keys are stored as hashes: a leaked table does not leak keys. */
    sha256_hex(key, strnlen(key, 512), hash);
    if (store_api_key_get(c->rt.store, hash, &k, err) != ST_OK || k.disabled) {
        if (err->status == ST_NOT_FOUND || k.disabled) {
            lang_error(err, lang, ST_UNAUTHENTICATED, "invalid_api_key");
        } else {
            log_error("cannot check an api key: %s", err->message);
            lang_error(err, lang, ST_UNAVAILABLE, "unavailable");
        }
        return false;
    }
    who->authenticated = true;
    str_copy(who->user, sizeof(who->user), k.user_id);
    log_context_add_str("userId", k.user_id);
    return true;
}

/* The owner a read must match: the key's user when authenticated, else anyone. */
static const char *owner_of(const struct caller *who)
{
    return who->authenticated ? who->user : NULL;
}

/*
 * Per-user fixed windows of one minute, shared by every instance through the
 * store. Only accepted requests spend the budget: a refused request gives
 * back what it counted, so an oversized batch does not lock its user out.
 */
static bool within_rate(struct creator *c, const char *user, int64_t images, enum lang lang,
                        struct error *err)
{
    const struct {
        const char *kind;
        int64_t amount, limit;
    } checks[] = {
        {"batches", 1, c->settings->rate_batches_per_min},
        {"images", images, c->settings->rate_images_per_min},
    };
    int64_t now_s = time_now_us() / 1000000, window = now_s / 60, total;
    bool counted[ARRAY_SIZE(checks)] = {false};
    const char *over = NULL;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(checks) && !over; i++) {
        if (checks[i].limit <= 0)
            continue;
        if (store_rate_count(c->rt.store, user, checks[i].kind, window, checks[i].amount, &total,
                             err) != ST_OK) {
            /* Failing open: an unavailable counter must not stop the business. */
            log_warn("cannot count the rate of %s: %s", user, err->message);
            continue;
        }
        counted[i] = true;
        if (total > checks[i].limit)
            over = checks[i].kind;
    }
    if (!over)
        return true;
    for (i = 0; i < ARRAY_SIZE(checks); i++)
        if (counted[i] && store_rate_count(c->rt.store, user, checks[i].kind, window,
                                           -checks[i].amount, &total, err) != ST_OK)
            log_warn("cannot give back the rate of %s: %s", user, err->message);
    lang_error(err, lang, ST_RATE_LIMITED, "rate_limited", over, (long long)(60 - now_s % 60));
    err->retry_after_s = (int)(60 - now_s % 60);
    return false;
}

static void create_batch(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    enum lang lang = request_lang(req);
    struct create_result res;
    struct caller who;
    struct error err;
    json_t *body, *request = http_request_json(req), *copy = NULL;
    const char *user;
    enum status st;

    if (!resolve_caller(c, req, lang, &who, &err)) {
        respond_error(resp, &err);
        return;
    }
    user = json_str_or(request, "userId", NULL);
    if (who.authenticated) {
        /* The key decides the user; a body naming another one is a client bug. */
        if (user && strcmp(user, who.user) != 0) {
            lang_error(&err, lang, ST_PERMISSION_DENIED, "user_mismatch");
            respond_error(resp, &err);
            return;
        }
        if (json_is_object(request)) {
            copy = json_deep_copy(request);
            json_object_set_new(copy, "userId", json_string(who.user));
            request = copy;
        }
        user = who.user;
    }
    if (user && *user && json_is_object(request) &&
        !within_rate(c, user, (int64_t)json_array_size(json_object_get(request, "images")), lang,
                     &err)) {
        json_decref(copy);
        respond_error(resp, &err);
        return;
    }
    st = batch_create(&c->env, request, http_request_header(req, "Idempotency-Key"), lang, &res,
                      &err);
    json_decref(copy);
    if (st != ST_OK) {
        respond_error(resp, &err);
        return;
    }
    body = json_pack("{s:b, s:s, s:I, s:s, s:f}", "success", 1, "batchId", res.batch.id,
                     "totalImages", (json_int_t)res.batch.total, "type", res.batch.type,
                     "costEstimate", res.batch.cost_estimate);
    if (res.dry_run) {
        json_object_del(body, "batchId");
        json_object_set_new(body, "dryRun", json_true());
        http_respond_json(resp, 200, body);
    } else {
        json_object_set_new(body, "statusUrl", json_sprintf("/api/batch/status/%s", res.batch.id));
        json_object_set_new(body, "status", json_string(batch_status_name(res.batch.status)));
        if (res.replayed) {
            json_object_set_new(body, "replayed", json_true());
            http_response_header(resp, "Idempotent-Replayed", "true");
        }
        log_write(LOG_INFO,
                  json_pack("{s:s, s:I, s:s, s:b}", "batchId", res.batch.id, "totalImages",
                            (json_int_t)res.batch.total, "type", res.batch.type, "replayed",
                            res.replayed),
                  "batch %s created with %lld images", res.batch.id, (long long)res.batch.total);
        http_respond_json(resp, 201, body);
    }
    create_result_release(&res);
}

static bool query_int(struct http_request *req, const char *name, int64_t min, int64_t max,
                      int64_t *out, enum lang lang, struct error *err)
{
    const char *v = http_request_query(req, name);
    char why[128];

    if (!v)
        return true;
    if (str_to_i64(v, min, max, out))
        return true;
    snprintf(why, sizeof(why), "%s must be an integer in [%lld, %lld]", name, (long long)min,
             (long long)max);
    lang_error(err, lang, ST_INVALID, "invalid_query", why);
    return false;
}

static void batch_status(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    enum lang lang = request_lang(req);
    struct item_query q;
    const char *status = http_request_query(req, "status");
    int64_t limit = 100, offset = 0;
    struct caller who;
    struct error err;
    json_t *doc;

    memset(&q, 0, sizeof(q));
    if (!resolve_caller(c, req, lang, &who, &err)) {
        respond_error(resp, &err);
        return;
    }
    if (!query_int(req, "limit", 1, 1000, &limit, lang, &err) ||
        !query_int(req, "offset", 0, 10000000, &offset, lang, &err)) {
        respond_error(resp, &err);
        return;
    }
    if (status) {
        if (!item_status_parse(status, &q.status)) {
            lang_error(&err, lang, ST_INVALID, "invalid_query",
                       "status must be pending, processing, polling, completed, failed or "
                       "cancelled");
            respond_error(resp, &err);
            return;
        }
        q.has_status = true;
    }
    q.limit = (int)limit;
    q.offset = offset;
    q.page_token = http_request_query(req, "pageToken");
    if (batch_status_json(&c->env, http_request_param(req, "batchId"), owner_of(&who), &q, lang,
                          &doc, &err) != ST_OK) {
        respond_error(resp, &err);
        return;
    }
    http_respond_json(resp, 200, doc);
}

static void batch_retry_route(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    struct caller who;
    struct error err;
    json_t *doc;

    if (!resolve_caller(c, req, request_lang(req), &who, &err) ||
        batch_retry(&c->env, http_request_param(req, "batchId"), owner_of(&who), request_lang(req),
                    &doc, &err) != ST_OK) {
        respond_error(resp, &err);
        return;
    }
    http_respond_json(resp, 200, doc);
}

/*
 * POST /api/batch/{batchId}/cancel, owner only: the owner is the userId of
 * the JSON body (or the X-User-Id header), as in batch creation.
 */
static void batch_cancel_route(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    enum lang lang = request_lang(req);
    const char *user = http_request_header(req, "X-User-Id");
    json_t *body = NULL, *doc;
    struct caller who;
    struct error err;
    size_t len;
    const char *raw = http_request_body(req, &len);

    if (!resolve_caller(c, req, lang, &who, &err)) {
        respond_error(resp, &err);
        return;
    }
    if (who.authenticated) {
        user = who.user;
    } else if (len > 0) {
        body = json_parse(raw, len, &err);
        if (!body) {
            lang_localize(&err, lang);
            respond_error(resp, &err);
            return;
        }
        if (json_is_string(json_object_get(body, "userId")))
            user = json_string_value(json_object_get(body, "userId"));
    }
    if (!user || !*user) {
        lang_error(&err, lang, ST_INVALID, "user_id_required");
        respond_error(resp, &err);
    } else if (batch_cancel(&c->env, http_request_param(req, "batchId"), user, lang, &doc, &err) !=
               ST_OK) {
        respond_error(resp, &err);
    } else {
        http_respond_json(resp, 200, doc);
    }
    json_decref(body);
}

/*
 * GET /api/batch/status/{batchId}/events: Server-Sent Events. A "progress"
 * event whenever the counts or the status change (checked every second), a
 * keep-alive comment every 15 s, and the stream ends after the event of a
 * terminal status (or when the server drains).
 */
struct events {
    struct creator *c;
    struct http_server *srv;
    char batch_id[BATCH_ID_MAX];
    char last[512];
    int64_t last_sent_ms;
    bool first;
};

static bool events_next(void *ud, struct buf *out)
{
    struct events *e = ud;
    int64_t start = time_mono_ms();

    for (;;) {
        struct batch b;
        struct batch_counts n;
        struct error err;
        char line[512];
        bool terminal;

        if (http_server_draining(e->srv))
            return false;
        batch_init(&b);
        if (store_get_batch(e->c->rt.store, e->batch_id, &b, &err) != ST_OK ||
            store_get_counts(e->c->rt.store, e->batch_id, &n, &err) != ST_OK) {
            batch_release(&b);
            buf_printf(out, "event: error\ndata: {\"code\":\"%s\"}\n\n", error_code(&err));
            return false;
        }
        terminal = batch_status_is_terminal(b.status);
        snprintf(line, sizeof(line),
                 "{\"batchId\":\"%s\",\"status\":\"%s\",\"progress\":%lld,"
                 "\"totalImages\":%lld,\"processedImages\":%lld,\"successCount\":%lld,"
                 "\"failureCount\":%lld,\"cancelledCount\":%lld}",
                 b.id, batch_status_name(b.status),
                 (long long)(b.total > 0 ? n.processed * 100 / b.total : 0), (long long)b.total,
                 (long long)n.processed, (long long)n.success, (long long)n.failure,
                 (long long)n.cancelled);
        batch_release(&b);
        if (e->first || strcmp(line, e->last) != 0) {
            e->first = false;
            str_copy(e->last, sizeof(e->last), line);
            buf_printf(out, "event: progress\ndata: %s\n\n", line);
            e->last_sent_ms = time_mono_ms();
            return !terminal;
        }
        if (time_mono_ms() - e->last_sent_ms >= 15000) {
            buf_append_str(out, ": keep-alive\n\n");
            e->last_sent_ms = time_mono_ms();
            return true;
        }
        /* Return now and then even when idle, so a closed client is noticed. */
        if (time_mono_ms() - start >= 5000)
            return true;
        time_sleep_ms(1000);
    }
}

static void batch_events(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    struct events *e;
    struct batch b;
    struct caller who;
    struct error err;
    const char *id = http_request_param(req, "batchId");

    if (!resolve_caller(c, req, request_lang(req), &who, &err)) {
        respond_error(resp, &err);
        return;
    }
    batch_init(&b);
    if (store_get_batch(c->rt.store, id, &b, &err) != ST_OK ||
        (who.authenticated && strcmp(b.user_id, who.user) != 0)) {
        if (err.status == ST_NOT_FOUND || who.authenticated)
            lang_error(&err, request_lang(req), ST_NOT_FOUND, "batch_not_found");
        batch_release(&b);
        respond_error(resp, &err);
        return;
    }
    batch_release(&b);
    e = xcalloc(1, sizeof(*e));
    e->c = c;
    e->srv = http_request_server(req);
    e->first = true;
    str_copy(e->batch_id, sizeof(e->batch_id), id);
    http_respond_sse(resp, events_next, e, free);
}

/* GET /api/batch?userId=...&limit=&pageToken=: a user's batches, newest first. */
static void batch_list(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    enum lang lang = request_lang(req);
    const char *user = http_request_query(req, "userId");
    struct caller who;
    char next[PAGE_TOKEN_MAX] = "";
    struct batch *list = NULL;
    struct error err;
    int64_t limit = 20;
    size_t n = 0, i;
    json_t *doc, *arr;

    if (!resolve_caller(c, req, lang, &who, &err)) {
        respond_error(resp, &err);
        return;
    }
    if (who.authenticated)
        user = who.user;
    if (!user)
        user = http_request_header(req, "X-User-Id");
    if (!user || !*user) {
        lang_error(&err, lang, ST_INVALID, "user_id_required");
        respond_error(resp, &err);
        return;
    }
    if (!query_int(req, "limit", 1, 100, &limit, lang, &err)) {
        respond_error(resp, &err);
        return;
    }
    if (store_list_batches(c->rt.store, user, (int)limit, http_request_query(req, "pageToken"),
                           &list, &n, next, &err) != ST_OK) {
        if (err.status == ST_INVALID) {
            char why[ERROR_MSG_MAX];

            str_copy(why, sizeof(why), err.message);
            lang_error(&err, lang, ST_INVALID, "invalid_query", why);
        }
        respond_error(resp, &err);
        return;
    }
    arr = json_array();
    for (i = 0; i < n; i++) {
        char created[RFC3339_MAX] = "";

        time_format_rfc3339(list[i].created_at, created, sizeof(created));
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:I, s:s, s:o}", "batchId", list[i].id, "type",
                           list[i].type, "status", batch_status_name(list[i].status), "totalImages",
                           (json_int_t)list[i].total, "createdAt", created, "statusUrl",
                           json_sprintf("/api/batch/status/%s", list[i].id)));
        batch_release(&list[i]);
    }
    free(list);
    doc = json_pack("{s:o, s:o}", "batches", arr, "nextPageToken",
                    next[0] ? json_string(next) : json_null());
    http_respond_json(resp, 200, doc);
}

/* GET /files/results/{batchId}/{file}: the file blob adapter's objects. */
static void serve_file(struct http_request *req, struct http_response *resp, void *ud)
{
    struct creator *c = ud;
    char key[BLOB_KEY_MAX], ct[128];
    struct buf data;
    struct error err;

    if (!str_printf(key, sizeof(key), "results/%s/%s", http_request_param(req, "batchId"),
                    http_request_param(req, "file")) ||
        !blob_key_valid(key)) {
        error_set(&err, ST_NOT_FOUND, NULL, "no such file");
        respond_error(resp, &err);
        return;
    }
    buf_init(&data, (size_t)c->settings->output_max_bytes);
    if (blob_get(c->rt.blob, key, &data, ct, sizeof(ct), &err) != ST_OK) {
        if (err.status != ST_NOT_FOUND)
            log_error("cannot serve %s: %s", key, err.message);
        respond_error(resp, &err);
    } else {
        http_response_header(resp, "Cache-Control", "public, max-age=86400, immutable");
        http_respond_bytes(resp, 200, ct, data.data, data.len);
    }
    buf_release(&data);
}

static enum status creator_setup(const struct settings *s, struct http_server *srv, void **state,
                                 struct error *err)
{
    struct creator *c = xcalloc(1, sizeof(*c));

    c->settings = s;
    if (runtime_open(s, &c->rt, err) != ST_OK) {
        free(c);
        return err->status ? err->status : ST_INVALID;
    }
    c->env.store = c->rt.store;
    c->env.queue = c->rt.queue;
    c->env.blob = c->rt.blob;
    c->env.cfg = &c->rt.batch_config;
    c->env.now = time_now_us;
    c->env.validate_options = providers_validate_options;
    c->env.item_cost = providers_item_cost;
    if (providers_load_prices(s, err) != ST_OK) {
        runtime_close(&c->rt);
        free(c);
        return ST_INVALID;
    }
    if (s->allow_insecure_urls)
        log_warn("ALLOW_INSECURE_URLS is on: http and private image URLs are accepted (local "
                 "demo only)");
    http_server_route(srv, "POST", "/api/batch/create", HTTP_ROUTE_JSON, create_batch, c);
    http_server_route(srv, "GET", "/api/batch/status/{batchId}", 0, batch_status, c);
    http_server_route(srv, "GET", "/api/batch/status/{batchId}/events", 0, batch_events, c);
    http_server_route(srv, "GET", "/api/batch", 0, batch_list, c);
    http_server_route(srv, "POST", "/api/batch/{batchId}/retry", 0, batch_retry_route, c);
    http_server_route(srv, "POST", "/api/batch/{batchId}/cancel", 0, batch_cancel_route, c);
    if (strcmp(c->rt.blob->name, "fs") == 0)
        http_server_route(srv, "GET", "/files/results/{batchId}/{file}", 0, serve_file, c);
    *state = c;
    return ST_OK;
}

static enum status creator_ready(void *state, struct error *err)
{
    struct creator *c = state;

    return store_ping(c->rt.store, err);
}

static void creator_teardown(void *state)
{
    struct creator *c = state;

    runtime_close(&c->rt);
    free(c);
}

/* The HTTP layer's own errors (413, 415, malformed JSON) in the partner's language. */
static void creator_localize(const struct http_request *req, struct error *err)
{
    lang_localize(err, lang_from_header(http_request_header(req, "Accept-Language")));
}

/*
 *   creator --create-api-key USER [NAME]   prints a new key for USER (shown once)
 *   creator --disable-api-key KEY          refuses KEY from now on
 */
static int creator_command(int argc, char **argv, const struct settings *s)
{
    struct runtime rt;
    struct api_key k;
    struct error err;
    char key[64];
    int code = 1;

    if (argc < 3 ||
        (strcmp(argv[1], "--create-api-key") != 0 && strcmp(argv[1], "--disable-api-key") != 0))
        return -1;
    if (runtime_open(s, &rt, &err) != ST_OK) {
        fprintf(stderr, "creator: %s\n", err.message);
        return 1;
    }
    memset(&k, 0, sizeof(k));
    if (strcmp(argv[1], "--create-api-key") == 0) {
        if (!id_random(key, sizeof(key), "bk_", 40) ||
            !str_copy(k.user_id, sizeof(k.user_id), argv[2]) || !*argv[2]) {
            fprintf(stderr, "creator: invalid user id\n");
            goto out;
        }
        str_copy(k.name, sizeof(k.name), argc > 3 ? argv[3] : "");
        sha256_hex(key, strlen(key), k.hash);
        k.created_at = time_now_us();
        if (store_api_key_put(rt.store, &k, &err) != ST_OK) {
            fprintf(stderr, "creator: cannot store the key: %s\n", err.message);
            goto out;
        }
        printf("%s\n", key);
        code = 0;
    } else {
        sha256_hex(argv[2], strlen(argv[2]), k.hash);
        if (store_api_key_get(rt.store, k.hash, &k, &err) != ST_OK) {
            fprintf(stderr, "creator: %s\n", err.message);
            goto out;
        }
        k.disabled = true;
        if (store_api_key_put(rt.store, &k, &err) != ST_OK) {
            fprintf(stderr, "creator: cannot disable the key: %s\n", err.message);
            goto out;
        }
        code = 0;
    }
out:
    runtime_close(&rt);
    return code;
}

const struct service_def creator_service = {
    "creator",
    "The partner-facing batch API: validates batches, stores them, enqueues one task per "
    "image, reports status and results.\n\nCommands: --create-api-key USER [NAME] prints a new "
    "API key for USER (shown once; stored as its hash); --disable-api-key KEY refuses it.",
    SCOPE_CREATOR,
    creator_setup,
    creator_ready,
    NULL,
    creator_localize,
    creator_command,
    creator_teardown,
};
