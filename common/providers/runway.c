#include "providers/runway.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

#define PROVIDER_NAME "runway"
#define URL_MAX       1024
#define RESPONSE_MAX  ((size_t)1 << 20) /* task objects are small; output URLs are ~1 KB */

/* ---- models (providers.md 2.2) ---------------------------------------------- */

struct model_spec {
    const char *name;
    bool legacy;
    const char *const *ratios; /* NULL-terminated; the first is the default */
    int min_duration, max_duration;
    bool five_or_ten; /* duration is 5 or 10 only */
};

static const char *const gen4_ratios[] = {"1280:720", "720:1280", "1104:832", "832:1104",
                                          "960:960",  "1584:672", NULL};
static const char *const gen3a_ratios[] = {"1280:768", "768:1280", NULL};

static const struct model_spec models[] = {
    {"gen4_turbo", false, gen4_ratios, 2, 10, false},
    {"gen4.5", false, gen4_ratios, 2, 10, false},
    {"gen3a_turbo", true, gen3a_ratios, 5, 10, true},
};

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

/* "a, b or c" into out. */
static void list_join(const char *const *list, char *out, size_t cap)
{
    size_t i, n = 0;

    out[0] = '\0';
    for (i = 0; list[i]; i++) {
        const char *sep = i == 0 ? "" : list[i + 1] ? ", " : " or ";
        int w = snprintf(out + n, cap - n, "%s%s", sep, list[i]);

        if (w < 0 || (size_t)w >= cap - n)
            return;
        n += (size_t)w;
    }
}

const char *runway_default_ratio(const char *model)
{
    const struct model_spec *m = model_find(model);

    return m ? m->ratios[0] : NULL;
}

size_t runway_utf16_length(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c & 0xc0) != 0x80)
            n += c >= 0xf0 ? 2 : 1; /* a 4-byte sequence is a surrogate pair */
    }
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
    return error_set(err, ST_INVALID, "invalid_options", "invalid runway option %s", msg);
}

enum status runway_resolve(const json_t *options, const char *default_model, unsigned flags,
                           struct runway_params *p, struct error *err)
{
    const struct model_spec *m;
    const json_t *v;
    char allowed[160];

    ASSERT(p);
    memset(p, 0, sizeof(*p));
    if (options && !json_is_object(options))
        return error_set(err, ST_INVALID, "invalid_options",
                         "invalid runway options: not a json object");
    v = json_object_get(options, "model");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return bad_option(err, "\"model\": must be a string");
        p->model = json_string_value(v);
    } else {
        p->model = default_model && default_model[0] ? default_model : RUNWAY_DEFAULT_MODEL;
    }
    m = model_find(p->model);
    if (!m || (m->legacy && !(flags & RUNWAY_ALLOW_LEGACY)))
        return bad_option(err, "\"model\": \"%.32s\" is not %s", p->model,
                          flags & RUNWAY_ALLOW_LEGACY ? "gen4_turbo, gen4.5 or gen3a_turbo"
                                                      : "gen4_turbo or gen4.5");

    v = json_object_get(options, "ratio");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return bad_option(err, "\"ratio\": must be a string");
        p->ratio = json_string_value(v);
        if (!in_list(p->ratio, m->ratios)) {
            list_join(m->ratios, allowed, sizeof(allowed));
            return bad_option(err, "\"ratio\": \"%.16s\" is not %s for %s", p->ratio, allowed,
                              m->name);
        }
    } else {
        p->ratio = m->ratios[0];
    }

    p->duration = RUNWAY_DEFAULT_DURATION;
    v = json_object_get(options, "duration");
    if (v && !json_is_null(v)) {
        json_int_t d = json_is_integer(v) ? json_integer_value(v) : -1;

        if (m->five_or_ten && d != 5 && d != 10)
            return bad_option(err, "\"duration\": must be 5 or 10 (seconds) for %s", m->name);
        if (d < m->min_duration || d > m->max_duration)
            return bad_option(err,
                              "\"duration\": must be an integer from %d to %d (seconds) "
                              "for %s",
                              m->min_duration, m->max_duration, m->name);
        p->duration = (int)d;
    }

    v = json_object_get(options, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > RUNWAY_SEED_MAX)
            return bad_option(err, "\"seed\": must be an integer from 0 to %lld", RUNWAY_SEED_MAX);
        p->has_seed = true;
        p->seed = json_integer_value(v);
    }

    v = json_object_get(options, "prompt");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return bad_option(err, "\"prompt\": must be a string");
        if (runway_utf16_length(json_string_value(v)) > RUNWAY_PROMPT_MAX)
            return bad_option(err, "\"prompt\": longer than %d characters", RUNWAY_PROMPT_MAX);
    }
    return ST_OK;
}

enum status runway_validate_options_flags(const json_t *options, unsigned flags, struct error *err)
{
    struct runway_params p;

    return runway_resolve(options, NULL, flags, &p, err);
}

enum status runway_validate_options(const json_t *options, struct error *err)
{
    return runway_validate_options_flags(options, 0, err);
}

/* ---- classification --------------------------------------------------------- */

/* A task id goes into a URL path: letters, digits, '-' and '_' only. */
static bool job_id_valid(const char *id)
{
    size_t i;

    if (!id || !id[0] || strlen(id) > RUNWAY_JOB_ID_MAX)
        return false;
    for (i = 0; id[i]; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '-' && id[i] != '_')
            return false;
    return true;
}

static bool contains_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);

    for (; s && *s; s++)
        if (strncasecmp(s, needle, n) == 0)
            return true;
    return false;
}

/* ": <quoted text>", or "" when there is none. */
static void said_tail(const char *s, char *out, size_t cap)
{
    char q[VIDEO_QUOTE_MAX + 4];

    video_quote(s, q, sizeof(q));
    if (q[0])
        snprintf(out, cap, ": %s", q);
    else
        out[0] = '\0';
}

/* "runway <what> (<status>)<said>", TRANSIENT, waiting at least min_retry_s. */
static void transient(struct provider_output *out, const char *code, int retry_after_s,
                      int min_retry_s, const char *what, const char *status, const char *said)
{
    video_fail(out, PROVIDER_TRANSIENT, code, "runway %s (%s)%s", what, status, said);
    out->retry_after_s = retry_after_s > min_retry_s ? retry_after_s : min_retry_s;
}

void runway_classify_failure(const char *failure_code, const char *failure,
                             struct provider_output *out)
{
    char said[VIDEO_QUOTE_MAX + 8], code[72];
    const char *fc = failure_code;

    ASSERT(out);
    said_tail(failure, said, sizeof(said));
    video_quote(fc ? fc : "null", code, sizeof(code));
    out->resubmit = false;
    out->pause_batch = false;
    if (fc &&
        (str_starts_with(fc, "SAFETY.") || str_starts_with(fc, "INPUT_PREPROCESSING.SAFETY"))) {
        video_fail(out, PROVIDER_PERMANENT, "provider_moderation",
                   "runway refused the content (%s)%s", code, said);
    } else if (fc && (strcmp(fc, "ASSET.INVALID") == 0 || str_starts_with(fc, "ASSET."))) {
        video_fail(out, PROVIDER_PERMANENT, "provider_asset_invalid",
                   "runway cannot use the input image (%s)%s", code, said);
    } else if (fc && str_starts_with(fc, "INTERNAL.BAD_OUTPUT")) {
        /* Its own code, so the caller can cap it tighter than other resubmissions. */
        video_fail(out, PROVIDER_TRANSIENT, "provider_bad_output",
                   "runway rejected its own output (%s)%s", code, said);
        out->resubmit = true;
    } else if (fc && strcmp(fc, "THIRD_PARTY.UNAVAILABLE") == 0) {
        video_fail(out, PROVIDER_TRANSIENT, "provider_job_failed",
                   "runway task failed, upstream model busy (%s)%s", code, said);
        out->retry_after_s = RUNWAY_BUSY_RETRY_S;
        out->resubmit = true;
    } else {
        /* INTERNAL, null, INPUT_PREPROCESSING.INTERNAL, and codes nobody documented yet. */
        video_fail(out, PROVIDER_TRANSIENT, "provider_job_failed", "runway task failed (%s)%s",
                   code, said);
        out->resubmit = true;
    }
}

static void classify_transport(const struct video_reply *r, enum runway_call call,
                               struct provider_output *out)
{
    const char *why = r->transport_error ? r->transport_error : status_name(r->transport);

    switch (r->transport) {
    case ST_INVALID:
    case ST_PERMISSION_DENIED:
        video_fail(out, PROVIDER_PERMANENT, "provider_config", "runway cannot be called: %s", why);
        return;
    case ST_TOO_LARGE:
        if (call == RUNWAY_SUBMIT)
            break; /* an answer came: a task may exist */
        video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response", "runway answer too large: %s",
                   why);
        return;
    default:
        if (call == RUNWAY_SUBMIT && r->request_sent)
            break;
        video_fail(out, PROVIDER_TRANSIENT,
                   r->transport == ST_TIMEOUT ? "provider_timeout" : "provider_unavailable",
                   "runway %s: %s", r->transport == ST_TIMEOUT ? "timed out" : "unreachable", why);
        return;
    }
    video_fail(out, PROVIDER_TRANSIENT, "provider_submit_unknown",
               "runway may have created a task but did not answer: %s", why);
}

/* Non-2xx answers (providers.md 2.5). root is the parsed body or NULL. */
static void classify_http_error(const struct video_reply *r, enum runway_call call,
                                const json_t *root, struct provider_output *out)
{
    const char *msg = json_str_or(root, "error", NULL);
    long code = r->http_status;
    char said[VIDEO_QUOTE_MAX + 8], status[24];

    if (!msg)
        msg = json_str_or(root, "message", NULL);
    said_tail(msg, said, sizeof(said));
    snprintf(status, sizeof(status), "http %ld", code);
    if (code >= 300 && code < 400) {
        video_fail(out, PROVIDER_PERMANENT, "provider_bad_response",
                   "runway answered with a redirect (%s)", status);
    } else if (code == 400 &&
               (contains_ci(msg, "enough credits") || contains_ci(msg, "insufficient credits"))) {
        video_fail(out, PROVIDER_PERMANENT, "provider_no_credits", "runway is out of credits%s",
                   said);
        out->pause_batch = true;
    } else if (code == 400 && call == RUNWAY_SUBMIT && !json_object_get(root, "issues") &&
               (contains_ci(msg, "promptImage") || contains_ci(msg, "asset"))) {
        video_fail(out, PROVIDER_PERMANENT, "provider_asset_invalid",
                   "runway cannot use the input image (%s)%s", status, said);
    } else if (code == 401 || code == 403) {
        video_fail(out, PROVIDER_PERMANENT, "provider_auth_failed",
                   "runway refused the api key (%s)%s", status, said);
    } else if (code == 404 && call == RUNWAY_POLL) {
        video_fail(out, PROVIDER_PERMANENT, "provider_job_not_found",
                   "runway task not found (%s): deleted or expired", status);
    } else if (code == 404 || code == 405) {
        video_fail(out, PROVIDER_PERMANENT, "provider_config",
                   "runway has no such endpoint (%s): check the base url", status);
    } else if (code == 429) {
        transient(out, "provider_rate_limited", r->retry_after_s,
                  call == RUNWAY_SUBMIT ? RUNWAY_DAILY_LIMIT_RETRY_S : 0,
                  "rate limited the request", status, said);
    } else if (code == 408 || code == 504) {
        transient(out, "provider_timeout", r->retry_after_s, 0, "timed out", status, said);
    } else if (code == 409 || code >= 500) {
        transient(out, "provider_unavailable", r->retry_after_s, 0, "unavailable", status, said);
    } else {
        video_fail(out, PROVIDER_PERMANENT, "provider_invalid_request",
                   "runway rejected the request (%s)%s", status, said);
    }
}

static void classify_submit_ok(const json_t *root, struct provider_output *out)
{
    const char *id = json_str_or(root, "id", NULL);

    if (!job_id_valid(id)) {
        video_fail(out, PROVIDER_TRANSIENT, "provider_submit_unknown",
                   "runway answered without a usable task id");
        return;
    }
    out->outcome = PROVIDER_STARTED;
    str_copy(out->job_id, sizeof(out->job_id), id);
}

static void classify_task(const json_t *root, struct provider_output *out)
{
    const char *status = json_str_or(root, "status", NULL);
    const json_t *output, *progress;
    char q[40];

    if (!status) {
        video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response",
                   "runway answered with a task without a status");
        return;
    }
    if (strcmp(status, "SUCCEEDED") == 0) {
        const char *url;

        output = json_object_get(root, "output");
        url = json_string_value(json_array_get(output, 0));
        if (!url || !url[0] || !str_copy(out->output_url, sizeof(out->output_url), url)) {
            video_fail(out, PROVIDER_TRANSIENT, "provider_bad_response",
                       "runway task succeeded without a usable output url");
            out->output_url[0] = '\0';
            return;
        }
        out->outcome = PROVIDER_DONE;
        out->progress = 1;
        return;
    }
    if (strcmp(status, "FAILED") == 0) {
        runway_classify_failure(json_str_or(root, "failureCode", NULL),
                                json_str_or(root, "failure", NULL), out);
        return;
    }
    if (strcmp(status, "CANCELLED") == 0 || strcmp(status, "CANCELED") == 0) {
        video_fail(out, PROVIDER_PERMANENT, "provider_cancelled", "runway task was cancelled");
        return;
    }
    out->outcome = PROVIDER_RUNNING;
    out->progress = 0;
    progress = json_object_get(root, "progress");
    if (strcmp(status, "RUNNING") == 0 && json_is_number(progress)) {
        double v = json_number_value(progress);

        out->progress = v < 0 || v != v ? 0 : v > 1 ? 1 : v;
    } else if (strcmp(status, "PENDING") != 0 && strcmp(status, "THROTTLED") != 0 &&
               strcmp(status, "RUNNING") != 0) {
        video_quote(status, q, sizeof(q));
        log_debug("runway task in unknown state \"%s\", treated as running", q);
    }
}

void runway_classify(const struct video_reply *r, enum runway_call call,
                     struct provider_output *out)
{
    json_t *root;

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
        return;
    }
    root = r->body && r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    if (r->http_status < 200 || r->http_status > 299)
        classify_http_error(r, call, root, out);
    else if (!json_is_object(root))
        video_fail(out, PROVIDER_TRANSIENT,
                   call == RUNWAY_SUBMIT ? "provider_submit_unknown" : "provider_bad_response",
                   "runway answered http %ld with a body that is not a json object",
                   r->http_status);
    else if (call == RUNWAY_SUBMIT)
        classify_submit_ok(root, out);
    else
        classify_task(root, out);
    json_decref(root);
}

/* ---- state ---------------------------------------------------------------- */

struct runway {
    struct provider base; /* first: the provider's state points back here */
    struct http_client *client;
    char *base_url; /* without a trailing slash */
    char *model;
    char *auth_header; /* "Authorization: Bearer KEY" */
    char *api_key;     /* to scrub it from any message */
    char *default_prompt;
    long submit_timeout_ms;
    long poll_timeout_ms;
    int poll_max_attempts;
    struct video_limits download;
    unsigned flags;
    bool allow_insecure;
    bool fail_ambiguous_submit;
};

static void reply_from(struct video_reply *reply, enum status st, const struct error *err,
                       const struct http_result *res, bool sent)
{
    memset(reply, 0, sizeof(*reply));
    reply->transport = st;
    reply->transport_error = st == ST_OK ? NULL : err->message;
    reply->request_sent = sent;
    reply->http_status = res->status;
    reply->body = res->body.data;
    reply->body_len = res->body.len;
    reply->retry_after_s = res->retry_after_s;
}

/* ---- submit ------------------------------------------------------------------ */

/* Runway fetches the image itself: https, a domain name, at most 2048 bytes (providers.md 2.2). */
static bool image_url_usable(const struct runway *rw, const char *url, char *why, size_t cap)
{
    CURLU *u;
    char *host = NULL;
    bool ok = true;

    if (!url || !url[0]) {
        str_copy(why, cap, "missing url");
        return false;
    }
    if (strlen(url) > RUNWAY_IMAGE_URL_MAX) {
        snprintf(why, cap, "url longer than %d bytes", RUNWAY_IMAGE_URL_MAX);
        return false;
    }
    if (!str_starts_with(url, "https://") &&
        !(rw->allow_insecure && str_starts_with(url, "http://"))) {
        str_copy(why, cap, "only https urls can be used");
        return false;
    }
    u = curl_url();
    if (!u)
        BUG("out of memory in curl_url");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !host[0]) {
        str_copy(why, cap, "malformed url");
        ok = false;
    } else if (!rw->allow_insecure &&
               (host[0] == '[' || strspn(host, "0123456789.") == strlen(host))) {
        str_copy(why, cap, "the host must be a domain name, not an ip address");
        ok = false;
    }
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static const char *prompt_for(const struct runway *rw, const struct provider_input *in)
{
    const char *p = json_str_or(in->metadata, "prompt", NULL);

    if (!p || !p[0])
        p = json_str_or(in->options, "prompt", NULL);
    return p && p[0] ? p : rw->default_prompt;
}

static enum status runway_submit(struct provider *p, const struct provider_input *in,
                                 struct provider_output *out)
{
    struct runway *rw = p->state;
    const char *headers[] = {rw->auth_header, "X-Runway-Version: " RUNWAY_API_VERSION,
                             "Content-Type: application/json", "Accept: application/json", NULL};
    char url[URL_MAX], why[96], url_msg[VIDEO_URL_MSG_MAX];
    struct runway_params rp;
    struct video_reply reply;
    struct http_result res;
    struct http_call call;
    struct error err;
    const char *prompt;
    json_t *body = NULL;
    char *text = NULL;
    int64_t t0 = time_mono_us(), t1;
    double call_s = -1;
    bool sent = false;
    enum status st;

    ASSERT(in && out);
    http_result_init(&res);
    out->outcome = PROVIDER_PERMANENT;
    out->resubmit = false;
    error_clear(&err);
    if (runway_resolve(in->options, rw->model, rw->flags, &rp, &err) != ST_OK) {
        video_fail(out, PROVIDER_PERMANENT, "invalid_options", "%s", err.message);
        goto out;
    }
    prompt = prompt_for(rw, in);
    if (runway_utf16_length(prompt) > RUNWAY_PROMPT_MAX) {
        video_fail(out, PROVIDER_PERMANENT, "invalid_prompt",
                   "runway cannot use the prompt: longer than %d characters", RUNWAY_PROMPT_MAX);
        goto out;
    }
    if (!image_url_usable(rw, in->image_url, why, sizeof(why))) {
        video_url_for_message(in->image_url, url_msg, sizeof(url_msg));
        video_fail(out, PROVIDER_PERMANENT, "image_url_invalid", "runway cannot fetch image %s: %s",
                   url_msg, why);
        goto out;
    }
    body = json_pack("{s:s, s:s, s:s, s:s, s:i}", "model", rp.model, "promptImage", in->image_url,
                     "promptText", prompt, "ratio", rp.ratio, "duration", rp.duration);
    if (body && rp.has_seed)
        json_object_set_new(body, "seed", json_integer(rp.seed));
    text = body ? json_dump_compact(body) : NULL;
    if (!text) {
        video_fail(out, PROVIDER_PERMANENT, "invalid_prompt",
                   "runway cannot use the prompt: not valid utf-8");
        goto out;
    }
    str_printf(url, sizeof(url), "%s/v1/image_to_video", rw->base_url);

    memset(&call, 0, sizeof(call));
    call.method = "POST";
    call.url = url;
    call.headers = headers;
    call.body = text;
    call.body_len = strlen(text);
    call.timeout_ms = rw->submit_timeout_ms;
    call.max_response_bytes = RESPONSE_MAX;
    call.idempotent = false; /* no idempotency key: a second POST is a second task and bill */
    call.max_attempts = 1;
    call.customize = video_customize_track_sent;
    call.customize_ud = &sent;
    t1 = time_mono_us();
    st = http_client_do(rw->client, &call, &res, &err);
    call_s = (double)(time_mono_us() - t1) / 1e6;
    reply_from(&reply, st, &err, &res, sent);
    runway_classify(&reply, RUNWAY_SUBMIT, out);
    if (strcmp(out->error_code, "provider_submit_unknown") == 0) {
        log_write(LOG_WARNING,
                  json_pack("{s:s, s:s}", "provider", PROVIDER_NAME, "itemId",
                            in->item_id ? in->item_id : ""),
                  "runway may have created an unrecorded task for item %s of batch %s; %s",
                  in->item_id ? in->item_id : "?", in->batch_id ? in->batch_id : "?",
                  rw->fail_ambiguous_submit ? "failing the item"
                                            : "it will be submitted again (possible second bill)");
        if (rw->fail_ambiguous_submit) {
            out->outcome = PROVIDER_PERMANENT;
            out->retry_after_s = 0;
        }
    }
out:
    video_scrub(out->error_message, rw->api_key);
    video_record(
        PROVIDER_NAME, "submit", in->item_id, out, res.status, call_s,
        (double)(time_mono_us() - t0) / 1e6,
        json_pack("{s:s, s:i}", "model", rp.model ? rp.model : rw->model, "attempt", in->attempt));
    http_result_release(&res);
    free(text);
    json_decref(body);
    return ST_OK;
}

/* ---- poll --------------------------------------------------------------------- */

/* Maps a failed download to an outcome: worth another poll unless the video itself is wrong. */
static void fail_download(struct provider_output *out, const char *job_id, const struct error *err)
{
    bool again = strcmp(error_code(err), "provider_download_failed") == 0;

    video_fail(out, again ? PROVIDER_TRANSIENT : PROVIDER_PERMANENT, error_code(err),
               "runway output of task %s: %s", job_id, err->message);
    if (again)
        out->retry_after_s = err->retry_after_s;
}

static enum status runway_poll(struct provider *p, const char *job_id, struct provider_output *out)
{
    struct runway *rw = p->state;
    const char *headers[] = {rw->auth_header, "X-Runway-Version: " RUNWAY_API_VERSION,
                             "Accept: application/json", NULL};
    struct video_reply reply;
    struct http_result res;
    struct http_call call;
    struct error err;
    char url[URL_MAX], source[sizeof(out->output_url)];
    int64_t t0 = time_mono_us(), t1;
    double call_s = -1;
    enum status st;

    ASSERT(out);
    http_result_init(&res);
    error_clear(&err);
    out->resubmit = false;
    if (!job_id_valid(job_id)) {
        video_fail(out, PROVIDER_PERMANENT, "provider_job_invalid", "runway task id is malformed");
        goto out;
    }
    str_printf(url, sizeof(url), "%s/v1/tasks/%s", rw->base_url, job_id);
    memset(&call, 0, sizeof(call));
    call.method = "GET";
    call.url = url;
    call.headers = headers;
    call.timeout_ms = rw->poll_timeout_ms;
    call.max_response_bytes = RESPONSE_MAX;
    call.idempotent = true;
    call.max_attempts = rw->poll_max_attempts;
    t1 = time_mono_us();
    st = http_client_do(rw->client, &call, &res, &err);
    call_s = (double)(time_mono_us() - t1) / 1e6;
    reply_from(&reply, st, &err, &res, true);
    runway_classify(&reply, RUNWAY_POLL, out);
    if (out->outcome != PROVIDER_DONE)
        goto out;

    str_copy(source, sizeof(source), out->output_url);
    video_url_for_message(source, out->output_url, sizeof(out->output_url));
    st = video_download(rw->client, source, &rw->download, &out->data, &err);
    if (st != ST_OK) {
        fail_download(out, job_id, &err);
        goto out;
    }
    str_copy(out->content_type, sizeof(out->content_type), "video/mp4");
out:
    video_scrub(out->error_message, rw->api_key);
    video_record(PROVIDER_NAME, "poll", job_id, out, res.status, call_s,
                 (double)(time_mono_us() - t0) / 1e6, NULL);
    http_result_release(&res);
    return ST_OK;
}

/* ---- cancel ------------------------------------------------------------------- */

static void count_cancel(const char *result)
{
    const char *labels[] = {PROVIDER_NAME, result};

    metric_add(metric_counter("provider_cancels_total", "provider job cancellations by result",
                              "provider,result"),
               labels, 1);
}

static enum status runway_cancel(struct provider *p, const char *job_id, struct error *err)
{
    struct runway *rw = p->state;
    const char *headers[] = {rw->auth_header, "X-Runway-Version: " RUNWAY_API_VERSION,
                             "Accept: */*", NULL};
    struct http_result res;
    struct http_call call;
    struct error local;
    char url[URL_MAX];
    enum status st;

    if (!err)
        err = &local;
    error_clear(err);
    if (!job_id_valid(job_id)) {
        count_cancel("failed");
        return error_set(err, ST_INVALID, "provider_job_invalid",
                         "cannot cancel runway task: malformed id");
    }
    http_result_init(&res);
    str_printf(url, sizeof(url), "%s/v1/tasks/%s", rw->base_url, job_id);
    memset(&call, 0, sizeof(call));
    call.method = "DELETE";
    call.url = url;
    call.headers = headers;
    call.timeout_ms = rw->poll_timeout_ms;
    call.max_response_bytes = RESPONSE_MAX;
    call.idempotent = true; /* deleting twice is harmless: the second answers 404 */
    call.max_attempts = rw->poll_max_attempts;
    st = http_client_do(rw->client, &call, &res, err);
    if (st != ST_OK) {
        error_prefix(err, "cannot cancel runway task %s", job_id);
    } else if ((res.status >= 200 && res.status < 300) || res.status == 404) {
        log_write(
            LOG_INFO, json_pack("{s:s, s:s}", "provider", PROVIDER_NAME, "providerJobId", job_id),
            "runway task %s %s", job_id, res.status == 404 ? "was already gone" : "cancelled");
        count_cancel(res.status == 404 ? "gone" : "ok");
        http_result_release(&res);
        return ST_OK;
    } else {
        st = status_from_http(res.status);
        if (res.status == 401 || res.status == 403)
            st = ST_UNAUTHENTICATED;
        else if (!status_is_transient(st) && res.status >= 500)
            st = ST_UNAVAILABLE;
        error_set(err, st, "provider_cancel_failed", "cannot cancel runway task %s: http %ld",
                  job_id, res.status);
        err->retry_after_s = res.retry_after_s;
    }
    video_scrub(err->message, rw->api_key);
    count_cancel("failed");
    http_result_release(&res);
    return st;
}

/* ---- construction ------------------------------------------------------------- */

static void runway_free(struct provider *p)
{
    struct runway *rw = p ? p->state : NULL;

    if (!rw)
        return;
    free(rw->base_url);
    free(rw->model);
    if (rw->auth_header) {
        memset(rw->auth_header, 0, strlen(rw->auth_header));
        free(rw->auth_header);
    }
    if (rw->api_key) {
        memset(rw->api_key, 0, strlen(rw->api_key));
        free(rw->api_key);
    }
    free(rw->default_prompt);
    free(rw);
}

static bool key_valid(const char *k)
{
    size_t i;

    if (!k || !k[0])
        return false;
    for (i = 0; k[i]; i++)
        if ((unsigned char)k[i] <= 0x20 || (unsigned char)k[i] >= 0x7f)
            return false; /* would break the header line */
    return true;
}

struct provider *provider_runway_new(const struct runway_options *o, struct http_client *c)
{
    const char *base, *model;
    struct runway_params rp;
    json_t *probe;
    struct error err;
    struct runway *rw;
    size_t n, klen;
    unsigned flags;

    ASSERT(o && c);
    base = o->base_url && o->base_url[0] ? o->base_url : RUNWAY_DEFAULT_BASE_URL;
    model = o->model && o->model[0] ? o->model : RUNWAY_DEFAULT_MODEL;
    flags = o->allow_legacy_models ? RUNWAY_ALLOW_LEGACY : 0;
    if (!key_valid(o->api_key)) {
        log_error("cannot create the runway provider: the api key is missing or malformed");
        return NULL;
    }
    if (!str_starts_with(base, "https://") && !str_starts_with(base, "http://")) {
        log_error("cannot create the runway provider: base url \"%.80s\" is not http(s)", base);
        return NULL;
    }
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (n + 64 >= URL_MAX) {
        log_error("cannot create the runway provider: base url longer than %d bytes", URL_MAX - 64);
        return NULL;
    }
    probe = json_pack("{s:s}", "model", model);
    error_clear(&err);
    if (runway_resolve(probe, NULL, flags, &rp, &err) != ST_OK) {
        log_error("cannot create the runway provider: %s", err.message);
        json_decref(probe);
        return NULL;
    }
    json_decref(probe);
    if (o->default_prompt && runway_utf16_length(o->default_prompt) > RUNWAY_PROMPT_MAX) {
        log_error("cannot create the runway provider: the default prompt is longer than %d "
                  "characters",
                  RUNWAY_PROMPT_MAX);
        return NULL;
    }

    rw = xcalloc(1, sizeof(*rw));
    rw->client = c;
    rw->base_url = xmalloc(n + 1);
    memcpy(rw->base_url, base, n);
    rw->base_url[n] = '\0';
    rw->model = xstrdup(model);
    rw->api_key = xstrdup(o->api_key);
    klen = strlen("Authorization: Bearer ") + strlen(o->api_key) + 1;
    rw->auth_header = xmalloc(klen);
    str_printf(rw->auth_header, klen, "Authorization: Bearer %s", o->api_key);
    rw->default_prompt = xstrdup(o->default_prompt && o->default_prompt[0] ? o->default_prompt
                                                                           : RUNWAY_DEFAULT_PROMPT);
    rw->submit_timeout_ms =
        o->submit_timeout_ms > 0 ? o->submit_timeout_ms : RUNWAY_DEFAULT_SUBMIT_TIMEOUT_MS;
    rw->poll_timeout_ms =
        o->poll_timeout_ms > 0 ? o->poll_timeout_ms : RUNWAY_DEFAULT_POLL_TIMEOUT_MS;
    rw->poll_max_attempts = o->poll_max_attempts;
    rw->download.max_bytes = o->max_download_bytes;
    rw->download.timeout_ms = o->download_timeout_ms;
    rw->download.max_attempts = o->download_max_attempts;
    rw->download.allow_insecure = o->allow_insecure;
    rw->flags = flags;
    rw->allow_insecure = o->allow_insecure;
    rw->fail_ambiguous_submit = o->fail_ambiguous_submit;

    rw->base.name = PROVIDER_NAME;
    rw->base.async = true;
    rw->base.state = rw;
    rw->base.submit = runway_submit;
    rw->base.poll = runway_poll;
    rw->base.cancel = runway_cancel;
    rw->base.free = runway_free;
    if (str_starts_with(base, "http://"))
        log_warn("runway provider uses plain http at %s (local simulator only)", rw->base_url);
    return &rw->base;
}
