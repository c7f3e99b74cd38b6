#include "providers/video.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "providers/fetch.h"

/* ---- one call ------------------------------------------------------------- */

/* curl calls this once a connection is ready and the request is about to be sent. */
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    UNUSED(primary_ip);
    UNUSED(local_ip);
    UNUSED(primary_port);
    UNUSED(local_port);
    *(bool *)ud = true;
    return CURL_PREREQFUNC_OK;
}

void video_track_sent(CURL *easy, bool *sent)
{
    curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(easy, CURLOPT_PREREQDATA, (void *)sent);
}

void video_customize_track_sent(CURL *easy, void *ud)
{
    video_track_sent(easy, ud);
}

/* ---- MP4 ---------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

bool video_sniff_mp4(const void *data, size_t len)
{
    /* Brands of still images in an ISO box file (HEIF, AVIF): not a video. */
    static const char *const image_brands[] = {"heic", "heix", "heim", "heis", "mif1",
                                               "msf1", "avif", "avis", "avci", "jpeg"};
    static const char *const first_boxes[] = {"moov", "mdat", "free", "skip", "wide", "styp"};
    const uint8_t *p = data;
    uint32_t size;
    size_t i;

    if (!p || len < 8)
        return false;
    size = be32(p);
    /* 1: a 64-bit size follows; 0: the box runs to the end of the file. */
    if (size != 0 && size != 1 && size < 8)
        return false;
    if (memcmp(p + 4, "ftyp", 4) == 0) {
        if (len < 16 || (size != 0 && size < 16))
            return false;
        for (i = 0; i < ARRAY_SIZE(image_brands); i++)
            if (memcmp(p + 8, image_brands[i], 4) == 0)
                return false;
        for (i = 8; i < 12; i++)
            if (p[i] < 0x20 || p[i] > 0x7e)
                return false; /* brands are four printable characters */
        return true;
    }
    for (i = 0; i < ARRAY_SIZE(first_boxes); i++)
        if (memcmp(p + 4, first_boxes[i], 4) == 0)
            return true;
    return false;
}

/* ---- messages ----------------------------------------------------------------- */

void video_url_for_message(const char *url, char *out, size_t cap)
{
    const char *start = url ? url : "";
    const char *host = strstr(start, "://");
    size_t n = strcspn(start, "?#"), pre = 0;

    ASSERT(out && cap > 0);
    if (host && (size_t)(host - start) < n) {
        const char *auth = host + 3;
        const char *at = memchr(auth, '@', strcspn(auth, "/?#"));

        if (at) {
            pre = (size_t)(auth - start);
            if (pre >= cap)
                pre = cap - 1;
            memcpy(out, start, pre);
            start = at + 1;
            n = strcspn(start, "?#");
        }
    }
    if (pre + n >= cap)
        n = cap - 1 - pre;
    memcpy(out + pre, start, n);
    out[pre + n] = '\0';
}

void video_quote(const char *s, char *out, size_t cap)
{
    size_t n, i, max;
    bool cut;

    ASSERT(out && cap > 4);
    max = cap - 4 < VIDEO_QUOTE_MAX ? cap - 4 : VIDEO_QUOTE_MAX;
    out[0] = '\0';
    if (!s)
        return;
    n = strlen(s);
    cut = n > max;
    if (cut) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--; /* s[n] is the first byte left out: never split a character */
    }
    for (i = 0; i < n; i++)
        out[i] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    if (cut) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

void video_scrub(char *s, const char *secret)
{
    size_t k = secret ? strlen(secret) : 0;
    char *p;

    if (k < 4 || !s)
        return;
    while ((p = strstr(s, secret)) != NULL) {
        memmove(p + 3, p + k, strlen(p + k) + 1);
        memcpy(p, "***", 3);
    }
}

void video_fail(struct provider_output *out, enum provider_outcome o, const char *code,
                const char *fmt, ...)
{
    char msg[sizeof(out->error_message)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    provider_output_fail(out, o, code, "%s", msg);
    buf_reset(&out->data);
    out->content_type[0] = '\0';
    out->progress = 0;
    out->retry_after_s = 0;
}

/* ---- download ------------------------------------------------------------------- */

static void count_download(const char *outcome, double seconds)
{
    const char *labels[] = {outcome};

    metric_add(
        metric_counter("video_downloads_total", "provider video downloads by outcome", "outcome"),
        labels, 1);
    metric_observe(metric_histogram("video_download_seconds", "provider video download latency", "",
                                    metrics_latency_buckets, metrics_latency_buckets_n),
                   NULL, seconds);
}

static enum status check_video(const char *declared_header, const struct buf *body,
                               const char *url_msg, struct error *err)
{
    char declared[FETCH_CONTENT_TYPE_MAX];
    bool ok_type;

    media_type_normalise(declared_header, declared, sizeof(declared));
    ok_type = !declared[0] || strcmp(declared, "video/mp4") == 0 ||
              strcmp(declared, "application/octet-stream") == 0 ||
              strcmp(declared, "binary/octet-stream") == 0;
    if (!ok_type)
        return error_set(err, ST_UNSUPPORTED_MEDIA, "provider_output_invalid",
                         "cannot use video %s: content type \"%.40s\" is not video/mp4", url_msg,
                         declared);
    if (!video_sniff_mp4(body->data, body->len))
        return error_set(err, ST_UNSUPPORTED_MEDIA, "provider_output_invalid",
                         "cannot use video %s: content is not an mp4 file", url_msg);
    return ST_OK;
}

enum status video_download(struct http_client *c, const char *url, const struct video_limits *lim,
                           struct buf *out, struct error *err)
{
    static const char *const headers[] = {"Accept: video/mp4, */*;q=0.1", NULL};
    struct video_limits l = {0};
    struct http_result res;
    struct http_call call;
    struct error cerr, local;
    char url_msg[VIDEO_URL_MSG_MAX];
    int64_t t0 = time_mono_us();
    enum status st;

    ASSERT(c && out);
    if (!err)
        err = &local;
    error_clear(err);
    buf_reset(out);
    http_result_init(&res);
    if (lim)
        l = *lim;
    if (l.max_bytes == 0)
        l.max_bytes = VIDEO_DEFAULT_MAX_BYTES;
    if (out->max < l.max_bytes)
        l.max_bytes = out->max;
    if (l.timeout_ms <= 0)
        l.timeout_ms = VIDEO_DEFAULT_TIMEOUT_MS;
    if (!url || !url[0]) {
        st = error_set(err, ST_INVALID, "provider_output_url_invalid",
                       "cannot download video: missing url");
        goto out;
    }
    video_url_for_message(url, url_msg, sizeof(url_msg));

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
    switch (st) {
    case ST_OK:
        break;
    case ST_TOO_LARGE:
        st = error_set(err, ST_TOO_LARGE, "provider_output_too_large",
                       "cannot download video %s: larger than %zu bytes", url_msg, l.max_bytes);
        goto out;
    case ST_INVALID:
    case ST_PERMISSION_DENIED:
        st = error_set(err, st, "provider_output_url_invalid", "%s", cerr.message);
        goto out;
    case ST_TIMEOUT:
        st = error_set(err, ST_TIMEOUT, "provider_download_failed", "%s", cerr.message);
        goto out;
    default:
        st = error_set(err, ST_UNAVAILABLE, "provider_download_failed", "%s", cerr.message);
        goto out;
    }
    if (res.status < 200 || res.status > 299) {
        /* Whatever the status (an expired signature answers 403), polling again gets a fresh
         * url, so every one of them is worth another try. */
        if (res.status == 404 || res.status == 410)
            st = ST_NOT_FOUND;
        else if (res.status == 408 || res.status == 504)
            st = ST_TIMEOUT;
        else if (res.status == 429)
            st = ST_RATE_LIMITED;
        else
            st = ST_UNAVAILABLE;
        error_set(err, st, "provider_download_failed", "cannot download video %s: http %ld",
                  url_msg, res.status);
        err->retry_after_s = res.retry_after_s;
        goto out;
    }
    if (res.body.len == 0) {
        st = error_set(err, ST_UNAVAILABLE, "provider_download_failed",
                       "cannot download video %s: empty body", url_msg);
        goto out;
    }
    st = check_video(res.content_type[0] ? res.content_type : NULL, &res.body, url_msg, err);
    if (st != ST_OK)
        goto out;
    if (buf_append(out, res.body.data, res.body.len) != ST_OK) {
        st = error_set(err, ST_TOO_LARGE, "provider_output_too_large",
                       "cannot download video %s: %zu bytes exceed the buffer's %zu", url_msg,
                       res.body.len, out->max);
        goto out;
    }
out:
    if (st != ST_OK)
        buf_reset(out);
    count_download(st == ST_OK ? "ok" : error_code(err), (double)(time_mono_us() - t0) / 1e6);
    http_result_release(&res);
    return st;
}

/* ---- metrics and logs ------------------------------------------------------- */

void video_record(const char *provider, const char *op, const char *subject,
                  const struct provider_output *out, long http_status, double call_s,
                  double total_s, json_t *fields)
{
    bool ok = out->outcome == PROVIDER_DONE || out->outcome == PROVIDER_STARTED ||
              out->outcome == PROVIDER_RUNNING;
    const char *labels[] = {provider, provider_outcome_name(out->outcome),
                            ok ? "" : out->error_code};
    const char *plabel[] = {provider};
    enum log_severity sev;

    metric_add(metric_counter("provider_calls_total", "provider submissions by outcome and code",
                              "provider,outcome,code"),
               labels, 1);
    if (call_s >= 0)
        metric_observe(metric_histogram("provider_latency_seconds", "latency of one provider call",
                                        "provider", metrics_latency_buckets,
                                        metrics_latency_buckets_n),
                       plabel, call_s);
    switch (out->outcome) {
    case PROVIDER_RUNNING:
        sev = LOG_DEBUG;
        break;
    case PROVIDER_TRANSIENT:
        sev = LOG_WARNING;
        break;
    case PROVIDER_PERMANENT:
        sev = LOG_NOTICE;
        break;
    default:
        sev = LOG_INFO;
        break;
    }
    if (!log_enabled(sev)) {
        json_decref(fields);
        return;
    }
    if (!fields)
        fields = json_object();
    json_object_set_new(fields, "provider", json_string(provider));
    json_object_set_new(fields, "op", json_string(op));
    json_object_set_new(fields, "outcome", json_string(provider_outcome_name(out->outcome)));
    json_object_set_new(fields, "httpStatus", json_integer((json_int_t)http_status));
    json_object_set_new(fields, "latencyMs", json_integer((json_int_t)(total_s * 1000)));
    switch (out->outcome) {
    case PROVIDER_DONE:
        json_object_set_new(fields, "bytes", json_integer((json_int_t)out->data.len));
        log_write(sev, fields, "%s job %s done: %s, %zu bytes", provider, subject ? subject : "?",
                  out->content_type, out->data.len);
        break;
    case PROVIDER_STARTED:
        json_object_set_new(fields, "providerJobId", json_string(out->job_id));
        log_write(sev, fields, "%s started job %s for item %s", provider, out->job_id,
                  subject ? subject : "?");
        break;
    case PROVIDER_RUNNING:
        log_write(sev, fields, "%s job %s running (%.0f%%)", provider, subject ? subject : "?",
                  out->progress * 100);
        break;
    default:
        json_object_set_new(fields, "code", json_string(out->error_code));
        if (out->resubmit)
            json_object_set_new(fields, "resubmit", json_true());
        if (out->pause_batch)
            json_object_set_new(fields, "pauseBatch", json_true());
        if (strcmp(op, "submit") == 0)
            log_write(sev, fields, "item %s not submitted: %s", subject ? subject : "?",
                      out->error_message);
        else
            log_write(sev, fields, "%s of job %s failed: %s", op, subject ? subject : "?",
                      out->error_message);
        break;
    }
}
