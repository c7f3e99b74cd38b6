#include "providers/fetch.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

#define URL_MSG_MAX 160

static const char *const allowed_types[] = {
    "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
};

/* ---- helpers -------------------------------------------------------------- */

static bool brand_is(const uint8_t *p, const char *brand)
{
    return memcmp(p, brand, 4) == 0;
}

/*
 * HEIF files start with an ISO-BMFF "ftyp" box: size, "ftyp", the major
 * brand, a version, then compatible brands. HEIC (HEVC-coded) has brands of
 * its own; "mif1"/"msf1" are plain HEIF unless the file says it is AVIF,
 * which the providers do not take.
 */
static const char *sniff_heif(const uint8_t *p, size_t len)
{
    static const char *const heic[] = {"heic", "heix", "hevc", "hevx",
                                       "heim", "heis", "hevm", "hevs"};
    uint32_t box;
    size_t i, end;

    if (len < 12 || memcmp(p + 4, "ftyp", 4) != 0)
        return NULL;
    for (i = 0; i < ARRAY_SIZE(heic); i++)
        if (brand_is(p + 8, heic[i]))
            return "image/heic";
    if (!brand_is(p + 8, "mif1") && !brand_is(p + 8, "msf1"))
        return NULL;
    box = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    end = box < len ? box : len;
    for (i = 16; i + 4 <= end; i += 4)
        if (brand_is(p + i, "avif") || brand_is(p + i, "avis"))
            return NULL;
    return "image/heif";
}

const char *image_sniff_type(const void *data, size_t len)
{
    const uint8_t *p = data;

    if (!p)
        return NULL;
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return "image/jpeg";
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return "image/webp";
    return sniff_heif(p, len);
}

void media_type_normalise(const char *header, char *out, size_t cap)
{
    size_t n, i;

    ASSERT(out && cap > 0);
    out[0] = '\0';
    if (!header)
        return;
    while (*header == ' ' || *header == '\t')
        header++;
    n = strcspn(header, ";");
    while (n > 0 && (header[n - 1] == ' ' || header[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    for (i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)header[i]);
    out[n] = '\0';
    if (strcmp(out, "image/jpg") == 0 || strcmp(out, "image/pjpeg") == 0)
        str_copy(out, cap, "image/jpeg");
}

bool image_type_allowed(const char *media_type)
{
    size_t i;

    for (i = 0; media_type && i < ARRAY_SIZE(allowed_types); i++)
        if (strcmp(media_type, allowed_types[i]) == 0)
            return true;
    return false;
}

/* The URL for messages and logs: no query, no fragment (signed URLs carry secrets). */
static void url_for_message(const char *url, char *out, size_t cap)
{
    size_t n = strcspn(url, "?#");
    const char *scheme = strstr(url, "://");

    /* Drop user:password@ too. */
    if (scheme && (size_t)(scheme - url) < n) {
        const char *auth = scheme + 3;
        const char *at = memchr(auth, '@', strcspn(auth, "/?#"));

        if (at) {
            size_t pre = (size_t)(auth - url);

            if (pre >= cap)
                pre = cap - 1;
            memcpy(out, url, pre);
            url_for_message(at + 1, out + pre, cap - pre);
            return;
        }
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(out, url, n);
    out[n] = '\0';
}

static void count_fetch(const char *outcome, double seconds)
{
    const char *labels[] = {outcome};

    metric_add(metric_counter("image_fetches_total", "partner image fetches by outcome", "outcome"),
               labels, 1);
    metric_observe(metric_histogram("image_fetch_seconds", "partner image fetch latency", "",
                                    metrics_latency_buckets, metrics_latency_buckets_n),
                   NULL, seconds);
}

/* Maps a non-2xx answer of the image's server to a status (see fetch.h). */
static enum status fail_http(long code, int retry_after_s, const char *url_msg, struct error *err)
{
    enum status st;
    const char *what = "";

    if (code >= 300 && code < 400) {
        st = ST_INVALID;
        what = " (redirects are not followed)";
    } else if (code == 404 || code == 410) {
        st = ST_NOT_FOUND;
    } else if (code == 401 || code == 403) {
        st = ST_PERMISSION_DENIED;
    } else if (code == 408 || code == 504) {
        st = ST_TIMEOUT;
    } else if (code == 429) {
        st = ST_RATE_LIMITED;
    } else if (code >= 400 && code < 500) {
        st = ST_INVALID;
    } else {
        st = ST_UNAVAILABLE; /* 5xx, and the 1xx/others nobody should send */
    }
    error_set(err, st, "image_fetch_failed", "cannot fetch image %s: http %ld%s", url_msg, code,
              what);
    err->retry_after_s = st == ST_RATE_LIMITED || st == ST_UNAVAILABLE ? retry_after_s : 0;
    return st;
}

/* Maps a failure of the HTTP client itself (no usable answer) to fetch's codes. */
static enum status fail_transport(enum status st, const struct error *cerr, const char *url_msg,
                                  size_t max_bytes, struct error *err)
{
    switch (st) {
    case ST_TOO_LARGE:
        return error_set(err, ST_TOO_LARGE, "image_too_large",
                         "cannot fetch image %s: larger than %zu bytes", url_msg, max_bytes);
    case ST_PERMISSION_DENIED:
        return error_set(err, ST_PERMISSION_DENIED, "image_url_not_allowed", "%s", cerr->message);
    case ST_INVALID:
        return error_set(err, ST_INVALID, "image_url_invalid", "%s", cerr->message);
    case ST_TIMEOUT:
    case ST_UNAVAILABLE:
        return error_set(err, st, "image_fetch_failed", "%s", cerr->message);
    default:
        return error_set(err, st == ST_OK ? ST_INTERNAL : st, "image_fetch_failed", "%s",
                         cerr->message);
    }
}

/*
 * Decides the type of the body from its declared type and its magic bytes
 * (see fetch.h). ST_OK with the type in content_type, else
 * ST_UNSUPPORTED_MEDIA.
 */
static enum status check_type(const char *declared_header, const struct buf *body,
                              const char *url_msg, char *content_type, struct error *err)
{
    char declared[FETCH_CONTENT_TYPE_MAX];
    const char *sniffed = image_sniff_type(body->data, body->len);
    bool generic;

    media_type_normalise(declared_header, declared, sizeof(declared));
    generic = !declared[0] || strcmp(declared, "application/octet-stream") == 0 ||
              strcmp(declared, "binary/octet-stream") == 0;
    if (!generic && !image_type_allowed(declared))
        return error_set(err, ST_UNSUPPORTED_MEDIA, "image_unsupported_type",
                         "cannot use image %s: content type \"%.40s\" is not png, jpeg, webp, "
                         "heic or heif",
                         url_msg, declared);
    if (!sniffed && generic)
        return error_set(err, ST_UNSUPPORTED_MEDIA, "image_unsupported_type",
                         "cannot use image %s: content is not a png, jpeg, webp, heic or heif "
                         "image",
                         url_msg);
    if (!sniffed)
        return error_set(err, ST_UNSUPPORTED_MEDIA, "image_unsupported_type",
                         "cannot use image %s: content declared as %s is not a valid image",
                         url_msg, declared);
    if (!generic && strcmp(declared, sniffed) != 0)
        log_debug("image %s declared as %s is %s, using %s", url_msg, declared, sniffed, sniffed);
    str_copy(content_type, FETCH_CONTENT_TYPE_MAX, sniffed);
    return ST_OK;
}

/* ---- fetching --------------------------------------------------------------- */

enum status fetch_image(struct http_client *c, const char *url, const struct fetch_limits *lim,
                        struct buf *out, char content_type[FETCH_CONTENT_TYPE_MAX],
                        struct error *err)
{
    static const char *const headers[] = {
        "Accept: image/png, image/jpeg, image/webp, image/heic, image/heif, */*;q=0.1", NULL};
    struct fetch_limits l = {0};
    struct http_result res;
    struct http_call call;
    struct error cerr, local;
    char url_msg[URL_MSG_MAX];
    int64_t t0 = time_mono_us();
    enum status st;

    ASSERT(c && out && content_type);
    if (!err)
        err = &local;
    error_clear(err);
    content_type[0] = '\0';
    buf_reset(out);
    http_result_init(&res);
    if (lim)
        l = *lim;
    if (l.max_bytes == 0)
        l.max_bytes = FETCH_DEFAULT_MAX_BYTES;
    if (l.timeout_ms <= 0)
        l.timeout_ms = FETCH_DEFAULT_TIMEOUT_MS;
    if (!url || !url[0]) {
        st = error_set(err, ST_INVALID, "image_url_invalid", "cannot fetch image: missing url");
        goto out;
    }
    url_for_message(url, url_msg, sizeof(url_msg));

    memset(&call, 0, sizeof(call));
    call.method = "GET";
    call.url = url;
    call.headers = headers;
    call.timeout_ms = l.timeout_ms;
    call.max_response_bytes = l.max_bytes;
    call.idempotent = true;
    call.max_attempts = l.max_attempts;
    call.block_private_addresses = !l.allow_insecure;
    call.allow_http = l.allow_insecure;

    error_clear(&cerr);
    st = http_client_do(c, &call, &res, &cerr);
    if (st != ST_OK) {
        st = fail_transport(st, &cerr, url_msg, l.max_bytes, err);
        goto out;
    }
    if (res.status < 200 || res.status > 299) {
        st = fail_http(res.status, res.retry_after_s, url_msg, err);
        goto out;
    }
    if (res.body.len == 0) {
        st = error_set(err, ST_INVALID, "image_fetch_failed", "cannot fetch image %s: empty body",
                       url_msg);
        goto out;
    }
    st = check_type(res.content_type[0] ? res.content_type : NULL, &res.body, url_msg, content_type,
                    err);
    if (st != ST_OK)
        goto out;
    if (buf_append(out, res.body.data, res.body.len) != ST_OK) {
        st = error_set(err, ST_TOO_LARGE, "image_too_large",
                       "cannot fetch image %s: %zu bytes exceed the buffer's %zu", url_msg,
                       res.body.len, out->max);
        goto out;
    }
out:
    if (st != ST_OK) {
        buf_reset(out);
        content_type[0] = '\0';
    }
    count_fetch(st == ST_OK ? "ok" : error_code(err), (double)(time_mono_us() - t0) / 1e6);
    http_result_release(&res);
    return st;
}
