#include "providers/pixverse.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "providers/fetch.h"

#define PROVIDER_NAME "pixverse"
#define URL_MAX       1024
#define RESPONSE_MAX  ((size_t)1 << 20)

/* ---- models (providers.md 3.3) ---------------------------------------------- */

struct model_spec {
    const char *name;
    const int *durations; /* 0-terminated list, or NULL for min..max */
    int min_duration, max_duration;
    bool motion_mode;  /* takes motion_mode (not v5 and later) */
    bool no_long_1080; /* 1080p is 5 s only */
};

static const int five_eight[] = {5, 8, 0};
static const int five_eight_ten[] = {5, 8, 10, 0};

static const struct model_spec models[] = {
    {"v3.5", five_eight, 5, 8, true, true},
    {"v4", five_eight, 5, 8, true, true},
    {"v4.5", five_eight, 5, 8, true, true},
    {"v5", five_eight, 5, 8, false, true},
    {"v5.5", five_eight_ten, 5, 10, false, false},
    {"v5.6", five_eight_ten, 5, 10, false, false},
    {"v6", NULL, 1, 15, false, false},
    {"c1", NULL, 1, 15, false, false},
};

static const char *const qualities[] = {"360p", "540p", "720p", "1080p", NULL};

static const struct model_spec *model_find(const char *name)
{
    size_t i;

    for (i = 0; name && i < ARRAY_SIZE(models); i++)
        if (strcmp(models[i].name, name) == 0)
            return &models[i];
    return NULL;
}

static bool in_list(const char *s, const char *const *list)
{
    size_t i;

    for (i = 0; s && list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static bool duration_allowed(const struct model_spec *m, long long d)
{
    size_t i;

    if (!m->durations)
        return d >= m->min_duration && d <= m->max_duration;
    for (i = 0; m->durations[i]; i++)
        if (m->durations[i] == d)
            return true;
    return false;
}

/* Code points of UTF-8 text. */
static size_t utf8_length(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

/* ---- options ----------------------------------------------------------------- */

static enum status bad_option(struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum status bad_option(struct error *err, const char *fmt, ...)
{
    char msg[ERROR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return error_set(err, ST_INVALID, "invalid_options", "invalid pixverse option %s", msg);
}

/* A string option, or def when absent or null; false (err set) when not a string. */
static bool string_option(const json_t *options, const char *name, const char *def,
                          const char **out, struct error *err)
{
    const json_t *v = json_object_get(options, name);

    if (!v || json_is_null(v)) {
        *out = def;
        return true;
    }
    if (!json_is_string(v)) {
        bad_option(err, "\"%s\": must be a string", name);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

enum status pixverse_resolve(const json_t *options, const char *default_model,
                             const char *default_quality, struct pixverse_params *p,
                             struct error *err)
{
    const struct model_spec *m;
    const char *prompt = NULL;
    const json_t *v;

    ASSERT(p);
    memset(p, 0, sizeof(*p));
    if (options && !json_is_object(options))
        return error_set(err, ST_INVALID, "invalid_options",
                         "invalid pixverse options: not a json object");
    if (!string_option(options, "model",
                       default_model && default_model[0] ? default_model : PIXVERSE_DEFAULT_MODEL,
                       &p->model, err) ||
        !string_option(options, "quality",
                       default_quality && default_quality[0] ? default_quality
                                                             : PIXVERSE_DEFAULT_QUALITY,
                       &p->quality, err) ||
        !string_option(options, "motionMode", NULL, &p->motion_mode, err) ||
        !string_option(options, "prompt", NULL, &prompt, err))
        return ST_INVALID;
    m = model_find(p->model);
    if (!m)
        return bad_option(err,
                          "\"model\": \"%.16s\" is not v3.5, v4, v4.5, v5, v5.5, v5.6, v6 or "
                          "c1",
                          p->model);
    if (!in_list(p->quality, qualities))
        return bad_option(err, "\"quality\": \"%.16s\" is not 360p, 540p, 720p or 1080p",
                          p->quality);

    p->duration = PIXVERSE_DEFAULT_DURATION;
    v = json_object_get(options, "duration");
    if (v && !json_is_null(v)) {
        long long d = json_is_integer(v) ? json_integer_value(v) : -1;

        if (!duration_allowed(m, d)) {
            if (m->durations == five_eight)
                return bad_option(err, "\"duration\": must be 5 or 8 (seconds) for %s", m->name);
            if (m->durations == five_eight_ten)
                return bad_option(err, "\"duration\": must be 5, 8 or 10 (seconds) for %s",
                                  m->name);
            return bad_option(err,
                              "\"duration\": must be an integer from %d to %d (seconds) "
                              "for %s",
                              m->min_duration, m->max_duration, m->name);
        }
        p->duration = (int)d;
    }
    if (m->no_long_1080 && strcmp(p->quality, "1080p") == 0 && p->duration != 5)
        return bad_option(err, "\"duration\": 1080p videos of %s are 5 seconds long", m->name);

    if (p->motion_mode) {
        if (strcmp(p->motion_mode, "normal") != 0 && strcmp(p->motion_mode, "fast") != 0)
            return bad_option(err, "\"motionMode\": \"%.16s\" is not normal or fast",
                              p->motion_mode);
        if (!m->motion_mode)
            return bad_option(err, "\"motionMode\": %s does not take a motion mode", m->name);
        if (strcmp(p->motion_mode, "fast") == 0 &&
            (p->duration != 5 || strcmp(p->quality, "1080p") == 0))
            return bad_option(err, "\"motionMode\": fast is for 5-second videos below 1080p");
    }

    v = json_object_get(options, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > PIXVERSE_SEED_MAX)
            return bad_option(err, "\"seed\": must be an integer from 0 to %lld",
                              PIXVERSE_SEED_MAX);
        p->has_seed = true;
        p->seed = json_integer_value(v);
    }
    if (prompt && utf8_length(prompt) > PIXVERSE_PROMPT_MAX)
        return bad_option(err, "\"prompt\": longer than %d characters", PIXVERSE_PROMPT_MAX);
    return ST_OK;
}

enum status pixverse_validate_options(const json_t *options, struct error *err)
{
    struct pixverse_params p;

    return pixverse_resolve(options, NULL, NULL, &p, err);
}

/* ---- ids ---------------------------------------------------------------------- */

bool pixverse_id_from_json(const json_t *v, int64_t *out)
{
    int64_t id;

    if (json_is_integer(v)) {
        /* json_int_t is long long: the value arrives exact, never via a double. */
        id = (int64_t)json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);

        if (strspn(s, "0123456789") != strlen(s) || !str_to_i64(s, 1, INT64_MAX, &id))
            return false;
    } else {
        return false;
    }
    if (id <= 0)
        return false;
    *out = id;
    return true;
}

bool pixverse_job_id_format(int64_t video_id, char *out, size_t cap)
{
    return video_id > 0 && str_printf(out, cap, "%" PRId64, video_id);
}

bool pixverse_job_id_parse(const char *job_id, int64_t *out)
{
    return job_id && job_id[0] && strspn(job_id, "0123456789") == strlen(job_id) &&
           str_to_i64(job_id, 1, INT64_MAX, out);
}

/* ---- classification --------------------------------------------------------- */

static bool contains_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);

    for (; s && *s; s++)
        if (strncasecmp(s, needle, n) == 0)
            return true;
    return false;
}

static void said_tail(const char *s, char *out, size_t cap)
{
    char q[VIDEO_QUOTE_MAX + 4];

    video_quote(s, q, sizeof(q));
    if (q[0])
        snprintf(out, cap, ": %s", q);
    else
        out[0] = '\0';
}

void pixverse_classify_errcode(long long code, const char *msg, enum pixverse_call call,
                               struct provider_output *out)
{
    char said[VIDEO_QUOTE_MAX + 8];
    enum provider_outcome o = PROVIDER_PERMANENT;
    const char *c, *what;
    int wait = 0;

    ASSERT(out);
    said_tail(msg, said, sizeof(said));
    out->pause_batch = false;
    out->resubmit = false;
    if (contains_ci(msg, "invalid api-key") || contains_ci(msg, "invalid api key") ||
        code == 400012) {
        c = "provider_auth_failed";
        what = "refused the api key";
    } else if (code == 400032) {
        c = "provider_invalid_image_id";
        what = "does not know the uploaded image";
    } else if (code == 500008) {
        c = call == PIXVERSE_RESULT ? "provider_job_not_found" : "provider_invalid_request";
        what = call == PIXVERSE_RESULT ? "does not know the video" : "found no such data";
    } else if (code == 500020) {
        c = "provider_not_permitted";
        what = "does not permit the operation";
    } else if ((code >= 500030 && code <= 500033) || code == 500042 || code == 701002 ||
               code == 701003) {
        c = "provider_invalid_image";
        what = "cannot use the input image";
    } else if (code == 500041) {
        o = PROVIDER_TRANSIENT;
        c = "provider_upload_failed";
        what = "failed to store the uploaded image";
    } else if (code == 500044) {
        o = PROVIDER_TRANSIENT;
        c = "provider_concurrency_limit";
        what = "is at its concurrent generation limit";
        wait = PIXVERSE_BUSY_RETRY_S;
    } else if (code == 500054 || code == 500063) {
        c = "provider_moderation";
        what = "refused the content";
    } else if (code == 500060) {
        c = "provider_limit_reached";
        what = "reached a monthly limit";
    } else if (code == 500064) {
        c = "provider_content_deleted";
        what = "deleted the content";
    } else if (code == 500069) {
        o = PROVIDER_TRANSIENT;
        c = "provider_overloaded";
        what = "is under high load";
        wait = PIXVERSE_BUSY_RETRY_S;
    } else if (code == 500090) {
        c = "provider_no_credits";
        what = "is out of credits";
    } else if (code == 500100 || code == 99999) {
        o = PROVIDER_TRANSIENT;
        c = "provider_unavailable";
        what = "failed internally";
    } else if ((code >= 400000 && code <= 499999) || code == 500070 || code == 500071) {
        c = "provider_invalid_request";
        what = "rejected the request";
    } else {
        o = PROVIDER_TRANSIENT;
        c = "provider_error";
        what = "answered with an unknown error";
    }
    video_fail(out, o, c, "pixverse %s (errcode %lld)%s", what, code, said);
    out->retry_after_s = wait;
    out->pause_batch = code == 500090;
}

static void classify_transport(const struct video_reply *r, enum pixverse_call call,
                               struct provider_output *out)
{
    const char *why = r->transport_error ? r->transport_error : status_name(r->transport);

    switch (r->transport) {
    case ST_INVALID:
    case ST_PERMISSION_DENIED:
        video_fail(out, PROVIDER_PERMANENT, "provider_config", "pixverse cannot be called: %s",
                   why);
        return;
    case ST_TOO_LARGE:
        if (call == PIXVERSE_GENERATE)
            break;
        video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response",
                   "pixverse answer too large: %s", why);
        return;
    default:
        if (call == PIXVERSE_GENERATE && r->request_sent)
            break;
        video_fail(out, PROVIDER_TRANSIENT,
                   r->transport == ST_TIMEOUT ? "provider_timeout" : "provider_unavailable",
                   "pixverse %s: %s", r->transport == ST_TIMEOUT ? "timed out" : "unreachable",
                   why);
        return;
    }
    video_fail(out, PROVIDER_TRANSIENT, "provider_submit_unknown",
               "pixverse may have started a video but did not answer: %s", why);
}

static void classify_http(const struct video_reply *r, enum pixverse_call call,
                          struct provider_output *out)
{
    long code = r->http_status;
    const char *c, *what;
    enum provider_outcome o = PROVIDER_TRANSIENT;

    if (code >= 200 && code < 300) {
        c = call == PIXVERSE_GENERATE ? "provider_submit_unknown" : "provider_bad_response";
        what = "answered without a usable envelope";
    } else if (code == 401 || code == 403) {
        o = PROVIDER_PERMANENT;
        c = "provider_auth_failed";
        what = "refused the api key";
    } else if (code == 404 || code == 405) {
        o = PROVIDER_PERMANENT;
        c = "provider_config";
        what = "has no such endpoint, check the base url";
    } else if (code == 408 || code == 504) {
        c = "provider_timeout";
        what = "timed out";
    } else if (code == 429) {
        c = "provider_rate_limited";
        what = "rate limited the request";
    } else if (code == 409 || code >= 500) {
        c = "provider_unavailable";
        what = "is unavailable";
    } else if (code >= 300 && code < 400) {
        o = PROVIDER_PERMANENT;
        c = "provider_bad_response";
        what = "answered with a redirect";
    } else {
        o = PROVIDER_PERMANENT;
        c = "provider_invalid_request";
        what = "rejected the request";
    }
    video_fail(out, o, c, "pixverse %s (http %ld)", what, code);
    if (o == PROVIDER_TRANSIENT)
        out->retry_after_s = r->retry_after_s;
}

static void classify_result(const json_t *resp, struct provider_output *out)
{
    const json_t *status = json_object_get(resp, "status");
    const char *url;

    if (!json_is_integer(status)) {
        video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response",
                   "pixverse answered without a video status");
        return;
    }
    switch (json_integer_value(status)) {
    case 1:
        url = json_str_or(resp, "url", NULL);
        if (!url || !url[0] || !str_copy(out->output_url, sizeof(out->output_url), url)) {
            out->output_url[0] = '\0';
            video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response",
                       "pixverse video is ready without a usable url");
            return;
        }
        out->outcome = PROVIDER_DONE;
        out->progress = 1;
        return;
    case 6:
        video_fail(out, PROVIDER_PERMANENT, "provider_job_deleted",
                   "pixverse video was deleted (status 6)");
        return;
    case 7:
        video_fail(out, PROVIDER_PERMANENT, "provider_moderation",
                   "pixverse refused the content (status 7, credits refunded)");
        return;
    case 8:
        video_fail(out, PROVIDER_TRANSIENT, "provider_job_failed",
                   "pixverse video generation failed (status 8)");
        out->resubmit = true;
        return;
    case 5:
    default:
        /* 5 is "generating"; states nobody documented yet are waited for, like 5. */
        out->outcome = PROVIDER_RUNNING;
        out->progress = 0;
        return;
    }
}

bool pixverse_classify(const struct video_reply *r, enum pixverse_call call,
                       struct provider_output *out, int64_t *id)
{
    json_t *root = NULL;
    const json_t *errcode, *resp;
    const char *msg;
    int64_t got = 0;
    bool ok = false;

    ASSERT(r && out);
    out->outcome = PROVIDER_PERMANENT;
    out->retry_after_s = 0;
    out->pause_batch = false;
    out->resubmit = false;
    out->progress = 0;
    out->error_code[0] = '\0';
    out->error_message[0] = '\0';
    out->output_url[0] = '\0';
    if (r->transport != ST_OK) {
        classify_transport(r, call, out);
        return false;
    }
    root = r->body && r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    errcode = json_object_get(root, "ErrCode");
    msg = json_str_or(root, "ErrMsg", NULL);
    if ((json_is_integer(errcode) && json_integer_value(errcode) != 0) ||
        contains_ci(msg, "invalid api-key")) {
        /* The envelope decides, whatever the HTTP status (providers.md 3.5). */
        pixverse_classify_errcode(json_is_integer(errcode) ? json_integer_value(errcode) : 0, msg,
                                  call, out);
        if (out->outcome == PROVIDER_TRANSIENT && r->retry_after_s > out->retry_after_s)
            out->retry_after_s = r->retry_after_s;
        goto out;
    }
    if (r->http_status < 200 || r->http_status > 299 || !json_is_integer(errcode)) {
        classify_http(r, call, out);
        goto out;
    }
    resp = json_object_get(root, "Resp");
    switch (call) {
    case PIXVERSE_UPLOAD:
        if (!pixverse_id_from_json(json_object_get(resp, "img_id"), &got)) {
            video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response",
                       "pixverse answered the upload without an image id");
            goto out;
        }
        out->outcome = PROVIDER_RUNNING; /* a step on the way, nothing final */
        break;
    case PIXVERSE_GENERATE:
        if (!pixverse_id_from_json(json_object_get(resp, "video_id"), &got) ||
            !pixverse_job_id_format(got, out->job_id, sizeof(out->job_id))) {
            video_fail(out, PROVIDER_TRANSIENT, "provider_submit_unknown",
                       "pixverse answered without a video id");
            goto out;
        }
        out->outcome = PROVIDER_STARTED;
        break;
    case PIXVERSE_RESULT:
        classify_result(resp, out);
        break;
    }
    ok = out->outcome != PROVIDER_TRANSIENT && out->outcome != PROVIDER_PERMANENT;
    if (id)
        *id = got;
out:
    json_decref(root);
    return ok;
}

/* ---- state ---------------------------------------------------------------- */

struct pixverse {
    struct provider base; /* first: the provider's state points back here */
    struct http_client *client;
    char *base_url; /* without a trailing slash */
    char *model;
    char *quality;
    char *key_header; /* "API-KEY: KEY" */
    char *api_key;    /* to scrub it from any message */
    char *default_prompt;
    long upload_timeout_ms;
    int upload_max_attempts;
    long submit_timeout_ms;
    long poll_timeout_ms;
    int poll_max_attempts;
    struct fetch_limits fetch;
    struct video_limits download;
    bool fail_ambiguous_submit;
};

/*
 * One request. The customize hook runs before every attempt, so each
 * attempt (retries included) gets its own Ai-trace-id and, for the upload,
 * its own multipart body.
 */
struct px_call {
    const struct pixverse *px;
    bool json_body;
    const struct buf *image; /* upload: the bytes, and their type */
    const char *image_type;
    struct curl_slist *headers; /* this attempt's */
    curl_mime *mime;            /* this attempt's */
    bool sent;
    char trace_id[37]; /* the last attempt's */
    int trace_ids;     /* how many were made */
};

static struct curl_slist *slist_add(struct curl_slist *l, const char *s)
{
    struct curl_slist *n = curl_slist_append(l, s);

    if (!n)
        BUG("out of memory in curl_slist_append");
    return n;
}

static const char *upload_name(const char *type)
{
    if (strcmp(type, "image/png") == 0)
        return "image.png";
    if (strcmp(type, "image/webp") == 0)
        return "image.webp";
    return "image.jpg";
}

static void px_customize(CURL *e, void *ud)
{
    struct px_call *pc = ud;
    char trace[64];

    /* The previous attempt's handle was reset: nothing refers to these any more. */
    curl_slist_free_all(pc->headers);
    pc->headers = NULL;
    id_uuid4(pc->trace_id);
    pc->trace_ids++;
    snprintf(trace, sizeof(trace), "Ai-trace-id: %s", pc->trace_id);
    pc->headers = slist_add(pc->headers, pc->px->key_header);
    pc->headers = slist_add(pc->headers, trace);
    pc->headers = slist_add(pc->headers, "Accept: application/json");
    if (pc->json_body)
        pc->headers = slist_add(pc->headers, "Content-Type: application/json");
    pc->headers = slist_add(pc->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, pc->headers);
    if (pc->image) {
        curl_mimepart *part;

        if (pc->mime)
            curl_mime_free(pc->mime);
        pc->mime = curl_mime_init(e);
        part = pc->mime ? curl_mime_addpart(pc->mime) : NULL;
        if (!part)
            BUG("out of memory in curl_mime_init");
        curl_mime_name(part, "image");
        curl_mime_filename(part, upload_name(pc->image_type));
        curl_mime_type(part, pc->image_type);
        curl_mime_data(part, pc->image->data, pc->image->len);
        curl_easy_setopt(e, CURLOPT_MIMEPOST, pc->mime);
    }
    video_track_sent(e, &pc->sent);
}

static void px_call_release(struct px_call *pc)
{
    curl_slist_free_all(pc->headers);
    pc->headers = NULL;
    curl_mime_free(pc->mime);
    pc->mime = NULL;
}

/*
 * Performs one request and fills reply, which borrows from res and err:
 * both must outlive it. Returns the call's duration in seconds.
 */
static double px_do(const struct pixverse *px, struct px_call *pc, struct http_call *call,
                    struct http_result *res, struct error *err, struct video_reply *reply)
{
    int64_t t0 = time_mono_us();
    enum status st;

    pc->px = px;
    call->customize = px_customize;
    call->customize_ud = pc;
    call->max_response_bytes = RESPONSE_MAX;
    error_clear(err);
    st = http_client_do(px->client, call, res, err);
    memset(reply, 0, sizeof(*reply));
    reply->transport = st;
    reply->transport_error = st == ST_OK ? NULL : err->message;
    reply->request_sent = pc->sent;
    reply->http_status = res->status;
    reply->body = res->body.data;
    reply->body_len = res->body.len;
    reply->retry_after_s = res->retry_after_s;
    return (double)(time_mono_us() - t0) / 1e6;
}

/* ---- submit ------------------------------------------------------------------ */

static const char *prompt_for(const struct pixverse *px, const struct provider_input *in)
{
    const char *p = json_str_or(in->metadata, "prompt", NULL);

    if (!p || !p[0])
        p = json_str_or(in->options, "prompt", NULL);
    return p && p[0] ? p : px->default_prompt;
}

/* Uploads the image; true with *img_id, else false with the failure in out. */
static bool upload(const struct pixverse *px, const struct buf *img, const char *type,
                   int64_t *img_id, struct provider_output *out, long *http_status)
{
    struct px_call pc = {.image = img, .image_type = type};
    struct video_reply reply;
    struct http_result res;
    struct http_call call;
    struct error err;
    char url[URL_MAX];
    bool ok;

    http_result_init(&res);
    str_printf(url, sizeof(url), "%s/openapi/v2/image/upload", px->base_url);
    memset(&call, 0, sizeof(call));
    call.method = "POST";
    call.url = url;
    call.timeout_ms = px->upload_timeout_ms;
    call.idempotent = true; /* not billed: a repeated upload is only another img_id */
    call.max_attempts = px->upload_max_attempts;
    px_do(px, &pc, &call, &res, &err, &reply);
    ok = pixverse_classify(&reply, PIXVERSE_UPLOAD, out, img_id);
    *http_status = res.status;
    http_result_release(&res);
    px_call_release(&pc);
    return ok;
}

/* Asks for the video; out STARTED, or the failure. The generate call's trace id goes to trace. */
static double generate(const struct pixverse *px, int64_t img_id, const struct pixverse_params *pp,
                       const char *prompt, struct provider_output *out, char trace[37],
                       long *http_status)
{
    struct px_call pc = {.json_body = true};
    struct video_reply reply;
    struct http_result res;
    struct http_call call;
    struct error err;
    char url[URL_MAX];
    json_t *body;
    char *text;
    double s;

    body = json_pack("{s:I, s:s, s:s, s:i, s:s}", "img_id", (json_int_t)img_id, "model", pp->model,
                     "prompt", prompt, "duration", pp->duration, "quality", pp->quality);
    if (body && pp->motion_mode)
        json_object_set_new(body, "motion_mode", json_string(pp->motion_mode));
    if (body && pp->has_seed)
        json_object_set_new(body, "seed", json_integer(pp->seed));
    text = body ? json_dump_compact(body) : NULL;
    json_decref(body);
    if (!text) {
        video_fail(out, PROVIDER_PERMANENT, "invalid_prompt",
                   "pixverse cannot use the prompt: not valid utf-8");
        return -1;
    }
    http_result_init(&res);
    str_printf(url, sizeof(url), "%s/openapi/v2/video/img/generate", px->base_url);
    memset(&call, 0, sizeof(call));
    call.method = "POST";
    call.url = url;
    call.body = text;
    call.body_len = strlen(text);
    call.timeout_ms = px->submit_timeout_ms;
    call.idempotent = false; /* billed: the queue decides about another try */
    call.max_attempts = 1;
    s = px_do(px, &pc, &call, &res, &err, &reply);
    pixverse_classify(&reply, PIXVERSE_GENERATE, out, NULL);
    str_copy(trace, 37, pc.trace_id);
    *http_status = res.status;
    http_result_release(&res);
    px_call_release(&pc);
    free(text);
    return s;
}

static enum status pixverse_submit(struct provider *p, const struct provider_input *in,
                                   struct provider_output *out)
{
    struct pixverse *px = p->state;
    struct pixverse_params pp;
    struct buf img;
    struct error err;
    const char *prompt;
    char mime[FETCH_CONTENT_TYPE_MAX], trace[37] = "";
    int64_t t0 = time_mono_us(), img_id = 0;
    double call_s = -1;
    long http_status = 0;
    int uploads = 0;
    enum status st;
    json_t *fields;

    ASSERT(in && out);
    buf_init(&img, px->fetch.max_bytes);
    out->outcome = PROVIDER_PERMANENT;
    out->resubmit = false;
    error_clear(&err);
    if (pixverse_resolve(in->options, px->model, px->quality, &pp, &err) != ST_OK) {
        video_fail(out, PROVIDER_PERMANENT, "invalid_options", "%s", err.message);
        goto out;
    }
    prompt = prompt_for(px, in);
    if (utf8_length(prompt) > PIXVERSE_PROMPT_MAX) {
        video_fail(out, PROVIDER_PERMANENT, "invalid_prompt",
                   "pixverse cannot use the prompt: longer than %d characters",
                   PIXVERSE_PROMPT_MAX);
        goto out;
    }
    if (in->image_data) {
        /* Already fetched and checked by the caller (the result cache). */
        str_copy(mime, sizeof(mime), in->image_type ? in->image_type : "");
        st = buf_append(&img, in->image_data, in->image_len);
        if (st != ST_OK)
            error_set(&err, ST_TOO_LARGE, "image_too_large",
                      "image of %zu bytes is larger than %zu bytes", in->image_len, img.max);
    } else {
        st = fetch_image(px->client, in->image_url, &px->fetch, &img, mime, &err);
    }
    if (st != ST_OK) {
        video_fail(out, status_is_transient(st) ? PROVIDER_TRANSIENT : PROVIDER_PERMANENT,
                   error_code(&err), "pixverse cannot get the input image: %s", err.message);
        out->retry_after_s = err.retry_after_s;
        goto out;
    }
    if (strcmp(mime, "image/png") != 0 && strcmp(mime, "image/jpeg") != 0 &&
        strcmp(mime, "image/webp") != 0) {
        video_fail(out, PROVIDER_PERMANENT, "image_unsupported_type",
                   "pixverse cannot use %s images: it takes png, jpeg or webp", mime);
        goto out;
    }
    /* A generate that does not know the image id gets one more upload (providers.md 3.5). */
    for (;;) {
        uploads++;
        if (!upload(px, &img, mime, &img_id, out, &http_status))
            goto out;
        call_s = generate(px, img_id, &pp, prompt, out, trace, &http_status);
        if (uploads >= 2 || strcmp(out->error_code, "provider_invalid_image_id") != 0)
            break;
        log_info("pixverse did not know image %" PRId64 " of item %s, uploading it again", img_id,
                 in->item_id ? in->item_id : "?");
    }
    if (strcmp(out->error_code, "provider_submit_unknown") == 0) {
        log_write(LOG_WARNING,
                  json_pack("{s:s, s:s, s:s}", "provider", PROVIDER_NAME, "itemId",
                            in->item_id ? in->item_id : "", "traceId", trace),
                  "pixverse may have started an unrecorded video for item %s of batch %s "
                  "(trace %s); %s",
                  in->item_id ? in->item_id : "?", in->batch_id ? in->batch_id : "?", trace,
                  px->fail_ambiguous_submit ? "failing the item"
                                            : "it will be submitted again (possible second bill)");
        if (px->fail_ambiguous_submit) {
            out->outcome = PROVIDER_PERMANENT;
            out->retry_after_s = 0;
        }
    }
out:
    video_scrub(out->error_message, px->api_key);
    fields = json_pack("{s:s, s:i, s:I}", "model", pp.model ? pp.model : px->model, "attempt",
                       in->attempt, "imgId", (json_int_t)img_id);
    if (trace[0])
        json_object_set_new(fields, "traceId", json_string(trace));
    video_record(PROVIDER_NAME, "submit", in->item_id, out, http_status, call_s,
                 (double)(time_mono_us() - t0) / 1e6, fields);
    buf_release(&img);
    return ST_OK;
}

/* ---- poll --------------------------------------------------------------------- */

static enum status pixverse_poll(struct provider *p, const char *job_id,
                                 struct provider_output *out)
{
    struct pixverse *px = p->state;
    struct px_call pc = {.json_body = false};
    struct video_reply reply;
    struct http_result res;
    struct http_call call;
    struct error err;
    char url[URL_MAX], source[sizeof(out->output_url)];
    int64_t t0 = time_mono_us(), video_id;
    double call_s = -1;

    ASSERT(out);
    http_result_init(&res);
    out->resubmit = false;
    if (!pixverse_job_id_parse(job_id, &video_id)) {
        video_fail(out, PROVIDER_PERMANENT, "provider_job_invalid",
                   "pixverse job id is not a video id");
        goto out;
    }
    str_printf(url, sizeof(url), "%s/openapi/v2/video/result/%" PRId64, px->base_url, video_id);
    memset(&call, 0, sizeof(call));
    call.method = "GET";
    call.url = url;
    call.timeout_ms = px->poll_timeout_ms;
    call.idempotent = true;
    call.max_attempts = px->poll_max_attempts;
    call_s = px_do(px, &pc, &call, &res, &err, &reply);
    if (!pixverse_classify(&reply, PIXVERSE_RESULT, out, NULL) || out->outcome != PROVIDER_DONE)
        goto out;

    str_copy(source, sizeof(source), out->output_url);
    video_url_for_message(source, out->output_url, sizeof(out->output_url));
    error_clear(&err);
    if (video_download(px->client, source, &px->download, &out->data, &err) != ST_OK) {
        bool again = strcmp(error_code(&err), "provider_download_failed") == 0;

        video_fail(out, again ? PROVIDER_TRANSIENT : PROVIDER_PERMANENT, error_code(&err),
                   "pixverse output of video %s: %s", job_id, err.message);
        if (again)
            out->retry_after_s = err.retry_after_s;
        goto out;
    }
    str_copy(out->content_type, sizeof(out->content_type), "video/mp4");
out:
    video_scrub(out->error_message, px->api_key);
    video_record(PROVIDER_NAME, "poll", job_id, out, res.status, call_s,
                 (double)(time_mono_us() - t0) / 1e6, NULL);
    http_result_release(&res);
    px_call_release(&pc);
    return ST_OK;
}

/* ---- cancel ------------------------------------------------------------------- */

/* PixVerse has no cancel endpoint: the job runs to its end; its result is never fetched. */
static enum status pixverse_cancel(struct provider *p, const char *job_id, struct error *err)
{
    UNUSED(p);
    error_clear(err);
    log_debug("pixverse cannot cancel video %s: the api has no cancel; it is left to finish",
              job_id ? job_id : "?");
    return ST_OK;
}

/* ---- construction ------------------------------------------------------------- */

static void pixverse_free(struct provider *p)
{
    struct pixverse *px = p ? p->state : NULL;

    if (!px)
        return;
    free(px->base_url);
    free(px->model);
    free(px->quality);
    if (px->key_header) {
        memset(px->key_header, 0, strlen(px->key_header));
        free(px->key_header);
    }
    if (px->api_key) {
        memset(px->api_key, 0, strlen(px->api_key));
        free(px->api_key);
    }
    free(px->default_prompt);
    free(px);
}

static bool key_valid(const char *k)
{
    size_t i;

    if (!k || !k[0])
        return false;
    for (i = 0; k[i]; i++)
        if ((unsigned char)k[i] <= 0x20 || (unsigned char)k[i] >= 0x7f)
            return false;
    return true;
}

struct provider *provider_pixverse_new(const struct pixverse_options *o, struct http_client *c)
{
    const char *base;
    struct pixverse_params pp;
    struct pixverse *px;
    struct error err;
    size_t n, klen;

    ASSERT(o && c);
    base = o->base_url && o->base_url[0] ? o->base_url : PIXVERSE_DEFAULT_BASE_URL;
    if (!key_valid(o->api_key)) {
        log_error("cannot create the pixverse provider: the api key is missing or malformed");
        return NULL;
    }
    if (!str_starts_with(base, "https://") && !str_starts_with(base, "http://")) {
        log_error("cannot create the pixverse provider: base url \"%.80s\" is not http(s)", base);
        return NULL;
    }
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (n + 64 >= URL_MAX) {
        log_error("cannot create the pixverse provider: base url longer than %d bytes",
                  URL_MAX - 64);
        return NULL;
    }
    error_clear(&err);
    if (pixverse_resolve(NULL, o->model, o->quality, &pp, &err) != ST_OK) {
        log_error("cannot create the pixverse provider: %s", err.message);
        return NULL;
    }
    if (o->default_prompt && utf8_length(o->default_prompt) > PIXVERSE_PROMPT_MAX) {
        log_error("cannot create the pixverse provider: the default prompt is longer than %d "
                  "characters",
                  PIXVERSE_PROMPT_MAX);
        return NULL;
    }

    px = xcalloc(1, sizeof(*px));
    px->client = c;
    px->base_url = xmalloc(n + 1);
    memcpy(px->base_url, base, n);
    px->base_url[n] = '\0';
    px->model = xstrdup(pp.model);
    px->quality = xstrdup(pp.quality);
    px->api_key = xstrdup(o->api_key);
    klen = strlen("API-KEY: ") + strlen(o->api_key) + 1;
    px->key_header = xmalloc(klen);
    str_printf(px->key_header, klen, "API-KEY: %s", o->api_key);
    px->default_prompt = xstrdup(
        o->default_prompt && o->default_prompt[0] ? o->default_prompt : PIXVERSE_DEFAULT_PROMPT);
    px->upload_timeout_ms =
        o->upload_timeout_ms > 0 ? o->upload_timeout_ms : PIXVERSE_DEFAULT_UPLOAD_TIMEOUT_MS;
    px->upload_max_attempts = o->upload_max_attempts;
    px->submit_timeout_ms =
        o->submit_timeout_ms > 0 ? o->submit_timeout_ms : PIXVERSE_DEFAULT_SUBMIT_TIMEOUT_MS;
    px->poll_timeout_ms =
        o->poll_timeout_ms > 0 ? o->poll_timeout_ms : PIXVERSE_DEFAULT_POLL_TIMEOUT_MS;
    px->poll_max_attempts = o->poll_max_attempts;
    px->fetch.max_bytes = o->fetch_max_bytes > 0 && o->fetch_max_bytes < PIXVERSE_IMAGE_MAX
                              ? o->fetch_max_bytes
                              : PIXVERSE_IMAGE_MAX;
    px->fetch.timeout_ms = o->fetch_timeout_ms;
    px->fetch.max_attempts = o->fetch_max_attempts;
    px->fetch.allow_insecure = o->allow_insecure;
    px->download.max_bytes = o->max_download_bytes;
    px->download.timeout_ms = o->download_timeout_ms;
    px->download.max_attempts = o->download_max_attempts;
    px->download.allow_insecure = o->allow_insecure;
    px->fail_ambiguous_submit = o->fail_ambiguous_submit;

    px->base.name = PROVIDER_NAME;
    px->base.async = true;
    px->base.state = px;
    px->base.submit = pixverse_submit;
    px->base.poll = pixverse_poll;
    px->base.cancel = pixverse_cancel;
    px->base.free = pixverse_free;
    if (str_starts_with(base, "http://"))
        log_warn("pixverse provider uses plain http at %s (local simulator only)", px->base_url);
    return &px->base;
}
