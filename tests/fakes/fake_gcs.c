/*
 * fake_gcs.c - fake-gcs, an in-memory stand-in for Cloud Storage (gcp.md
 * section 3) with the request and response shapes of the real service, for
 * the blob adapter's tests and local runs.
 *
 * JSON API (Google's error envelope {"error": {"code", "message", "errors":
 * [{"message", "domain", "reason", ...}]}}; unknown query parameters get 400):
 *  - POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=...: stores
 *    the body with its Content-Type and answers the Object resource (name,
 *    bucket, generation and size as strings, contentType, md5Hash, crc32c...).
 *    ifGenerationMatch=0 creates only (412 conditionNotMet when the object
 *    exists), ifGenerationMatch=<g> / ifGenerationNotMatch=<g> compare.
 *    Only uploadType=media is implemented.
 *  - GET /storage/v1/b/{bucket}/o/{object} (also under /download/): the
 *    Object resource, or the bytes with alt=media; 404 notFound.
 * Signed URLs (XML API): GET /{bucket}/{object...} with X-Goog-* parameters.
 * The V4 signature is checked as Google does it: the canonical request is
 * rebuilt from what was received (the path re-encoded, the query decoded,
 * re-encoded and sorted without X-Goog-Signature, the signed headers), the
 * string to sign hashed and verified with the public key in
 * FAKE_GCS_SIGNER_PEM (a PEM public key or certificate). Errors are XML like
 * Google's: 400 MalformedSecurityHeader / AuthorizationQueryParametersError /
 * ExpiredToken, 403 SignatureDoesNotMatch (with StringToSign and
 * CanonicalRequest) / AccessDenied, 404 NoSuchKey / NoSuchBucket.
 *
 * FAKE_GCS_TOKEN makes the JSON API require "Authorization: Bearer <token>"
 * with a token starting with its value (401 authError otherwise).
 *
 * Faults: FAKE_GCS_ERROR_RATE answers that fraction of JSON API calls 503
 * backendError; POST /fake/control {"errorRate", "failNext", "failStatus",
 * "failAfterStore", "latencyMs", "reset"} changes them at run time (failNext:
 * the next n JSON API calls fail with failStatus; failAfterStore: an upload
 * among them is stored before it fails, as when a response is lost).
 * GET /fake/stats counts calls, GET /fake/control shows the faults.
 *
 * On start it prints "PORT=<n>" on stdout (PORT=0 picks a free port) and
 * logs to stderr. Run with --help for the settings.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/server.h"

#define PROGRAM            "fake-gcs"
#define BUCKETS_MAX        32
#define TABLE_SIZE         4096
#define QUERY_PARAMS_MAX   64
#define NAME_MAX_BYTES     1024
#define PIECE_MAX          (64 * 1024)
#define SIGNED_HEADERS_MAX 16
#define V4_EXPIRES_MAX     604800

/* ---- settings ------------------------------------------------------------- */

struct fake_settings {
    int64_t port;
    char *bind_address;
    char *log_level;
    char *buckets;
    char *signer_pem;
    char *signer_email;
    char *token;
    double error_rate;
    int64_t seed;
    int64_t max_object_bytes;
    int64_t max_total_bytes;
    int64_t clock_skew_s;
    int64_t shutdown_grace_ms;
};

#define F(field) offsetof(struct fake_settings, field)

/* clang-format off */
static const struct config_var fake_table[] = {
    {"PORT", CFG_INT, "0", 0, 65535, NULL, "TCP port to listen on (0 picks one, printed as PORT=<n>)", F(port), 0, 1},
    {"BIND_ADDRESS", CFG_STRING, "127.0.0.1", 0, 0, NULL, "address to listen on", F(bind_address), 0, 1},
    {"LOG_LEVEL", CFG_ENUM, "WARNING", 0, 0, "DEBUG|INFO|NOTICE|WARNING|ERROR", "minimum log severity (logs go to stderr)", F(log_level), 0, 1},
    {"FAKE_GCS_BUCKETS", CFG_STRING, NULL, 0, 0, NULL, "comma-separated buckets that exist (others get 404); unset: every bucket exists", F(buckets), 0, 1},
    {"FAKE_GCS_SIGNER_PEM", CFG_STRING, NULL, 0, 0, NULL, "PEM public key or certificate that verifies V4 signed URLs; unset: signed URLs get 403", F(signer_pem), 0, 1},
    {"FAKE_GCS_SIGNER_EMAIL", CFG_STRING, NULL, 0, 0, NULL, "when set, signed URLs must name this service account in X-Goog-Credential", F(signer_email), 0, 1},
    {"FAKE_GCS_TOKEN", CFG_STRING, NULL, 0, 0, NULL, "when set, JSON API calls need Authorization: Bearer <a token starting with this> (401 otherwise)", F(token), CFG_SECRET, 1},
    {"FAKE_GCS_ERROR_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fraction of JSON API calls answered 503 backendError", F(error_rate), 0, 1},
    {"FAKE_GCS_SEED", CFG_INT, "1", 0, 9007199254740991.0, NULL, "seed of the fault injection", F(seed), 0, 1},
    {"FAKE_GCS_MAX_OBJECT_BYTES", CFG_INT, "67108864", 1024, 1073741824, NULL, "largest upload accepted (413 beyond)", F(max_object_bytes), 0, 1},
    {"FAKE_GCS_MAX_TOTAL_BYTES", CFG_INT, "1073741824", 1024, 17179869184.0, NULL, "bytes kept in memory (uploads beyond get 429 rateLimitExceeded)", F(max_total_bytes), 0, 1},
    {"FAKE_GCS_CLOCK_SKEW_S", CFG_INT, "900", 0, 86400, NULL, "how far in the future X-Goog-Date may be", F(clock_skew_s), 0, 1},
    {"SHUTDOWN_GRACE_MS", CFG_INT, "1000", 0, 60000, NULL, "time in-flight requests get after SIGTERM", F(shutdown_grace_ms), 0, 1},
};
/* clang-format on */

#undef F

/* ---- state ------------------------------------------------------------------ */

struct object {
    char *bucket;
    char *name;
    unsigned char *data;
    size_t len;
    char *content_type;
    int64_t generation;
    int64_t created_us;
    char md5[32];    /* base64 */
    char crc32c[16]; /* base64 of the big-endian value */
    char md5_hex[40];
    struct object *next;
};

struct faults {
    double error_rate;
    int64_t fail_next;
    int64_t fail_status;
    bool fail_after_store;
    int64_t latency_ms;
};

struct stats {
    int64_t requests, uploads, created, precondition_failed, downloads, metadata_gets, not_found,
        signed_gets, signed_served, signature_mismatch, expired, injected_errors, rejected,
        unauthenticated;
};

struct fake {
    const struct fake_settings *cfg;
    char *buckets[BUCKETS_MAX];
    size_t n_buckets; /* 0: every bucket exists */
    EVP_PKEY *signer; /* NULL: signed URLs are refused */

    pthread_mutex_t lock; /* guards everything below */
    struct object *table[TABLE_SIZE];
    size_t n_objects;
    size_t total_bytes;
    int64_t last_generation;
    struct faults faults;
    struct stats stats;
    uint64_t rng;
};

#define STAT_INC(f, field)                                                                         \
    do {                                                                                           \
        pthread_mutex_lock(&(f)->lock);                                                            \
        (f)->stats.field++;                                                                        \
        pthread_mutex_unlock(&(f)->lock);                                                          \
    } while (0)

/* ---- small helpers ------------------------------------------------------------ */

static uint64_t fnv1a(const char *a, const char *b)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 0x100000001b3ULL;
    h = (h ^ '/') * 0x100000001b3ULL;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 0x100000001b3ULL;
    return h;
}

/* xorshift64*, under the lock. */
static double fake_random_locked(struct fake *f)
{
    uint64_t x = f->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    uint32_t i, j;

    for (i = 0; i < 256; i++) {
        uint32_t c = i;

        for (j = 0; j < 8; j++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

/* CRC-32C (Castagnoli), as Cloud Storage reports it. */
static uint32_t crc32c(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;

    pthread_once(&crc_once, crc_init);
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Percent-encodes s (only unreserved bytes kept, and '/' when keep_slash). */
static void encode(struct buf *out, const char *s, bool keep_slash)
{
    static const char hexd[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (unreserved(c) || (keep_slash && c == '/'))
            buf_append(out, s, 1);
        else
            buf_printf(out, "%%%c%c", hexd[c >> 4], hexd[c & 15]);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes n bytes of a query component ('+' is a space); NULL on a bad escape or a NUL. */
static char *decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;

            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return out;
}

struct qparam {
    char *name;  /* decoded */
    char *value; /* decoded */
    char *enc;   /* re-encoded "name=value", for the canonical query */
};

struct query {
    struct qparam p[QUERY_PARAMS_MAX];
    size_t n;
};

static void query_release(struct query *q)
{
    size_t i;

    for (i = 0; i < q->n; i++) {
        free(q->p[i].name);
        free(q->p[i].value);
        free(q->p[i].enc);
    }
    q->n = 0;
}

/* Parses the raw query of the request target. False on a malformed one. */
static bool query_parse(const char *target, struct query *q)
{
    const char *s = strchr(target, '?');

    memset(q, 0, sizeof(*q));
    if (!s)
        return true;
    s++;
    while (*s) {
        size_t n = strcspn(s, "&"), k = strcspn(s, "=");
        struct qparam *p;
        struct buf b;

        if (n == 0) {
            s++;
            continue;
        }
        if (q->n == QUERY_PARAMS_MAX)
            return false;
        p = &q->p[q->n];
        if (k > n)
            k = n;
        p->name = decode(s, k);
        p->value = decode(k < n ? s + k + 1 : s + n, k < n ? n - k - 1 : 0);
        q->n++;
        if (!p->name || !p->value || !*p->name)
            return false;
        buf_init(&b, PIECE_MAX);
        encode(&b, p->name, false);
        buf_append_str(&b, "=");
        encode(&b, p->value, false);
        p->enc = buf_take(&b, NULL);
        s += n;
        if (*s == '&')
            s++;
    }
    return true;
}

static const char *query_get(const struct query *q, const char *name)
{
    size_t i;

    for (i = 0; i < q->n; i++)
        if (strcmp(q->p[i].name, name) == 0)
            return q->p[i].value;
    return NULL;
}

/* The first parameter not in allowed (NULL-terminated), or NULL. */
static const char *query_unknown(const struct query *q, const char *const *allowed)
{
    size_t i, j;

    for (i = 0; i < q->n; i++) {
        bool ok = false;

        for (j = 0; allowed[j] && !ok; j++)
            ok = strcmp(q->p[i].name, allowed[j]) == 0;
        if (!ok)
            return q->p[i].name;
    }
    return NULL;
}

/* Valid UTF-8 of 1..1024 bytes without CR or LF, as Cloud Storage requires of names. */
static bool object_name_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);

    if (n == 0 || n > NAME_MAX_BYTES || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    while (*p) {
        int extra;

        if (*p == '\r' || *p == '\n')
            return false;
        if (*p < 0x80)
            extra = 0;
        else if ((*p & 0xE0) == 0xC0 && *p >= 0xC2)
            extra = 1;
        else if ((*p & 0xF0) == 0xE0)
            extra = 2;
        else if ((*p & 0xF8) == 0xF0 && *p <= 0xF4)
            extra = 3;
        else
            return false;
        p++;
        while (extra--) {
            if ((*p & 0xC0) != 0x80)
                return false;
            p++;
        }
    }
    return true;
}

/* ---- Google's answers ----------------------------------------------------------- */

/* {"error": {"code", "message", "errors": [{"message", "domain", "reason", ...}]}} */
static void json_error(struct http_response *resp, int code, const char *reason,
                       const char *location, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void json_error(struct http_response *resp, int code, const char *reason,
                       const char *location, const char *fmt, ...)
{
    char msg[512];
    json_t *item;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    item = json_pack("{s:s, s:s, s:s}", "message", msg, "domain", "global", "reason", reason);
    if (location) {
        json_object_set_new(
            item, "locationType",
            json_string(strcmp(location, "Authorization") == 0 || strcmp(location, "If-Match") == 0
                            ? "header"
                            : "parameter"));
        json_object_set_new(item, "location", json_string(location));
    }
    http_respond_json(
        resp, code,
        json_pack("{s:{s:i, s:s, s:[o]}}", "error", "code", code, "message", msg, "errors", item));
}

static void xml_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '&')
            buf_append_str(b, "&amp;");
        else if (*s == '<')
            buf_append_str(b, "&lt;");
        else if (*s == '>')
            buf_append_str(b, "&gt;");
        else
            buf_append(b, s, 1);
    }
}

/* The XML API's error document; extra is name/value pairs (NULL-terminated), may be NULL. */
static void xml_error(struct http_response *resp, int status, const char *code, const char *message,
                      const char *const *extra)
{
    struct buf b;
    size_t i;

    buf_init(&b, 4 * PIECE_MAX);
    buf_printf(&b, "<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code><Message>", code);
    xml_escape(&b, message);
    buf_append_str(&b, "</Message>");
    for (i = 0; extra && extra[i]; i += 2) {
        buf_printf(&b, "<%s>", extra[i]);
        xml_escape(&b, extra[i + 1]);
        buf_printf(&b, "</%s>", extra[i]);
    }
    buf_append_str(&b, "</Error>");
    http_respond_bytes(resp, status, "application/xml; charset=UTF-8", b.data, b.len);
    buf_release(&b);
}

/* ---- objects ------------------------------------------------------------------------ */

static bool bucket_exists(const struct fake *f, const char *bucket)
{
    size_t i;

    if (f->n_buckets == 0)
        return true;
    for (i = 0; i < f->n_buckets; i++)
        if (strcmp(f->buckets[i], bucket) == 0)
            return true;
    return false;
}

/* Under the lock. */
static struct object **object_slot(struct fake *f, const char *bucket, const char *name)
{
    struct object **pp = &f->table[fnv1a(bucket, name) % TABLE_SIZE];

    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->bucket, bucket) == 0 && strcmp((*pp)->name, name) == 0)
            return pp;
    return pp;
}

static void object_free(struct object *o)
{
    if (!o)
        return;
    free(o->bucket);
    free(o->name);
    free(o->data);
    free(o->content_type);
    free(o);
}

/* A copy of an object (the bytes too when with_data), for answering outside the lock. */
static struct object *object_copy(const struct object *o, bool with_data)
{
    struct object *c = xcalloc(1, sizeof(*c));

    *c = *o;
    c->next = NULL;
    c->bucket = xstrdup(o->bucket);
    c->name = xstrdup(o->name);
    c->content_type = xstrdup(o->content_type);
    c->data = NULL;
    if (with_data) {
        c->data = xmalloc(o->len ? o->len : 1);
        if (o->len)
            memcpy(c->data, o->data, o->len);
    }
    return c;
}

static void rfc3339_ms(int64_t us, char *out, size_t cap)
{
    char full[RFC3339_MAX];

    /* Google prints milliseconds: "2026-05-01T12:00:00.123Z". */
    if (time_format_rfc3339(us, full, sizeof(full)) && strlen(full) == 27) {
        full[23] = 'Z';
        full[24] = '\0';
    }
    str_copy(out, cap, full);
}

/* The Object resource (storage#object). */
static json_t *object_json(const struct object *o, const char *host)
{
    char gen[32], size[32], created[RFC3339_MAX], etag_raw[64];
    struct buf enc, link, media, etag;
    json_t *j;

    snprintf(gen, sizeof(gen), "%lld", (long long)o->generation);
    snprintf(size, sizeof(size), "%zu", o->len);
    rfc3339_ms(o->created_us, created, sizeof(created));
    buf_init(&enc, PIECE_MAX);
    encode(&enc, o->name, false);
    buf_init(&link, 2 * PIECE_MAX);
    buf_printf(&link, "http://%s/storage/v1/b/%s/o/%s", host, o->bucket, buf_str(&enc));
    buf_init(&media, 2 * PIECE_MAX);
    buf_printf(&media, "http://%s/download/storage/v1/b/%s/o/%s?generation=%s&alt=media", host,
               o->bucket, buf_str(&enc), gen);
    snprintf(etag_raw, sizeof(etag_raw), "gen:%s/1", gen);
    buf_init(&etag, 128);
    base64_encode(&etag, etag_raw, strlen(etag_raw), B64_STD);
    j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, "
                  "s:s}",
                  "kind", "storage#object", "selfLink", buf_str(&link), "mediaLink",
                  buf_str(&media), "name", o->name, "bucket", o->bucket, "generation", gen,
                  "metageneration", "1", "contentType", o->content_type, "storageClass", "STANDARD",
                  "size", size, "md5Hash", o->md5, "crc32c", o->crc32c, "etag", buf_str(&etag),
                  "timeCreated", created, "updated", created, "timeStorageClassUpdated", created);
    if (j) {
        char id[3 * NAME_MAX_BYTES];

        snprintf(id, sizeof(id), "%s/%s/%s", o->bucket, o->name, gen);
        json_object_set_new(j, "id", json_string(id));
    }
    buf_release(&enc);
    buf_release(&link);
    buf_release(&media);
    buf_release(&etag);
    return j;
}

static void object_headers(struct http_response *resp, const struct object *o)
{
    char v[128];

    snprintf(v, sizeof(v), "%lld", (long long)o->generation);
    http_response_header(resp, "x-goog-generation", v);
    http_response_header(resp, "x-goog-metageneration", "1");
    snprintf(v, sizeof(v), "crc32c=%s,md5=%s", o->crc32c, o->md5);
    http_response_header(resp, "x-goog-hash", v);
    snprintf(v, sizeof(v), "%zu", o->len);
    http_response_header(resp, "x-goog-stored-content-length", v);
    http_response_header(resp, "x-goog-storage-class", "STANDARD");
    snprintf(v, sizeof(v), "\"%s\"", o->md5_hex);
    http_response_header(resp, "ETag", v);
}

/* ---- faults and the JSON API's common checks ------------------------------------------- */

enum fault { FAULT_NONE, FAULT_BEFORE, FAULT_AFTER_STORE };

/* Decides whether this JSON API call fails, and how. */
static enum fault fault_pick(struct fake *f, int *status)
{
    enum fault out = FAULT_NONE;
    int64_t latency;

    pthread_mutex_lock(&f->lock);
    latency = f->faults.latency_ms;
    *status = (int)f->faults.fail_status;
    if (f->faults.fail_next > 0) {
        f->faults.fail_next--;
        out = f->faults.fail_after_store ? FAULT_AFTER_STORE : FAULT_BEFORE;
    } else if (f->faults.error_rate > 0 && fake_random_locked(f) < f->faults.error_rate) {
        *status = 503;
        out = FAULT_BEFORE;
    }
    pthread_mutex_unlock(&f->lock);
    if (latency > 0)
        time_sleep_ms(latency);
    return out;
}

static void fault_answer(struct fake *f, struct http_response *resp, int status)
{
    STAT_INC(f, injected_errors);
    if (status == 401) {
        json_error(resp, 401, "authError", "Authorization", "Invalid Credentials");
        http_response_header(resp, "WWW-Authenticate",
                             "Bearer realm=\"https://accounts.google.com/\"");
        return;
    }
    if (status == 429)
        json_error(resp, 429, "rateLimitExceeded", NULL,
                   "The project exceeded the rate limit for CloudStorage and for this operation.");
    else if (status == 500)
        json_error(resp, 500, "internalError", NULL, "Internal Error");
    else if (status >= 500)
        json_error(resp, status, "backendError", NULL,
                   "We encountered an internal error. Please try again.");
    else
        json_error(resp, status, "invalid", NULL, "Injected error %d.", status);
    if (status == 429 || status == 503)
        http_response_header(resp, "Retry-After", "0");
}

/* Token check; true when the call may go on. */
static bool authorized(struct fake *f, struct http_request *req, struct http_response *resp)
{
    const char *h = http_request_header(req, "Authorization");

    if (!f->cfg->token)
        return true;
    if (h && str_starts_with(h, "Bearer ") && str_starts_with(h + 7, f->cfg->token))
        return true;
    STAT_INC(f, unauthenticated);
    json_error(resp, 401, "required", "Authorization",
               h ? "Invalid Credentials" : "Anonymous caller does not have storage access.");
    http_response_header(resp, "WWW-Authenticate", "Bearer realm=\"https://accounts.google.com/\"");
    return false;
}

/* Parses the query and refuses unknown parameters; true when the call may go on. */
static bool json_api_query(struct fake *f, struct http_request *req, struct http_response *resp,
                           const char *const *allowed, struct query *q)
{
    const char *bad;

    if (!query_parse(http_request_target(req), q)) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "invalid", NULL, "Invalid query string.");
        return false;
    }
    if ((bad = query_unknown(q, allowed)) != NULL) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "invalidParameter", bad, "Invalid parameter: %.100s", bad);
        return false;
    }
    return true;
}

/* An optional generation precondition; false (400 answered) when malformed. */
static bool generation_param(struct fake *f, struct http_response *resp, const struct query *q,
                             const char *name, int64_t *out)
{
    const char *v = query_get(q, name);

    *out = -1;
    if (!v)
        return true;
    if (!str_to_i64(v, 0, INT64_MAX, out)) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "invalid", name, "Invalid argument for %s: %.40s", name, v);
        return false;
    }
    return true;
}

static bool alt_param(struct fake *f, struct http_response *resp, const struct query *q,
                      bool media_ok, bool *media)
{
    const char *alt = query_get(q, "alt");

    *media = alt && strcmp(alt, "media") == 0;
    if (!alt || strcmp(alt, "json") == 0 || (media_ok && *media))
        return true;
    STAT_INC(f, rejected);
    json_error(resp, 400, "invalidAltValue", "alt", "Invalid alt value: %.40s", alt);
    return false;
}

/* ---- JSON API handlers ------------------------------------------------------------------- */

static void handle_upload(struct http_request *req, struct http_response *resp, void *ud)
{
    static const char *const allowed[] = {
        "uploadType",           "name",        "ifGenerationMatch",
        "ifGenerationNotMatch", "alt",         "prettyPrint",
        "projection",           "userProject", NULL};
    struct fake *f = ud;
    const char *bucket = http_request_param(req, "bucket");
    const char *type, *name, *ct = http_request_header(req, "Content-Type");
    const char *host = http_request_header(req, "Host");
    int64_t if_match, if_not_match;
    struct object *o = NULL, **slot, *answer = NULL;
    struct query q;
    const char *body;
    size_t len;
    enum fault fault;
    int fail_status = 503;
    bool media;

    STAT_INC(f, requests);
    STAT_INC(f, uploads);
    if (!json_api_query(f, req, resp, allowed, &q) || !authorized(f, req, resp))
        goto out;
    if (!generation_param(f, resp, &q, "ifGenerationMatch", &if_match) ||
        !generation_param(f, resp, &q, "ifGenerationNotMatch", &if_not_match) ||
        !alt_param(f, resp, &q, false, &media))
        goto out;
    type = query_get(&q, "uploadType");
    name = query_get(&q, "name");
    if (!type) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "wrongUrlForUpload", "uploadType",
                   "Upload requests must include an uploadType URL parameter and a URL path "
                   "beginning with /upload/");
        goto out;
    }
    if (strcmp(type, "media") != 0) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "invalidParameter", "uploadType",
                   "fake-gcs implements uploadType=media only, not %.40s", type);
        goto out;
    }
    if (!name) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "required", "name", "Required");
        goto out;
    }
    if (!object_name_valid(name)) {
        STAT_INC(f, rejected);
        json_error(resp, 400, "invalid", "name", "The specified object name is not valid.");
        goto out;
    }
    if (!bucket_exists(f, bucket)) {
        json_error(resp, 404, "notFound", NULL, "The specified bucket does not exist.");
        goto out;
    }
    fault = fault_pick(f, &fail_status);
    if (fault == FAULT_BEFORE) {
        fault_answer(f, resp, fail_status);
        goto out;
    }
    body = http_request_body(req, &len);
    if (!ct || !*ct)
        ct = "application/octet-stream";

    o = xcalloc(1, sizeof(*o));
    o->bucket = xstrdup(bucket);
    o->name = xstrdup(name);
    o->data = xmalloc(len ? len : 1);
    if (len)
        memcpy(o->data, body, len);
    o->len = len;
    o->content_type = xstrdup(ct);
    o->created_us = time_now_us();
    {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        uint32_t crc = crc32c(o->data, len);
        unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                               (unsigned char)(crc >> 8), (unsigned char)crc};
        struct buf b;

        EVP_Digest(o->data, len, md, &n, EVP_md5(), NULL);
        hex_encode(o->md5_hex, md, n);
        buf_init(&b, 64);
        base64_encode(&b, md, n, B64_STD);
        str_copy(o->md5, sizeof(o->md5), buf_str(&b));
        buf_reset(&b);
        base64_encode(&b, be, sizeof(be), B64_STD);
        str_copy(o->crc32c, sizeof(o->crc32c), buf_str(&b));
        buf_release(&b);
    }

    pthread_mutex_lock(&f->lock);
    slot = object_slot(f, bucket, name);
    if ((if_match >= 0 && (*slot ? (*slot)->generation : 0) != if_match) ||
        (if_not_match >= 0 && (*slot ? (*slot)->generation : 0) == if_not_match)) {
        f->stats.precondition_failed++;
        pthread_mutex_unlock(&f->lock);
        json_error(resp, 412, "conditionNotMet", "If-Match",
                   "At least one of the pre-conditions you specified did not hold.");
        goto out;
    }
    if (f->total_bytes - (*slot ? (*slot)->len : 0) + len > (size_t)f->cfg->max_total_bytes) {
        pthread_mutex_unlock(&f->lock);
        json_error(resp, 429, "rateLimitExceeded", NULL,
                   "fake-gcs holds %zu bytes: FAKE_GCS_MAX_TOTAL_BYTES reached", f->total_bytes);
        goto out;
    }
    /* Generations are µs timestamps, strictly increasing, like Google's. */
    o->generation = o->created_us > f->last_generation ? o->created_us : f->last_generation + 1;
    f->last_generation = o->generation;
    if (*slot) {
        struct object *old = *slot;

        o->next = old->next;
        f->total_bytes -= old->len;
        object_free(old);
    } else {
        o->next = NULL;
        f->n_objects++;
    }
    *slot = o;
    f->total_bytes += len;
    f->stats.created++;
    answer = object_copy(o, false);
    o = NULL;
    pthread_mutex_unlock(&f->lock);
    log_write(LOG_INFO, NULL, "stored gs://%s/%.200s (%zu bytes)", bucket, name, len);

    if (fault == FAULT_AFTER_STORE)
        fault_answer(f, resp, fail_status);
    else
        http_respond_json(resp, 200, object_json(answer, host ? host : "localhost"));
out:
    object_free(o);
    object_free(answer);
    query_release(&q);
}

/* GET /storage/v1/b/{bucket}/o/{object} and /download/...: metadata or bytes. */
static void handle_object_get(struct http_request *req, struct http_response *resp, void *ud)
{
    static const char *const allowed[] = {
        "alt",         "generation", "ifGenerationMatch", "ifGenerationNotMatch",
        "prettyPrint", "projection", "userProject",       NULL};
    struct fake *f = ud;
    const char *bucket = http_request_param(req, "bucket");
    const char *name = http_request_param(req, "object");
    const char *host = http_request_header(req, "Host");
    int64_t generation, if_match, if_not_match;
    struct object *copy = NULL, **slot;
    struct query q;
    int fail_status = 503;
    bool media;

    STAT_INC(f, requests);
    if (!json_api_query(f, req, resp, allowed, &q) || !authorized(f, req, resp))
        goto out;
    if (!generation_param(f, resp, &q, "generation", &generation) ||
        !generation_param(f, resp, &q, "ifGenerationMatch", &if_match) ||
        !generation_param(f, resp, &q, "ifGenerationNotMatch", &if_not_match) ||
        !alt_param(f, resp, &q, true, &media))
        goto out;
    if (media)
        STAT_INC(f, downloads);
    else
        STAT_INC(f, metadata_gets);
    if (fault_pick(f, &fail_status) != FAULT_NONE) {
        fault_answer(f, resp, fail_status);
        goto out;
    }
    if (!bucket_exists(f, bucket)) {
        STAT_INC(f, not_found);
        json_error(resp, 404, "notFound", NULL, "The specified bucket does not exist.");
        goto out;
    }
    pthread_mutex_lock(&f->lock);
    slot = object_slot(f, bucket, name);
    if (*slot && (generation < 0 || (*slot)->generation == generation))
        copy = object_copy(*slot, media);
    pthread_mutex_unlock(&f->lock);
    if (!copy) {
        STAT_INC(f, not_found);
        json_error(resp, 404, "notFound", NULL, "No such object: %s/%.400s", bucket, name);
        goto out;
    }
    if ((if_match >= 0 && copy->generation != if_match) ||
        (if_not_match >= 0 && copy->generation == if_not_match)) {
        if (if_not_match >= 0 && copy->generation == if_not_match) {
            http_respond_bytes(resp, 304, "text/plain", "", 0);
        } else {
            STAT_INC(f, precondition_failed);
            json_error(resp, 412, "conditionNotMet", "If-Match",
                       "At least one of the pre-conditions you specified did not hold.");
        }
        goto out;
    }
    if (media) {
        object_headers(resp, copy);
        http_respond_bytes(resp, 200, copy->content_type, copy->data, copy->len);
    } else {
        http_respond_json(resp, 200, object_json(copy, host ? host : "localhost"));
    }
out:
    object_free(copy);
    query_release(&q);
}

/* POST /storage/v1/b/{bucket}/o without /upload/: Google refuses it the same way. */
static void handle_wrong_upload(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    UNUSED(req);
    STAT_INC(f, requests);
    STAT_INC(f, rejected);
    json_error(resp, 400, "wrongUrlForUpload", "uploadType",
               "Upload requests must include an uploadType URL parameter and a URL path "
               "beginning with /upload/");
}

/* ---- signed URLs ------------------------------------------------------------------------- */

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    struct buf bx, by;
    int c;

    /* By encoded name, then encoded value (Google: "sorted by name, by code point"). */
    buf_init(&bx, PIECE_MAX);
    buf_init(&by, PIECE_MAX);
    encode(&bx, x->name, false);
    encode(&by, y->name, false);
    c = strcmp(buf_str(&bx), buf_str(&by));
    if (c == 0)
        c = strcmp(x->enc, y->enc);
    buf_release(&bx);
    buf_release(&by);
    return c;
}

/* "YYYYMMDDTHHMMSSZ" → µs since the epoch. */
static bool parse_stamp(const char *s, int64_t *out)
{
    char rfc[32];
    size_t i;

    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return false;
    for (i = 0; i < 15; i++)
        if (i != 8 && (s[i] < '0' || s[i] > '9'))
            return false;
    snprintf(rfc, sizeof(rfc), "%.4s-%.2s-%.2sT%.2s:%.2s:%.2sZ", s, s + 4, s + 6, s + 9, s + 11,
             s + 13);
    return time_parse_rfc3339(rfc, out);
}

/* A header value with runs of whitespace collapsed and the ends trimmed. */
static void canonical_header_value(struct buf *b, const char *v)
{
    bool space = false, started = false;

    for (; v && *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = started;
            continue;
        }
        if (space)
            buf_append(b, " ", 1);
        buf_append(b, v, 1);
        space = false;
        started = true;
    }
}

static bool hex_decode(const char *s, unsigned char *out, size_t cap, size_t *n)
{
    size_t len = strlen(s), i;

    if (len % 2 || len / 2 > cap)
        return false;
    for (i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);

        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (unsigned char)(hi * 16 + lo);
    }
    *n = len / 2;
    return true;
}

static void malformed(struct fake *f, struct http_response *resp, const char *code,
                      const char *param, const char *details)
{
    const char *extra[] = {"Details", details, "ParameterName", param, NULL};

    STAT_INC(f, rejected);
    xml_error(resp, 400, code,
              strcmp(code, "MalformedSecurityHeader") == 0
                  ? "Your request has a malformed header."
                  : "Error parsing the X-Goog-* query parameters.",
              extra);
}

/*
 * GET /{bucket}/{object...}: a V4 signed URL. Checks the parameters, the
 * expiry and the signature, then serves the object.
 */
static void handle_signed_get(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    const char *bucket = http_request_param(req, "bucket");
    const char *name = http_request_param(req, "object");
    const char *alg, *cred, *date, *expires, *signed_headers, *signature;
    struct buf path, query, headers, canonical, sts;
    struct query q;
    struct object *copy = NULL, **slot;
    unsigned char sig[1024];
    size_t sig_len = 0, i, nq = 0;
    struct qparam sorted[QUERY_PARAMS_MAX];
    int64_t date_us, expires_s, now = time_now_us();
    char digest[65], scope_date[9], details[256];
    const char *slash;

    STAT_INC(f, signed_gets);
    buf_init(&path, PIECE_MAX);
    buf_init(&query, PIECE_MAX);
    buf_init(&headers, PIECE_MAX);
    buf_init(&canonical, 4 * PIECE_MAX);
    buf_init(&sts, PIECE_MAX);
    if (!query_parse(http_request_target(req), &q)) {
        malformed(f, resp, "MalformedSecurityHeader", "query", "The query string is malformed.");
        goto out;
    }
    alg = query_get(&q, "X-Goog-Algorithm");
    cred = query_get(&q, "X-Goog-Credential");
    date = query_get(&q, "X-Goog-Date");
    expires = query_get(&q, "X-Goog-Expires");
    signed_headers = query_get(&q, "X-Goog-SignedHeaders");
    signature = query_get(&q, "X-Goog-Signature");
    if (!alg && !cred && !signature) {
        xml_error(resp, 403, "AccessDenied", "Access denied.",
                  (const char *const[]){"Details",
                                        "Anonymous caller does not have storage.objects.get "
                                        "access to the Google Cloud Storage object.",
                                        NULL});
        goto out;
    }
    if (!alg || strcmp(alg, "GOOG4-RSA-SHA256") != 0) {
        malformed(f, resp, "AuthorizationQueryParametersError", "X-Goog-Algorithm",
                  "fake-gcs verifies GOOG4-RSA-SHA256 signatures only.");
        goto out;
    }
    if (!date || !parse_stamp(date, &date_us)) {
        malformed(f, resp, "MalformedSecurityHeader", "X-Goog-Date",
                  "X-Goog-Date must be in the ISO 8601 basic format yyyyMMdd'T'HHmmss'Z'.");
        goto out;
    }
    if (!expires || !str_to_i64(expires, 0, INT64_MAX, &expires_s) || expires_s < 1) {
        malformed(f, resp, "MalformedSecurityHeader", "X-Goog-Expires",
                  "X-Goog-Expires must be a positive number of seconds.");
        goto out;
    }
    if (expires_s > V4_EXPIRES_MAX) {
        malformed(f, resp, "AuthorizationQueryParametersError", "X-Goog-Expires",
                  "Query-string authentication version 4 requires the X-Goog-Expires parameter "
                  "to be less than 604801 seconds.");
        goto out;
    }
    /* Credential: <email>/<YYYYMMDD>/<location>/storage/goog4_request, dated X-Goog-Date. */
    slash = cred ? strchr(cred, '/') : NULL;
    memcpy(scope_date, date, 8);
    scope_date[8] = '\0';
    if (!slash || slash == cred || strncmp(slash + 1, scope_date, 8) != 0 || slash[9] != '/' ||
        !strchr(slash + 10, '/') || strcmp(strchr(slash + 10, '/'), "/storage/goog4_request")) {
        malformed(f, resp, "AuthorizationQueryParametersError", "X-Goog-Credential",
                  "X-Goog-Credential must be <email>/<date of X-Goog-Date>/<location>/storage/"
                  "goog4_request.");
        goto out;
    }
    if (!signed_headers || !signature) {
        malformed(f, resp, "AuthorizationQueryParametersError",
                  signature ? "X-Goog-SignedHeaders" : "X-Goog-Signature",
                  "X-Goog-SignedHeaders and X-Goog-Signature are required.");
        goto out;
    }
    if (now > date_us + expires_s * 1000000) {
        char at[RFC3339_MAX];

        rfc3339_ms(date_us + expires_s * 1000000, at, sizeof(at));
        snprintf(details, sizeof(details), "Request signature expired at: %s", at);
        STAT_INC(f, expired);
        xml_error(resp, 400, "ExpiredToken", "Invalid argument.",
                  (const char *const[]){"Details", details, NULL});
        goto out;
    }
    /* ⚠ unverified against Google: how far ahead a signature may be dated. */
    if (date_us > now + f->cfg->clock_skew_s * 1000000) {
        xml_error(resp, 403, "AccessDenied", "Access denied.",
                  (const char *const[]){"Details", "Request is not valid yet.", NULL});
        goto out;
    }
    if (!f->signer) {
        xml_error(resp, 403, "AccessDenied", "Access denied.",
                  (const char *const[]){
                      "Details", "fake-gcs has no signer key (set FAKE_GCS_SIGNER_PEM).", NULL});
        goto out;
    }
    if (f->cfg->signer_email && (strlen(f->cfg->signer_email) != (size_t)(slash - cred) ||
                                 strncmp(cred, f->cfg->signer_email, (size_t)(slash - cred)))) {
        xml_error(
            resp, 403, "AccessDenied", "Access denied.",
            (const char *const[]){"Details", "The signing service account is unknown.", NULL});
        goto out;
    }

    /* The canonical request, rebuilt from what was received. */
    buf_append_str(&path, "/");
    encode(&path, bucket, false);
    buf_append_str(&path, "/");
    encode(&path, name, true);
    for (i = 0; i < q.n; i++)
        if (strcmp(q.p[i].name, "X-Goog-Signature") != 0)
            sorted[nq++] = q.p[i];
    qsort(sorted, nq, sizeof(sorted[0]), qparam_cmp);
    for (i = 0; i < nq; i++)
        buf_printf(&query, "%s%s", i ? "&" : "", sorted[i].enc);
    {
        const char *p = signed_headers;
        size_t count = 0;

        while (*p) {
            size_t n = strcspn(p, ";");
            char hname[64];

            if (n == 0 || n >= sizeof(hname) || ++count > SIGNED_HEADERS_MAX) {
                malformed(f, resp, "AuthorizationQueryParametersError", "X-Goog-SignedHeaders",
                          "X-Goog-SignedHeaders is malformed.");
                goto out;
            }
            memcpy(hname, p, n);
            hname[n] = '\0';
            buf_printf(&headers, "%s:", hname);
            canonical_header_value(&headers, http_request_header(req, hname));
            buf_append_str(&headers, "\n");
            p += n;
            if (*p == ';')
                p++;
        }
        if (!strstr(buf_str(&headers), "host:")) {
            malformed(f, resp, "AuthorizationQueryParametersError", "X-Goog-SignedHeaders",
                      "The host header must be signed.");
            goto out;
        }
    }
    buf_printf(&canonical, "GET\n%s\n%s\n%s\n%s\nUNSIGNED-PAYLOAD", buf_str(&path), buf_str(&query),
               buf_str(&headers), signed_headers);
    sha256_hex(canonical.data, canonical.len, digest);
    buf_printf(&sts, "GOOG4-RSA-SHA256\n%s\n%s\n%s", date, slash + 1, digest);
    {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        bool ok =
            hex_decode(signature, sig, sizeof(sig), &sig_len) && ctx &&
            EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, f->signer) == 1 &&
            EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)sts.data, sts.len) == 1;

        EVP_MD_CTX_free(ctx);
        if (!ok) {
            STAT_INC(f, signature_mismatch);
            log_write(LOG_INFO, NULL, "signature mismatch for /%s/%.200s", bucket, name);
            xml_error(resp, 403, "SignatureDoesNotMatch",
                      "The request signature we calculated does not match the signature you "
                      "provided. Check your Google secret key and signing method.",
                      (const char *const[]){"StringToSign", buf_str(&sts), "CanonicalRequest",
                                            buf_str(&canonical), NULL});
            goto out;
        }
    }

    if (!bucket_exists(f, bucket)) {
        xml_error(resp, 404, "NoSuchBucket", "The specified bucket does not exist.", NULL);
        goto out;
    }
    pthread_mutex_lock(&f->lock);
    slot = object_slot(f, bucket, name);
    if (*slot)
        copy = object_copy(*slot, true);
    pthread_mutex_unlock(&f->lock);
    if (!copy) {
        STAT_INC(f, not_found);
        xml_error(resp, 404, "NoSuchKey", "The specified key does not exist.", NULL);
        goto out;
    }
    STAT_INC(f, signed_served);
    object_headers(resp, copy);
    if (query_get(&q, "response-content-disposition"))
        http_response_header(resp, "Content-Disposition",
                             query_get(&q, "response-content-disposition"));
    http_respond_bytes(resp, 200,
                       query_get(&q, "response-content-type")
                           ? query_get(&q, "response-content-type")
                           : copy->content_type,
                       copy->data, copy->len);
out:
    object_free(copy);
    query_release(&q);
    buf_release(&path);
    buf_release(&query);
    buf_release(&headers);
    buf_release(&canonical);
    buf_release(&sts);
}

/* ---- control, stats, health ------------------------------------------------------------ */

static json_t *faults_json(struct fake *f)
{
    json_t *j;

    pthread_mutex_lock(&f->lock);
    j = json_pack("{s:f, s:I, s:I, s:b, s:I}", "errorRate", f->faults.error_rate, "failNext",
                  (json_int_t)f->faults.fail_next, "failStatus", (json_int_t)f->faults.fail_status,
                  "failAfterStore", f->faults.fail_after_store, "latencyMs",
                  (json_int_t)f->faults.latency_ms);
    pthread_mutex_unlock(&f->lock);
    return j;
}

static void handle_control_get(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    http_respond_json(resp, 200, faults_json(ud));
}

/* Drops every object and zeroes the stats. Under the lock. */
static void reset_locked(struct fake *f)
{
    size_t i;

    for (i = 0; i < TABLE_SIZE; i++) {
        while (f->table[i]) {
            struct object *o = f->table[i];

            f->table[i] = o->next;
            object_free(o);
        }
    }
    f->n_objects = 0;
    f->total_bytes = 0;
    memset(&f->stats, 0, sizeof(f->stats));
}

static void handle_control_set(struct http_request *req, struct http_response *resp, void *ud)
{
    static const char *const fields[] = {"errorRate", "failNext", "failStatus", "failAfterStore",
                                         "latencyMs", "reset",    NULL};
    struct fake *f = ud;
    const json_t *body = http_request_json(req);
    struct faults nf;
    struct error err;
    const char *key;
    json_t *v;
    bool reset = false;

    error_clear(&err);
    if (!json_is_object(body)) {
        error_set(&err, ST_INVALID, NULL, "control body must be a json object");
        http_respond_error(resp, &err);
        return;
    }
    json_object_foreach((json_t *)body, key, v)
    {
        size_t i;
        bool known = false;

        for (i = 0; fields[i] && !known; i++)
            known = strcmp(key, fields[i]) == 0;
        if (!known) {
            error_set(&err, ST_INVALID, "unknown_field", "control: unknown field \"%.40s\"", key);
            http_respond_error(resp, &err);
            return;
        }
    }
    pthread_mutex_lock(&f->lock);
    nf = f->faults;
    pthread_mutex_unlock(&f->lock);
    if (json_get_double(body, "errorRate", JSON_OPTIONAL, 0, 1, &nf.error_rate, &err) != ST_OK ||
        json_get_int(body, "failNext", JSON_OPTIONAL, 0, 1000000, &nf.fail_next, &err) != ST_OK ||
        json_get_int(body, "failStatus", JSON_OPTIONAL, 400, 599, &nf.fail_status, &err) != ST_OK ||
        json_get_bool(body, "failAfterStore", JSON_OPTIONAL, &nf.fail_after_store, &err) != ST_OK ||
        json_get_int(body, "latencyMs", JSON_OPTIONAL, 0, 600000, &nf.latency_ms, &err) != ST_OK ||
        json_get_bool(body, "reset", JSON_OPTIONAL, &reset, &err) != ST_OK) {
        http_respond_error(resp, &err);
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->faults = nf;
    if (reset)
        reset_locked(f);
    pthread_mutex_unlock(&f->lock);
    http_respond_json(resp, 200, faults_json(f));
}

static void handle_stats(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    struct stats s;
    size_t objects, bytes;

    UNUSED(req);
    pthread_mutex_lock(&f->lock);
    s = f->stats;
    objects = f->n_objects;
    bytes = f->total_bytes;
    pthread_mutex_unlock(&f->lock);
    http_respond_json(
        resp, 200,
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                  "s:I}",
                  "requests", (json_int_t)s.requests, "uploads", (json_int_t)s.uploads, "created",
                  (json_int_t)s.created, "preconditionFailed", (json_int_t)s.precondition_failed,
                  "downloads", (json_int_t)s.downloads, "metadataGets", (json_int_t)s.metadata_gets,
                  "notFound", (json_int_t)s.not_found, "signedGets", (json_int_t)s.signed_gets,
                  "signedServed", (json_int_t)s.signed_served, "signatureMismatch",
                  (json_int_t)s.signature_mismatch, "expired", (json_int_t)s.expired,
                  "injectedErrors", (json_int_t)s.injected_errors, "rejected",
                  (json_int_t)s.rejected, "unauthenticated", (json_int_t)s.unauthenticated,
                  "objects", (json_int_t)objects, "bytes", (json_int_t)bytes));
}

static void handle_healthz(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    UNUSED(ud);
    http_respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- main ---------------------------------------------------------------------------------- */

static bool parse_buckets(struct fake *f, const char *list)
{
    const char *p = list;

    while (p && *p) {
        size_t n = strcspn(p, ",");

        if (n > 0) {
            if (f->n_buckets == BUCKETS_MAX)
                return false;
            f->buckets[f->n_buckets] = xmalloc(n + 1);
            memcpy(f->buckets[f->n_buckets], p, n);
            f->buckets[f->n_buckets++][n] = '\0';
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

/* A PEM public key ("BEGIN PUBLIC KEY") or certificate ("BEGIN CERTIFICATE"). */
static EVP_PKEY *load_signer(const char *path)
{
    FILE *fp = fopen(path, "r");
    EVP_PKEY *key = NULL;

    if (!fp)
        return NULL;
    key = PEM_read_PUBKEY(fp, NULL, NULL, NULL);
    if (!key) {
        X509 *cert;

        rewind(fp);
        cert = PEM_read_X509(fp, NULL, NULL, NULL);
        if (cert) {
            key = X509_get_pubkey(cert);
            X509_free(cert);
        }
    }
    fclose(fp);
    return key;
}

static void fake_release(struct fake *f)
{
    size_t i;

    reset_locked(f);
    for (i = 0; i < f->n_buckets; i++)
        free(f->buckets[i]);
    EVP_PKEY_free(f->signer);
    pthread_mutex_destroy(&f->lock);
}

int main(int argc, char **argv)
{
    struct fake_settings cfg;
    struct http_server_options opts;
    struct http_server *srv = NULL;
    struct fake *f = NULL;
    struct error err;
    enum log_severity sev = LOG_WARNING;
    sigset_t stop;
    int sig = 0, code = 1;

    if (argc > 1) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;

        if (!help)
            fprintf(stderr, "%s: unknown argument \"%s\"\n", PROGRAM, argv[1]);
        config_print_help(help ? stdout : stderr, PROGRAM,
                          "an in-memory Cloud Storage (JSON API uploads and downloads, V4 "
                          "signed URLs) for tests",
                          fake_table, ARRAY_SIZE(fake_table), 1);
        return help ? 0 : 2;
    }
    memset(&cfg, 0, sizeof(cfg));
    error_clear(&err);
    if (config_load(fake_table, ARRAY_SIZE(fake_table), 1, &cfg, config_getenv, NULL, &err) !=
        ST_OK) {
        fprintf(stderr, "%s: %s (see %s --help)\n", PROGRAM, err.message, PROGRAM);
        config_release(fake_table, ARRAY_SIZE(fake_table), &cfg);
        return 2;
    }
    log_severity_parse(cfg.log_level, &sev);
    log_init(PROGRAM, NULL, sev, STDERR_FILENO);

    /* Large: the object table is embedded. */
    f = xcalloc(1, sizeof(*f));
    f->cfg = &cfg;
    pthread_mutex_init(&f->lock, NULL);
    f->faults.error_rate = cfg.error_rate;
    f->faults.fail_status = 503;
    f->rng = (uint64_t)cfg.seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (f->rng == 0)
        f->rng = 1;
    if (!parse_buckets(f, cfg.buckets)) {
        fprintf(stderr, "%s: at most %d buckets in FAKE_GCS_BUCKETS\n", PROGRAM, BUCKETS_MAX);
        code = 2;
        goto out;
    }
    if (cfg.signer_pem && !(f->signer = load_signer(cfg.signer_pem))) {
        fprintf(stderr, "%s: cannot read a public key or certificate from FAKE_GCS_SIGNER_PEM=%s\n",
                PROGRAM, cfg.signer_pem);
        code = 2;
        goto out;
    }

    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A test that dies must not leave its fake behind. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) {
        code = 0;
        goto out;
    }

    memset(&opts, 0, sizeof(opts));
    opts.bind_address = cfg.bind_address;
    opts.port = (int)cfg.port;
    opts.max_body_bytes = (size_t)cfg.max_object_bytes;
    opts.thread_stack_bytes = 1 << 20;
    opts.service = PROGRAM;
    opts.access_log = sev <= LOG_INFO;
    srv = http_server_new(&opts, &err);
    if (!srv)
        goto fail;
    /* Specific routes first: the signed-URL route below matches every other path. */
    http_server_route(srv, "GET", "/healthz", 0, handle_healthz, f);
    http_server_route(srv, "GET", "/fake/stats", 0, handle_stats, f);
    http_server_route(srv, "GET", "/fake/control", 0, handle_control_get, f);
    http_server_route(srv, "POST", "/fake/control", HTTP_ROUTE_JSON, handle_control_set, f);
    http_server_route(srv, "POST", "/upload/storage/v1/b/{bucket}/o", 0, handle_upload, f);
    http_server_route(srv, "POST", "/storage/v1/b/{bucket}/o", 0, handle_wrong_upload, f);
    http_server_route(srv, "GET", "/storage/v1/b/{bucket}/o/{object}", 0, handle_object_get, f);
    http_server_route(srv, "GET", "/download/storage/v1/b/{bucket}/o/{object}", 0,
                      handle_object_get, f);
    http_server_route(srv, "GET", "/{bucket}/{object...}", 0, handle_signed_get, f);
    if (http_server_start(srv, &err) != ST_OK)
        goto fail;
    printf("PORT=%d\n", http_server_port(srv));
    fflush(stdout);
    log_write(LOG_NOTICE, NULL, "%s listening on %s:%d", PROGRAM, cfg.bind_address,
              http_server_port(srv));

    while (sigwait(&stop, &sig) != 0)
        ;
    if (http_server_shutdown(srv, (int)cfg.shutdown_grace_ms) > 0) {
        log_warn("%s stopping with requests still running", PROGRAM);
        _exit(0);
    }
    code = 0;
    goto out;
fail:
    fprintf(stderr, "%s: %s\n", PROGRAM, err.message);
out:
    http_server_free(srv);
    if (f)
        fake_release(f);
    free(f);
    config_release(fake_table, ARRAY_SIZE(fake_table), &cfg);
    return code;
}
