#include "blob/gcs_blob.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "core/codec.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

#define V4_ALGORITHM     "GOOG4-RSA-SHA256"
#define V4_PIECE_MAX     (16 * 1024) /* bound on each piece of a signature */
#define V4_EXTRA_MAX     16          /* extra query parameters */
#define URL_MAX          8192        /* a signed URL, or a JSON API URL */
#define CACHE_WAYS       8           /* signed-URL cache: entries per set */
#define RESIGN_DIVISOR   2           /* re-sign once 1/2 of the lifetime has passed */
#define ERROR_BODY_SLACK (64 * 1024) /* room for an error body on a tightly bounded get */
#define BUCKET_MIN       3
#define BUCKET_MAX       222

/* ---- percent-encoding and the V4 pieces ------------------------------------------ */

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

enum status gcs_percent_encode(struct buf *out, const char *s, bool keep_slash)
{
    static const char hexd[] = "0123456789ABCDEF";
    const unsigned char *p;

    for (p = (const unsigned char *)s; *p; p++) {
        enum status st;

        if (unreserved(*p) || (keep_slash && *p == '/')) {
            st = buf_append(out, p, 1);
        } else {
            char esc[3] = {'%', hexd[*p >> 4], hexd[*p & 15]};

            st = buf_append(out, esc, sizeof(esc));
        }
        if (st != ST_OK)
            return st;
    }
    return ST_OK;
}

void gcs_v4_parts_init(struct gcs_v4_parts *p)
{
    buf_init(&p->path, V4_PIECE_MAX);
    buf_init(&p->query, V4_PIECE_MAX);
    buf_init(&p->canonical_request, V4_PIECE_MAX);
    buf_init(&p->string_to_sign, V4_PIECE_MAX);
}

void gcs_v4_parts_release(struct gcs_v4_parts *p)
{
    buf_release(&p->path);
    buf_release(&p->query);
    buf_release(&p->canonical_request);
    buf_release(&p->string_to_sign);
}

struct qparam {
    char *name; /* encoded */
    char *value;
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : strcmp(x->value, y->value);
}

/* Encodes one name and value into q (malloc'd strings). */
static enum status qparam_set(struct qparam *q, const char *name, const char *value)
{
    struct buf b;
    enum status st;

    buf_init(&b, V4_PIECE_MAX);
    st = gcs_percent_encode(&b, name, false);
    q->name = buf_take(&b, NULL);
    if (st == ST_OK)
        st = gcs_percent_encode(&b, value, false);
    q->value = buf_take(&b, NULL);
    buf_release(&b);
    return st;
}

enum status gcs_v4_build(const struct gcs_v4_input *in, struct gcs_v4_parts *p, struct error *err)
{
    struct qparam q[5 + V4_EXTRA_MAX];
    char date[9], stamp[17], expires[24], digest[65];
    char credential[GCS_EMAIL_MAX + 64];
    size_t nq = 0, nextra = 0, i;
    enum status st = ST_OK;

    memset(q, 0, sizeof(q));
    buf_reset(&p->path);
    buf_reset(&p->query);
    buf_reset(&p->canonical_request);
    buf_reset(&p->string_to_sign);
    if (!in->method || !*in->method || !in->host || !*in->host || !in->bucket || !*in->bucket ||
        !in->object || !*in->object || !in->email || !*in->email)
        return error_set(err, ST_INVALID, NULL,
                         "cannot sign url: method, host, bucket, object and email are required");
    if (in->expires_s < 1 || in->expires_s > GCS_URL_LIFETIME_MAX_S)
        return error_set(err, ST_INVALID, NULL,
                         "cannot sign url: expiry of %" PRId64 " s is outside [1, %d]",
                         in->expires_s, GCS_URL_LIFETIME_MAX_S);
    while (in->extra_query && in->extra_query[2 * nextra])
        nextra++;
    if (nextra > V4_EXTRA_MAX)
        return error_set(err, ST_INVALID, NULL, "cannot sign url: more than %d extra parameters",
                         V4_EXTRA_MAX);
    if (!time_format_compact(in->now_us, date, stamp))
        return error_set(err, ST_INVALID, NULL, "cannot sign url: time out of range");
    if (!str_printf(credential, sizeof(credential), "%s/%s/auto/storage/goog4_request", in->email,
                    date))
        return error_set(err, ST_TOO_LARGE, NULL, "cannot sign url: email too long");
    str_printf(expires, sizeof(expires), "%" PRId64, in->expires_s);

    /* Path: /bucket/object, each '/'-separated segment encoded, the slashes kept. */
    if (buf_append_str(&p->path, "/") != ST_OK ||
        gcs_percent_encode(&p->path, in->bucket, false) != ST_OK ||
        buf_append_str(&p->path, "/") != ST_OK ||
        gcs_percent_encode(&p->path, in->object, true) != ST_OK) {
        st = error_set(err, ST_TOO_LARGE, NULL, "cannot sign url: object name too long");
        goto out;
    }

    /* Query: encoded names and values, sorted, joined with '&'. */
    st = qparam_set(&q[nq++], "X-Goog-Algorithm", V4_ALGORITHM);
    if (st == ST_OK)
        st = qparam_set(&q[nq++], "X-Goog-Credential", credential);
    if (st == ST_OK)
        st = qparam_set(&q[nq++], "X-Goog-Date", stamp);
    if (st == ST_OK)
        st = qparam_set(&q[nq++], "X-Goog-Expires", expires);
    if (st == ST_OK)
        st = qparam_set(&q[nq++], "X-Goog-SignedHeaders", "host");
    for (i = 0; i < nextra && st == ST_OK; i++) {
        const char *name = in->extra_query[2 * i], *value = in->extra_query[2 * i + 1];

        if (!value || !*name || strncasecmp(name, "X-Goog-", 7) == 0) {
            st = error_set(err, ST_INVALID, NULL,
                           "cannot sign url: bad extra query parameter \"%.40s\"", name);
            goto out;
        }
        st = qparam_set(&q[nq++], name, value);
    }
    if (st != ST_OK) {
        st = error_set(err, ST_TOO_LARGE, NULL, "cannot sign url: query parameter too long");
        goto out;
    }
    qsort(q, nq, sizeof(q[0]), qparam_cmp);
    for (i = 0; i < nq && st == ST_OK; i++)
        st = buf_printf(&p->query, "%s%s=%s", i ? "&" : "", q[i].name, q[i].value);

    /* Canonical request (the headers end with their own "\n", then an empty line). */
    if (st == ST_OK)
        st = buf_printf(&p->canonical_request, "%s\n%s\n%s\nhost:%s\n\nhost\nUNSIGNED-PAYLOAD",
                        in->method, buf_str(&p->path), buf_str(&p->query), in->host);
    if (st == ST_OK) {
        sha256_hex(p->canonical_request.data, p->canonical_request.len, digest);
        st = buf_printf(&p->string_to_sign, "%s\n%s\n%s/auto/storage/goog4_request\n%s",
                        V4_ALGORITHM, stamp, date, digest);
    }
    if (st != ST_OK)
        st = error_set(err, ST_TOO_LARGE, NULL, "cannot sign url: request longer than %d bytes",
                       V4_PIECE_MAX);
out:
    for (i = 0; i < nq; i++) {
        free(q[i].name);
        free(q[i].value);
    }
    return st;
}

enum status gcs_v4_url(const char *base, const struct gcs_v4_parts *p, const unsigned char *sig,
                       size_t sig_len, char *out, size_t cap, struct error *err)
{
    char *hex = xmalloc(2 * sig_len + 1);
    bool ok;

    hex_encode(hex, sig, sig_len);
    ok = str_printf(out, cap, "%s%s?%s&X-Goog-Signature=%s", base, buf_str(&p->path),
                    buf_str(&p->query), hex);
    free(hex);
    if (!ok)
        return error_set(err, ST_TOO_LARGE, NULL, "signed url longer than %zu bytes", cap);
    return ST_OK;
}

/* ---- state ---------------------------------------------------------------------------- */

struct url_entry {
    char *key; /* NULL: free */
    char *url;
    int64_t signed_us; /* clock at signing (the URL's X-Goog-Date) */
    uint64_t used;     /* tick of the last use, for eviction */
};

struct gcs_blob {
    char bucket[BUCKET_MAX + 1];
    char api_base[GCS_BASE_MAX];
    char url_base[GCS_BASE_MAX];
    char url_host[GCS_BASE_MAX];
    char signer_email[GCS_EMAIL_MAX];
    int64_t lifetime_s;
    struct gcp_auth *auth;
    struct http_client *client;
    long timeout_ms;
    int max_attempts;
    gcs_sign_fn sign;
    void *sign_ud;
    int64_t (*clock_us)(void);

    pthread_mutex_t lock; /* guards the cache */
    struct url_entry *cache;
    size_t nsets;
    uint64_t tick;
    atomic_uint_fast64_t signatures;

    struct metric *m_calls;
    struct metric *m_urls;
};

/* FNV-1a: the cache set of a key. */
static uint64_t key_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/*
 * Copies the cached URL of key into out when it was signed less than half
 * its lifetime ago (so a partner always gets at least half of it). *fits is
 * false when such a URL exists but is longer than cap.
 */
static bool cache_lookup(struct gcs_blob *g, const char *key, int64_t now_us, char *out, size_t cap,
                         bool *fits)
{
    struct url_entry *set = &g->cache[(key_hash(key) % g->nsets) * CACHE_WAYS];
    int64_t fresh_us = g->lifetime_s * 1000000 / RESIGN_DIVISOR;
    bool hit = false;
    size_t i;

    *fits = true;
    pthread_mutex_lock(&g->lock);
    for (i = 0; i < CACHE_WAYS; i++) {
        struct url_entry *e = &set[i];

        if (!e->key || strcmp(e->key, key) != 0)
            continue;
        if (now_us >= e->signed_us && now_us - e->signed_us < fresh_us) {
            *fits = str_copy(out, cap, e->url);
            e->used = ++g->tick;
            hit = true;
        }
        break;
    }
    pthread_mutex_unlock(&g->lock);
    return hit;
}

static void cache_store(struct gcs_blob *g, const char *key, const char *url, int64_t signed_us)
{
    struct url_entry *set = &g->cache[(key_hash(key) % g->nsets) * CACHE_WAYS];
    struct url_entry *slot = NULL;
    size_t i;

    pthread_mutex_lock(&g->lock);
    for (i = 0; i < CACHE_WAYS && !slot; i++)
        if (set[i].key && strcmp(set[i].key, key) == 0)
            slot = &set[i];
    for (i = 0; i < CACHE_WAYS && !slot; i++)
        if (!set[i].key)
            slot = &set[i];
    if (!slot) { /* the set is full: the least recently used entry goes */
        slot = &set[0];
        for (i = 1; i < CACHE_WAYS; i++)
            if (set[i].used < slot->used)
                slot = &set[i];
    }
    if (!slot->key || strcmp(slot->key, key) != 0) {
        free(slot->key);
        slot->key = xstrdup(key);
    }
    free(slot->url);
    slot->url = xstrdup(url);
    slot->signed_us = signed_us;
    slot->used = ++g->tick;
    pthread_mutex_unlock(&g->lock);
}

/* ---- calls ------------------------------------------------------------------------------- */

static void count_call(struct gcs_blob *g, const char *op, enum status st)
{
    const char *labels[2] = {op, status_code(st)};

    metric_add(g->m_calls, labels, 1);
}

/*
 * Performs call with the token (one refresh and retry after a 401). res
 * holds the last response; the HTTP status is for the caller to judge.
 */
static enum status gcs_do(struct gcs_blob *g, struct http_call *call, const char *content_type,
                          struct http_result *res, struct error *err)
{
    char auth_line[GCP_AUTH_LINE_MAX], ct_line[160];
    const char *headers[3];
    enum status st = ST_OK;
    int round;

    for (round = 0; round < 2; round++) {
        size_t n = 0;

        if (content_type) {
            str_printf(ct_line, sizeof(ct_line), "Content-Type: %s", content_type);
            headers[n++] = ct_line;
        }
        if (g->auth) {
            if ((st = gcp_auth_header_line(g->auth, auth_line, sizeof(auth_line), err)) != ST_OK)
                return st;
            if (auth_line[0]) /* "" in emulator mode */
                headers[n++] = auth_line;
        }
        headers[n] = NULL;
        call->headers = headers;
        call->timeout_ms = g->timeout_ms;
        call->max_attempts = g->max_attempts;
        st = http_client_do(g->client, call, res, err);
        if (st != ST_OK || res->status != 401 || !g->auth || round > 0)
            break;
        gcp_auth_invalidate(g->auth);
    }
    call->headers = NULL;
    return st;
}

/* Maps a Google error answer to a status and a message naming op and the object. */
static enum status gcs_error(const struct gcs_blob *g, const char *op, const char *key,
                             const struct http_result *res, struct error *err)
{
    json_t *body = NULL, *e, *errors;
    const char *message = "", *reason = "";
    enum status st;

    if (res->body.len > 0)
        body = json_parse(res->body.data, res->body.len, NULL);
    e = json_object_get(body, "error");
    if (json_is_object(e)) {
        message = json_str_or(e, "message", "");
        errors = json_object_get(e, "errors");
        reason = json_str_or(json_array_get(errors, 0), "reason", "");
    }
    switch (res->status) {
    case 403:
        st =
            strcmp(reason, "rateLimitExceeded") == 0 || strcmp(reason, "userRateLimitExceeded") == 0
                ? ST_RATE_LIMITED
                : ST_PERMISSION_DENIED;
        break;
    case 500:
    case 502:
    case 503:
        st = ST_UNAVAILABLE;
        break;
    default:
        st = status_from_http(res->status);
        if (st == ST_OK || st == ST_INTERNAL)
            st = res->status >= 500 ? ST_UNAVAILABLE : ST_INTERNAL;
        break;
    }
    error_set(err, st, NULL, "cannot %s gs://%s/%.200s: http %ld%s%s%s%.120s", op, g->bucket, key,
              res->status, reason[0] ? " " : "", reason, message[0] ? ": " : "", message);
    if (err)
        err->retry_after_s = res->retry_after_s;
    json_decref(body);
    return st;
}

/* {api_base}{prefix}/b/{bucket}/o{before}{name}{after}, the name fully encoded ('/' too). */
static enum status object_url(const struct gcs_blob *g, const char *prefix, const char *before,
                              const char *key, const char *after, char *out, size_t cap,
                              struct error *err)
{
    struct buf enc;
    bool ok;

    buf_init(&enc, URL_MAX);
    ok = gcs_percent_encode(&enc, key, false) == ST_OK &&
         str_printf(out, cap, "%s%s/b/%s/o%s%s%s", g->api_base, prefix, g->bucket, before,
                    buf_str(&enc), after);
    buf_release(&enc);
    if (!ok)
        return error_set(err, ST_INVALID, NULL, "url of gs://%s/%.64s too long", g->bucket, key);
    return ST_OK;
}

/* Base64 of the MD5 of data, as Google's md5Hash. */
static void md5_base64(const void *data, size_t len, char *out, size_t cap)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    struct buf b;

    buf_init(&b, 64);
    if (EVP_Digest(data, len, md, &n, EVP_md5(), NULL) == 1)
        base64_encode(&b, md, n, B64_STD);
    str_copy(out, cap, buf_str(&b));
    buf_release(&b);
}

/* The Object resource must describe what we sent (size, and md5Hash when present). */
static enum status check_uploaded(const struct gcs_blob *g, const char *key, const void *data,
                                  size_t len, const struct http_result *res, struct error *err)
{
    json_t *obj = json_parse(res->body.data, res->body.len, NULL);
    const char *size = json_str_or(obj, "size", NULL), *md5 = json_str_or(obj, "md5Hash", NULL);
    char want[32], ours[64];
    enum status st = ST_OK;

    str_printf(want, sizeof(want), "%zu", len);
    if (!json_is_object(obj) || !size) {
        st = error_set(err, ST_INTERNAL, NULL,
                       "cannot upload gs://%s/%.200s: answer is not an object resource", g->bucket,
                       key);
    } else if (strcmp(size, want) != 0) {
        st = error_set(err, ST_INTERNAL, NULL,
                       "cannot upload gs://%s/%.200s: stored %.20s bytes of %zu", g->bucket, key,
                       size, len);
    } else if (md5) {
        md5_base64(data, len, ours, sizeof(ours));
        if (strcmp(md5, ours) != 0)
            st = error_set(err, ST_INTERNAL, NULL,
                           "cannot upload gs://%s/%.200s: stored md5 %.40s, sent %s", g->bucket,
                           key, md5, ours);
    }
    json_decref(obj);
    return st;
}

/* Content types go into a header line: printable ASCII only. */
static bool content_type_ok(const char *ct)
{
    size_t n = 0;

    for (; *ct; ct++, n++)
        if ((unsigned char)*ct < 0x20 || (unsigned char)*ct > 0x7e || n >= 127)
            return false;
    return n > 0;
}

/* ---- the port ----------------------------------------------------------------------------- */

static enum status gcs_put(void *state, const char *key, const void *data, size_t len,
                           const char *content_type, struct error *err)
{
    struct gcs_blob *g = state;
    char url[URL_MAX];
    struct http_call call = {0};
    struct http_result res;
    enum status st;

    if (!content_type || !*content_type)
        content_type = "application/octet-stream";
    if (!content_type_ok(content_type))
        return error_set(err, ST_INVALID, NULL, "cannot upload gs://%s/%.200s: bad content type",
                         g->bucket, key);
    http_result_init(&res);
    /* name= takes the whole name encoded, '/' included (gcp.md 3.2). */
    if ((st = object_url(g, "/upload/storage/v1", "?uploadType=media&name=", key,
                         "&ifGenerationMatch=0", url, sizeof(url), err)) != ST_OK)
        goto out;
    call.method = "POST";
    call.url = url;
    call.body = data;
    call.body_len = len;
    /* Create-only: a replay cannot overwrite, so retrying is safe (python-storage#480). */
    call.idempotent = true;
    if ((st = gcs_do(g, &call, content_type, &res, err)) != ST_OK) {
        error_prefix(err, "cannot upload gs://%s/%.200s: ", g->bucket, key);
        goto out;
    }
    if (res.status == 412) {
        st = error_set(err, ST_ALREADY_EXISTS, NULL, "gs://%s/%.200s already exists", g->bucket,
                       key);
        goto out;
    }
    if (res.status != 200) {
        st = gcs_error(g, "upload", key, &res, err);
        goto out;
    }
    st = check_uploaded(g, key, data, len, &res, err);
out:
    count_call(g, "put", st);
    http_result_release(&res);
    return st;
}

static enum status gcs_get(void *state, const char *key, struct buf *out, char *content_type,
                           size_t ct_cap, struct error *err)
{
    struct gcs_blob *g = state;
    char url[URL_MAX];
    struct http_call call = {0};
    struct http_result res;
    size_t room = out->max > out->len ? out->max - out->len : 0;
    enum status st;

    http_result_init(&res);
    if ((st = object_url(g, "/storage/v1", "/", key, "?alt=media", url, sizeof(url), err)) != ST_OK)
        goto out;
    call.method = "GET";
    call.url = url;
    call.idempotent = true;
    /* The object must fit in out; the slack lets an error body through a tight bound. */
    call.max_response_bytes = room > SIZE_MAX - ERROR_BODY_SLACK ? SIZE_MAX : room;
    if (call.max_response_bytes < ERROR_BODY_SLACK)
        call.max_response_bytes = ERROR_BODY_SLACK;
    if ((st = gcs_do(g, &call, NULL, &res, err)) != ST_OK) {
        if (st == ST_TOO_LARGE)
            st = error_set(err, ST_TOO_LARGE, NULL, "gs://%s/%.200s is larger than %zu bytes",
                           g->bucket, key, room);
        else
            error_prefix(err, "cannot download gs://%s/%.200s: ", g->bucket, key);
        goto out;
    }
    if (res.status != 200) {
        st = gcs_error(g, "download", key, &res, err);
        goto out;
    }
    if (res.body.len > room || buf_append(out, res.body.data, res.body.len) != ST_OK) {
        st = error_set(err, ST_TOO_LARGE, NULL, "gs://%s/%.200s is larger than %zu bytes",
                       g->bucket, key, room);
        goto out;
    }
    if (content_type && ct_cap > 0)
        str_copy(content_type, ct_cap,
                 res.content_type[0] ? res.content_type : "application/octet-stream");
out:
    count_call(g, "get", st);
    http_result_release(&res);
    return st;
}

/* Signs string_to_sign with the configured signer; *sig malloc'd. */
static enum status gcs_sign(struct gcs_blob *g, const struct buf *sts, unsigned char **sig,
                            size_t *sig_len, struct error *err)
{
    enum status st;

    if (g->sign)
        st = g->sign(g->sign_ud, sts->data, sts->len, sig, sig_len, err);
    else
        st = gcp_auth_sign(g->auth, sts->data, sts->len, sig, sig_len, err);
    if (st == ST_OK)
        atomic_fetch_add(&g->signatures, 1);
    return st;
}

static enum status gcs_url(void *state, const char *key, char *out, size_t cap, struct error *err)
{
    struct gcs_blob *g = state;
    int64_t now = g->clock_us();
    const char *labels[1];
    char email[GCS_EMAIL_MAX];
    struct gcs_v4_parts parts;
    struct gcs_v4_input in = {0};
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    enum status st;
    bool fits;

    if (cache_lookup(g, key, now, out, cap, &fits)) {
        if (!fits)
            return error_set(err, ST_TOO_LARGE, NULL,
                             "signed url of gs://%s/%.200s is longer "
                             "than %zu bytes",
                             g->bucket, key, cap);
        labels[0] = "cached";
        metric_add(g->m_urls, labels, 1);
        return ST_OK;
    }
    if (!g->sign && !g->auth)
        return error_set(err, ST_FAILED_PRECONDITION, NULL,
                         "cannot sign a url for gs://%s/%.200s: no signer configured", g->bucket,
                         key);
    gcs_v4_parts_init(&parts);
    if (g->sign)
        st = str_copy(email, sizeof(email), g->signer_email) ? ST_OK : ST_INVALID;
    else
        st = gcp_auth_email(g->auth, email, sizeof(email), err);
    if (st == ST_OK && !email[0]) /* emulator mode: no service account */
        st = error_set(err, ST_FAILED_PRECONDITION, NULL, "no service account to sign as");
    if (st != ST_OK)
        goto fail;
    in.method = "GET";
    in.host = g->url_host;
    in.bucket = g->bucket;
    in.object = key;
    in.email = email;
    in.now_us = now;
    in.expires_s = g->lifetime_s;
    if ((st = gcs_v4_build(&in, &parts, err)) != ST_OK ||
        (st = gcs_sign(g, &parts.string_to_sign, &sig, &sig_len, err)) != ST_OK ||
        (st = gcs_v4_url(g->url_base, &parts, sig, sig_len, out, cap, err)) != ST_OK)
        goto fail;
    cache_store(g, key, out, now);
    labels[0] = "signed";
    metric_add(g->m_urls, labels, 1);
    goto out;
fail:
    error_prefix(err, "cannot sign a url for gs://%s/%.200s: ", g->bucket, key);
    labels[0] = "failed";
    metric_add(g->m_urls, labels, 1);
out:
    free(sig);
    gcs_v4_parts_release(&parts);
    return st;
}

static void gcs_close(void *state)
{
    struct gcs_blob *g = state;
    size_t i;

    if (!g)
        return;
    for (i = 0; i < g->nsets * CACHE_WAYS; i++) {
        free(g->cache[i].key);
        free(g->cache[i].url);
    }
    free(g->cache);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static const struct blob_ops gcs_ops = {gcs_close, gcs_put, gcs_get, gcs_url};

/* ---- opening ---------------------------------------------------------------------------- */

static bool bucket_valid(const char *b)
{
    size_t n = strlen(b), i;

    if (n < BUCKET_MIN || n > BUCKET_MAX)
        return false;
    for (i = 0; i < n; i++) {
        char c = b[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

        if (!alnum && c != '-' && c != '_' && c != '.')
            return false;
        if (!alnum && (i == 0 || i == n - 1))
            return false;
    }
    return true;
}

/*
 * Copies base (http(s)://host[:port], one trailing '/' dropped) into out
 * and its host[:port] into host (when non-NULL). False when it is not of
 * that form.
 */
static bool parse_base(const char *base, char *out, size_t cap, char *host, size_t host_cap)
{
    const char *h;
    size_t n;

    if (str_starts_with(base, "https://"))
        h = base + 8;
    else if (str_starts_with(base, "http://"))
        h = base + 7;
    else
        return false;
    n = strcspn(h, "/?#@ \t\r\n");
    if (n == 0 || (h[n] != '\0' && !(h[n] == '/' && h[n + 1] == '\0')))
        return false;
    if ((size_t)(h - base) + n >= cap || (host && n >= host_cap))
        return false;
    memcpy(out, base, (size_t)(h - base) + n);
    out[(h - base) + n] = '\0';
    if (host) {
        memcpy(host, h, n);
        host[n] = '\0';
    }
    return true;
}

struct blob *blob_gcs_open(const struct gcs_options *o, struct error *err)
{
    struct gcs_blob *g;
    struct blob *b;
    size_t entries;

    if (!o || !o->bucket || !o->client) {
        error_set(err, ST_INVALID, NULL, "cannot open gcs blob: bucket and client are required");
        return NULL;
    }
    if (!bucket_valid(o->bucket)) {
        error_set(err, ST_INVALID, NULL, "cannot open gcs blob: invalid bucket name \"%.64s\"",
                  o->bucket);
        return NULL;
    }
    if (o->url_lifetime_s < 0 || o->url_lifetime_s > GCS_URL_LIFETIME_MAX_S) {
        error_set(err, ST_INVALID, NULL,
                  "cannot open gcs blob: url lifetime of %" PRId64 " s is outside [1, %d]",
                  o->url_lifetime_s, GCS_URL_LIFETIME_MAX_S);
        return NULL;
    }
    if (o->sign &&
        (!o->signer_email || !*o->signer_email || strlen(o->signer_email) >= GCS_EMAIL_MAX)) {
        error_set(err, ST_INVALID, NULL, "cannot open gcs blob: a signer needs its email");
        return NULL;
    }
    g = xcalloc(1, sizeof(*g));
    str_copy(g->bucket, sizeof(g->bucket), o->bucket);
    if (!parse_base(o->api_base && *o->api_base ? o->api_base : GCS_DEFAULT_BASE, g->api_base,
                    sizeof(g->api_base), NULL, 0) ||
        !parse_base(o->signed_url_base && *o->signed_url_base ? o->signed_url_base
                                                              : GCS_DEFAULT_BASE,
                    g->url_base, sizeof(g->url_base), g->url_host, sizeof(g->url_host))) {
        free(g);
        error_set(err, ST_INVALID, NULL,
                  "cannot open gcs blob: api and signed-url bases must be http(s)://host[:port]");
        return NULL;
    }
    if (o->sign)
        str_copy(g->signer_email, sizeof(g->signer_email), o->signer_email);
    g->lifetime_s = o->url_lifetime_s ? o->url_lifetime_s : GCS_URL_LIFETIME_MAX_S;
    g->auth = o->auth;
    g->client = o->client;
    g->timeout_ms = o->timeout_ms;
    g->max_attempts = o->max_attempts;
    g->sign = o->sign;
    g->sign_ud = o->sign_ud;
    g->clock_us = o->clock_us ? o->clock_us : time_now_us;
    entries = o->url_cache_max ? o->url_cache_max : GCS_URL_CACHE_DEFAULT;
    g->nsets = (entries + CACHE_WAYS - 1) / CACHE_WAYS;
    g->cache = xcalloc(g->nsets * CACHE_WAYS, sizeof(*g->cache));
    pthread_mutex_init(&g->lock, NULL);
    atomic_init(&g->signatures, 0);
    g->m_calls = metric_counter("gcs_calls_total", "Cloud Storage calls by operation and outcome",
                                "op,outcome");
    g->m_urls = metric_counter("gcs_signed_urls_total",
                               "signed URLs handed out: signed, cached or failed", "result");

    b = xcalloc(1, sizeof(*b));
    b->ops = &gcs_ops;
    b->state = g;
    b->name = "gcs";
    return b;
}

uint64_t blob_gcs_sign_count(const struct blob *b)
{
    const struct gcs_blob *g;

    if (!b || b->ops != &gcs_ops)
        return 0;
    g = b->state;
    return atomic_load(&((struct gcs_blob *)g)->signatures);
}
