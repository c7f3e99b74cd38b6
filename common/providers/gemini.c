#include "providers/gemini.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

#define PROVIDER_NAME  "gemini"
#define RESPONSE_SLACK ((size_t)1 << 20) /* JSON around the base64 image */
#define QUOTE_MAX      120               /* bytes of Google's own text quoted in messages */
#define MODEL_MAX      128
#define URL_MAX        1024

/* ---- state ---------------------------------------------------------------- */

struct gemini {
    struct provider base; /* first: the provider's state points back here */
    struct http_client *client;
    char *url;        /* {base}/v1beta/models/{model}:generateContent */
    char *model;      /* for logs and the image-size rule */
    char *key_header; /* "x-goog-api-key: KEY" */
    char *api_key;    /* to scrub it from any message, in case a peer echoes it */
    long timeout_ms;
    struct fetch_limits fetch;
    size_t max_output;
    char *image_size; /* NULL: not sent */
    bool image_only;
    char *default_prompt;
};

/* ---- classification --------------------------------------------------------- */

/* The finish reasons of a candidate that carry a decision of their own (providers.md 1.5). */
static const char *const moderation_reasons[] = {
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
};
static const char *const recitation_reasons[] = {"RECITATION", "IMAGE_RECITATION"};
static const char *const config_reasons[] = {
    "MAX_TOKENS",           "MALFORMED_FUNCTION_CALL", "LANGUAGE",
    "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
};

static bool in_list(const char *s, const char *const *list, size_t n)
{
    size_t i;

    for (i = 0; s && i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

/*
 * Copies a piece of text from the peer for a message: at most QUOTE_MAX
 * bytes (cut on a UTF-8 boundary, then "..."), control characters as
 * spaces. Upper case is kept: it is Google's text, quoted.
 */
static void quote(const char *s, char *out, size_t cap)
{
    size_t n, i, max;
    bool cut;

    ASSERT(cap > 4);
    max = cap - 4 < QUOTE_MAX ? cap - 4 : QUOTE_MAX;
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

/* ": <quoted text>", or "" when there is none: the tail of a message. */
static void quote_tail(const char *s, char *out, size_t cap)
{
    char q[QUOTE_MAX + 4];

    quote(s, q, sizeof(q));
    if (q[0])
        snprintf(out, cap, ": %s", q);
    else
        out[0] = '\0';
}

/* An enum value from the API in lower case, for messages ("IMAGE_SAFETY" -> "image_safety"). */
static void lower_token(const char *s, char *out, size_t cap)
{
    size_t i = 0;

    for (; s && s[i] && i + 1 < cap; i++)
        out[i] =
            isalnum((unsigned char)s[i]) || s[i] == '_' ? (char)tolower((unsigned char)s[i]) : '?';
    out[i] = '\0';
}

static void fail(struct provider_output *out, enum provider_outcome o, const char *code,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void fail(struct provider_output *out, enum provider_outcome o, const char *code,
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
}

/* A model answer without a usable image: retried a few times, then final (see gemini.h). */
static void fail_capped(struct provider_output *out, int attempt, const char *code,
                        const char *what)
{
    bool again = attempt < GEMINI_NO_IMAGE_ATTEMPTS;

    fail(out, again ? PROVIDER_TRANSIENT : PROVIDER_PERMANENT, code,
         "gemini %s (attempt %d, at most %d)", what, attempt, GEMINI_NO_IMAGE_ATTEMPTS);
}

int gemini_parse_duration(const char *s)
{
    double v;
    size_t n;
    char num[32];

    if (!s)
        return -1;
    n = strlen(s);
    if (n < 2 || n >= sizeof(num) || s[n - 1] != 's')
        return -1;
    memcpy(num, s, n - 1);
    num[n - 1] = '\0';
    if (!isdigit((unsigned char)num[0]) || !str_to_double(num, &v) || v < 0 || v > 1e9)
        return -1;
    return (int)v + ((double)(int)v < v ? 1 : 0);
}

/* What a Google RPC error envelope says (providers.md 1.7). Strings are borrowed from the JSON. */
struct rpc_error {
    const char *status;  /* "INVALID_ARGUMENT"... */
    const char *message; /* Google's text */
    const char *reason;  /* google.rpc.ErrorInfo reason: "API_KEY_INVALID"... */
    int retry_delay_s;   /* google.rpc.RetryInfo, 0 when absent */
    bool per_day;        /* a QuotaFailure violation on a per-day quota */
};

static bool type_is(const json_t *detail, const char *suffix)
{
    const char *t = json_str_or(detail, "@type", "");
    size_t n = strlen(t), k = strlen(suffix);

    return n >= k && strcmp(t + n - k, suffix) == 0;
}

static void rpc_error_parse(const json_t *root, struct rpc_error *e)
{
    const json_t *error, *details, *d, *v;
    size_t i, j;

    memset(e, 0, sizeof(*e));
    /* The streaming endpoint wraps it in an array; accept both. */
    if (json_is_array(root))
        root = json_array_get(root, 0);
    error = json_object_get(root, "error");
    if (!json_is_object(error))
        return;
    e->status = json_str_or(error, "status", NULL);
    e->message = json_str_or(error, "message", NULL);
    details = json_object_get(error, "details");
    json_array_foreach(details, i, d)
    {
        if (type_is(d, "google.rpc.RetryInfo")) {
            int s = gemini_parse_duration(json_str_or(d, "retryDelay", NULL));

            if (s > e->retry_delay_s)
                e->retry_delay_s = s;
        } else if (type_is(d, "google.rpc.ErrorInfo")) {
            e->reason = json_str_or(d, "reason", NULL);
        } else if (type_is(d, "google.rpc.QuotaFailure")) {
            json_array_foreach(json_object_get(d, "violations"), j, v)
            {
                const char *id = json_str_or(v, "quotaId", "");

                if (strstr(id, "PerDay"))
                    e->per_day = true;
            }
        }
    }
}

static void classify_http_error(const struct gemini_reply *r, struct provider_output *out)
{
    json_t *root = r->body && r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    struct rpc_error e;
    char token[40], status[48], said[QUOTE_MAX + 8];
    long code = r->http_status;
    int wait = r->retry_after_s;

    rpc_error_parse(root, &e);
    lower_token(e.status, token, sizeof(token));
    snprintf(status, sizeof(status), "http %ld%s%s", code, token[0] ? " " : "", token);
    quote_tail(e.message, said, sizeof(said));
    if (e.retry_delay_s > wait)
        wait = e.retry_delay_s;

    if (code >= 300 && code < 400) {
        fail(out, PROVIDER_PERMANENT, "provider_bad_response",
             "gemini answered with a redirect (%s): check the base url", status);
    } else if (code == 402) {
        fail(out, PROVIDER_PERMANENT, "provider_no_credits", "gemini is out of credits (%s)%s",
             status, said);
        out->pause_batch = true;
    } else if ((code == 400 && e.reason && strcmp(e.reason, "API_KEY_INVALID") == 0) ||
               code == 401 || code == 403) {
        fail(out, PROVIDER_PERMANENT, "provider_auth_failed", "gemini refused the api key (%s)%s",
             status, said);
    } else if (code == 400 && e.status && strcmp(e.status, "FAILED_PRECONDITION") == 0) {
        fail(out, PROVIDER_PERMANENT, "provider_failed_precondition",
             "gemini refused the request, billing or region (%s)%s", status, said);
    } else if (code == 404) {
        fail(out, PROVIDER_PERMANENT, "provider_model_not_found",
             "gemini does not serve the model (%s)%s", status, said);
    } else if (code == 408 || code == 504) {
        fail(out, PROVIDER_TRANSIENT, "provider_timeout", "gemini timed out (%s)%s", status, said);
    } else if (code == 429 && e.per_day) {
        fail(out, PROVIDER_TRANSIENT, "provider_quota_exhausted",
             "gemini daily quota exhausted (%s)%s", status, said);
        if (wait < GEMINI_DAILY_QUOTA_RETRY_S)
            wait = GEMINI_DAILY_QUOTA_RETRY_S;
    } else if (code == 429) {
        fail(out, PROVIDER_TRANSIENT, "provider_rate_limited", "gemini rate limited us (%s)%s",
             status, said);
    } else if (code == 409 || code == 499 || code >= 500) {
        fail(out, PROVIDER_TRANSIENT, "provider_unavailable", "gemini unavailable (%s)%s", status,
             said);
    } else if (code >= 400) {
        fail(out, PROVIDER_PERMANENT, "provider_invalid_request",
             "gemini rejected the request (%s)%s", status, said);
    } else {
        fail(out, PROVIDER_TRANSIENT, "provider_bad_response", "gemini answered %s", status);
    }
    if (out->outcome == PROVIDER_TRANSIENT)
        out->retry_after_s = wait;
    json_decref(root);
}

/* The image part to use: the last non-thought part with inline image data (providers.md 1.4). */
static const json_t *find_image(const json_t *parts, const char **mime, const char **data)
{
    const json_t *part, *found = NULL, *blob;
    size_t i;

    json_array_foreach(parts, i, part)
    {
        const char *m, *d;

        if (json_is_true(json_object_get(part, "thought")))
            continue;
        blob = json_object_get(part, "inlineData");
        if (!blob)
            blob = json_object_get(part, "inline_data");
        if (!json_is_object(blob))
            continue;
        m = json_str_or(blob, "mimeType", NULL);
        if (!m)
            m = json_str_or(blob, "mime_type", NULL);
        d = json_str_or(blob, "data", NULL);
        if (!str_starts_with(m, "image/") || !d)
            continue;
        found = part;
        *mime = m;
        *data = d;
    }
    return found;
}

/* The text the model wrote, if any (it explains a refusal), quoted into out. */
static void model_text(const json_t *parts, char *out, size_t cap)
{
    const json_t *part;
    size_t i;

    out[0] = '\0';
    json_array_foreach(parts, i, part)
    {
        const char *t = json_str_or(part, "text", NULL);

        if (t && t[0] && !json_is_true(json_object_get(part, "thought"))) {
            quote_tail(t, out, cap);
            return;
        }
    }
}

static void classify_ok(const struct gemini_reply *r, int attempt, struct provider_output *out)
{
    json_t *root = r->body && r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const json_t *feedback, *cand, *parts;
    const char *block, *finish, *mime = NULL, *data = NULL;
    char reason[48], said[QUOTE_MAX + 8], what[256];
    enum status st;

    if (!json_is_object(root)) {
        fail_capped(out, attempt, "provider_bad_response", "answered http 200 without a json body");
        goto out;
    }
    feedback = json_object_get(root, "promptFeedback");
    block = json_str_or(feedback, "blockReason", NULL);
    if (block && strcmp(block, "BLOCKED_REASON_UNSPECIFIED") != 0) {
        lower_token(block, reason, sizeof(reason));
        quote_tail(json_str_or(feedback, "blockReasonMessage", NULL), said, sizeof(said));
        fail(out, PROVIDER_PERMANENT, "provider_blocked", "gemini blocked the prompt (%s)%s",
             reason, said);
        goto out;
    }
    cand = json_array_get(json_object_get(root, "candidates"), 0);
    if (!json_is_object(cand)) {
        fail_capped(out, attempt, "provider_no_image", "returned no candidate");
        goto out;
    }
    finish = json_str_or(cand, "finishReason", NULL);
    lower_token(finish ? finish : "none", reason, sizeof(reason));
    quote_tail(json_str_or(cand, "finishMessage", NULL), said, sizeof(said));
    if (in_list(finish, moderation_reasons, ARRAY_SIZE(moderation_reasons))) {
        fail(out, PROVIDER_PERMANENT, "provider_moderation",
             "gemini refused the image on safety grounds (%s)%s", reason, said);
        goto out;
    }
    if (in_list(finish, recitation_reasons, ARRAY_SIZE(recitation_reasons))) {
        fail(out, PROVIDER_PERMANENT, "provider_recitation",
             "gemini stopped on recitation of protected content (%s)", reason);
        goto out;
    }
    parts = json_object_get(json_object_get(cand, "content"), "parts");
    if (find_image(parts, &mime, &data)) {
        buf_reset(&out->data);
        st = base64_decode(&out->data, data, strlen(data));
        if (st == ST_TOO_LARGE) {
            fail(out, PROVIDER_PERMANENT, "provider_output_too_large",
                 "gemini returned an image larger than %zu bytes", out->data.max);
        } else if (st != ST_OK || out->data.len == 0) {
            fail_capped(out, attempt, "provider_bad_response",
                        "returned an image that is not valid base64");
        } else if (!str_copy(out->content_type, sizeof(out->content_type), mime)) {
            fail_capped(out, attempt, "provider_bad_response", "returned an odd mime type");
        } else {
            out->outcome = PROVIDER_DONE;
        }
        goto out;
    }
    if (in_list(finish, config_reasons, ARRAY_SIZE(config_reasons))) {
        fail(out, PROVIDER_PERMANENT, "provider_finish_reason",
             "gemini stopped without an image (%s)%s", reason, said);
        goto out;
    }
    model_text(parts, said, sizeof(said));
    if (said[0])
        snprintf(what, sizeof(what), "answered with text only (%s)%s", reason, said);
    else
        snprintf(what, sizeof(what), "returned no image (%s)", reason);
    fail_capped(out, attempt, "provider_no_image", what);
out:
    json_decref(root);
}

void gemini_classify(const struct gemini_reply *r, int attempt, struct provider_output *out)
{
    ASSERT(r && out);
    if (attempt < 1)
        attempt = 1;
    out->outcome = PROVIDER_PERMANENT;
    out->retry_after_s = 0;
    out->pause_batch = false;
    out->error_code[0] = '\0';
    out->error_message[0] = '\0';
    switch (r->transport) {
    case ST_OK:
        break;
    case ST_TIMEOUT:
        fail(out, PROVIDER_TRANSIENT, "provider_timeout", "gemini timed out: %s",
             r->transport_error ? r->transport_error : "no answer");
        return;
    case ST_TOO_LARGE:
        fail(out, PROVIDER_PERMANENT, "provider_output_too_large", "gemini answer too large: %s",
             r->transport_error ? r->transport_error : "over the cap");
        return;
    case ST_INVALID:
    case ST_PERMISSION_DENIED:
        fail(out, PROVIDER_PERMANENT, "provider_config", "gemini cannot be called: %s",
             r->transport_error ? r->transport_error : "bad url");
        return;
    default:
        fail(out, PROVIDER_TRANSIENT, "provider_unavailable", "gemini unreachable: %s",
             r->transport_error ? r->transport_error : status_name(r->transport));
        return;
    }
    if (r->http_status >= 200 && r->http_status < 300)
        classify_ok(r, attempt, out);
    else
        classify_http_error(r, out);
}

/* ---- requests ----------------------------------------------------------------- */

static const char *const aspect_ratios[] = {
    "1:1",  "2:3",  "3:2",  "3:4", "4:3", "4:5", "5:4",
    "9:16", "16:9", "21:9", "1:4", "4:1", "1:8", "8:1",
};
static const char *const image_sizes[] = {"512", "1K", "2K", "4K"};

/* imageConfig.imageSize exists for the 3.x image models only (providers.md 1.3). */
static bool model_takes_image_size(const char *model)
{
    return !str_starts_with(model, "gemini-2");
}

/* The request's knobs, from the item and the batch (see gemini.h). Strings borrowed. */
struct request_params {
    const char *prompt;
    const char *aspect_ratio; /* NULL: not sent */
    const char *image_size;   /* NULL: not sent */
};

static bool params_resolve(const struct gemini *g, const struct provider_input *in,
                           struct request_params *rp, struct provider_output *out)
{
    const char *p;

    memset(rp, 0, sizeof(*rp));
    p = json_str_or(in->metadata, "prompt", NULL);
    if (!p || !p[0])
        p = json_str_or(in->options, "prompt", NULL);
    rp->prompt = p && p[0] ? p : g->default_prompt;
    if (strlen(rp->prompt) > GEMINI_PROMPT_MAX) {
        fail(out, PROVIDER_PERMANENT, "invalid_prompt",
             "gemini cannot use the prompt: longer than %d bytes", GEMINI_PROMPT_MAX);
        return false;
    }
    rp->aspect_ratio = json_str_or(in->options, "aspectRatio", NULL);
    if (rp->aspect_ratio && !in_list(rp->aspect_ratio, aspect_ratios, ARRAY_SIZE(aspect_ratios))) {
        fail(out, PROVIDER_PERMANENT, "invalid_options",
             "gemini cannot use aspectRatio \"%.16s\": not a supported ratio", rp->aspect_ratio);
        return false;
    }
    rp->image_size = json_str_or(in->options, "imageSize", g->image_size);
    if (rp->image_size && !in_list(rp->image_size, image_sizes, ARRAY_SIZE(image_sizes))) {
        fail(out, PROVIDER_PERMANENT, "invalid_options",
             "gemini cannot use imageSize \"%.16s\": not 512, 1K, 2K or 4K", rp->image_size);
        return false;
    }
    if (!model_takes_image_size(g->model))
        rp->image_size = NULL;
    return true;
}

/*
 * Writes the generateContent body of providers.md 1.3. The image goes
 * straight from bytes to base64 in the body: with jansson it would be held
 * three times over (bytes, string, dump), and images run to 20 MB.
 */
static enum status request_build(const struct gemini *g, const struct request_params *rp,
                                 const char *mime, const struct buf *img, struct buf *body)
{
    json_t *prompt = json_string(rp->prompt);
    char *text = prompt ? json_dumps(prompt, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    enum status st = ST_INVALID;

    json_decref(prompt);
    if (!text)
        goto out; /* not UTF-8 */
    buf_init(body, base64_encoded_len(img->len, B64_STD) + strlen(text) + 1024);
    buf_printf(body, "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":%s},", text);
    buf_printf(body, "{\"inlineData\":{\"mimeType\":\"%s\",\"data\":\"", mime);
    base64_encode(body, img->data, img->len, B64_STD);
    buf_printf(body, "\"}}]}],\"generationConfig\":{\"responseModalities\":%s",
               g->image_only ? "[\"IMAGE\"]" : "[\"TEXT\",\"IMAGE\"]");
    if (rp->aspect_ratio || rp->image_size) {
        buf_append_str(body, ",\"imageConfig\":{");
        if (rp->aspect_ratio)
            buf_printf(body, "\"aspectRatio\":\"%s\"%s", rp->aspect_ratio,
                       rp->image_size ? "," : "");
        if (rp->image_size)
            buf_printf(body, "\"imageSize\":\"%s\"", rp->image_size);
        buf_append_str(body, "}");
    }
    /* The bound covers all of it, so only the last append needs checking. */
    st = buf_append_str(body, "}}") == ST_OK ? ST_OK : ST_INTERNAL;
out:
    free(text);
    return st;
}

/* Replaces every occurrence of secret in s with "***" (a peer may echo what it was sent). */
static void scrub(char *s, const char *secret)
{
    size_t k = secret ? strlen(secret) : 0;
    char *p;

    if (k < 4)
        return;
    while ((p = strstr(s, secret)) != NULL) {
        memmove(p + 3, p + k, strlen(p + k) + 1);
        memcpy(p, "***", 3);
    }
}

static void record(const struct gemini *g, const struct provider_input *in,
                   const struct provider_output *out, long http_status, double call_s,
                   double total_s)
{
    const char *labels[] = {PROVIDER_NAME, provider_outcome_name(out->outcome),
                            out->outcome == PROVIDER_DONE ? "" : out->error_code};
    const char *plabel[] = {PROVIDER_NAME};
    json_t *fields;

    metric_add(metric_counter("provider_calls_total", "provider submissions by outcome and code",
                              "provider,outcome,code"),
               labels, 1);
    if (call_s >= 0)
        metric_observe(metric_histogram("provider_latency_seconds", "latency of one provider call",
                                        "provider", metrics_latency_buckets,
                                        metrics_latency_buckets_n),
                       plabel, call_s);
    fields = json_pack("{s:s, s:s, s:s, s:I, s:I, s:i}", "provider", PROVIDER_NAME, "model",
                       g->model, "outcome", provider_outcome_name(out->outcome), "httpStatus",
                       (json_int_t)http_status, "latencyMs", (json_int_t)(total_s * 1000),
                       "attempt", in->attempt);
    if (out->outcome == PROVIDER_DONE) {
        json_object_set_new(fields, "bytes", json_integer((json_int_t)out->data.len));
        log_write(LOG_INFO, fields, "gemini staged item %s: %s, %zu bytes",
                  in->item_id ? in->item_id : "?", out->content_type, out->data.len);
    } else {
        json_object_set_new(fields, "code", json_string(out->error_code));
        log_write(out->outcome == PROVIDER_TRANSIENT ? LOG_WARNING : LOG_NOTICE, fields,
                  "item %s not staged: %s", in->item_id ? in->item_id : "?", out->error_message);
    }
}

static enum status gemini_submit(struct provider *p, const struct provider_input *in,
                                 struct provider_output *out)
{
    struct gemini *g = p->state;
    const char *headers[] = {"Content-Type: application/json", "Accept: application/json",
                             g->key_header, NULL};
    struct request_params rp;
    struct http_result res;
    struct http_call call;
    struct gemini_reply reply;
    struct buf img, body;
    struct error err;
    char mime[FETCH_CONTENT_TYPE_MAX];
    int64_t t0 = time_mono_us(), t1;
    double call_s = -1;
    enum status st;

    ASSERT(in && out);
    buf_init(&img, g->fetch.max_bytes);
    buf_init(&body, 0);
    http_result_init(&res);
    out->outcome = PROVIDER_PERMANENT;
    if (!params_resolve(g, in, &rp, out))
        goto out;

    error_clear(&err);
    if (in->image_data) {
        /* Already fetched (and checked) by the caller. */
        str_copy(mime, sizeof(mime), in->image_type ? in->image_type : "image/png");
        st = buf_append(&img, in->image_data, in->image_len);
        if (st != ST_OK)
            error_set(&err, ST_TOO_LARGE, "image_too_large", "image larger than %zu bytes",
                      img.max);
    } else {
        st = fetch_image(g->client, in->image_url, &g->fetch, &img, mime, &err);
    }
    if (st != ST_OK) {
        fail(out, status_is_transient(st) ? PROVIDER_TRANSIENT : PROVIDER_PERMANENT,
             error_code(&err), "gemini cannot get the input image: %s", err.message);
        out->retry_after_s = err.retry_after_s;
        goto out;
    }
    if (request_build(g, &rp, mime, &img, &body) != ST_OK) {
        fail(out, PROVIDER_PERMANENT, "invalid_prompt", "gemini cannot use the prompt: %s",
             "not valid utf-8");
        goto out;
    }
    buf_release(&img); /* the body holds it now; halve the peak */

    memset(&call, 0, sizeof(call));
    call.method = "POST";
    call.url = g->url;
    call.headers = headers;
    call.body = body.data;
    call.body_len = body.len;
    call.timeout_ms = g->timeout_ms;
    call.max_response_bytes = g->max_output / 3 * 4 + RESPONSE_SLACK;
    call.idempotent = false; /* a retry is a second bill: the queue decides */
    call.max_attempts = 1;
    t1 = time_mono_us();
    st = http_client_do(g->client, &call, &res, &err);
    call_s = (double)(time_mono_us() - t1) / 1e6;

    memset(&reply, 0, sizeof(reply));
    reply.transport = st;
    reply.transport_error = st == ST_OK ? NULL : err.message;
    reply.http_status = res.status;
    reply.body = res.body.data;
    reply.body_len = res.body.len;
    reply.retry_after_s = res.retry_after_s;
    gemini_classify(&reply, in->attempt, out);
out:
    scrub(out->error_message, g->api_key);
    record(g, in, out, res.status, call_s, (double)(time_mono_us() - t0) / 1e6);
    http_result_release(&res);
    buf_release(&body);
    buf_release(&img);
    return ST_OK;
}

/* ---- construction ------------------------------------------------------------- */

static void gemini_free(struct provider *p)
{
    struct gemini *g = p ? p->state : NULL;

    if (!g)
        return;
    free(g->url);
    free(g->model);
    if (g->key_header) {
        memset(g->key_header, 0, strlen(g->key_header));
        free(g->key_header);
    }
    if (g->api_key) {
        memset(g->api_key, 0, strlen(g->api_key));
        free(g->api_key);
    }
    free(g->image_size);
    free(g->default_prompt);
    free(g);
}

static bool model_valid(const char *m)
{
    size_t i;

    if (!m[0] || strlen(m) > MODEL_MAX)
        return false;
    for (i = 0; m[i]; i++)
        if (!isalnum((unsigned char)m[i]) && m[i] != '-' && m[i] != '.' && m[i] != '_')
            return false;
    return true;
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

struct provider *provider_gemini_new(const struct gemini_options *o, struct http_client *c)
{
    const char *base, *model;
    struct gemini *g;
    size_t n, klen;
    char url[URL_MAX];

    ASSERT(o && c);
    base = o->base_url && o->base_url[0] ? o->base_url : GEMINI_DEFAULT_BASE_URL;
    model = o->model && o->model[0] ? o->model : GEMINI_DEFAULT_MODEL;
    if (!key_valid(o->api_key)) {
        log_error("cannot create the gemini provider: the api key is missing or malformed");
        return NULL;
    }
    if (!str_starts_with(base, "https://") && !str_starts_with(base, "http://")) {
        log_error("cannot create the gemini provider: base url \"%.80s\" is not http(s)", base);
        return NULL;
    }
    if (!model_valid(model)) {
        log_error("cannot create the gemini provider: model \"%.80s\" is not a model id", model);
        return NULL;
    }
    if (o->image_size && !in_list(o->image_size, image_sizes, ARRAY_SIZE(image_sizes))) {
        log_error("cannot create the gemini provider: image size \"%.16s\" is not 512, 1K, 2K "
                  "or 4K",
                  o->image_size);
        return NULL;
    }
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (!str_printf(url, sizeof(url), "%.*s/v1beta/models/%s:generateContent", (int)n, base,
                    model)) {
        log_error("cannot create the gemini provider: base url longer than %d bytes", URL_MAX);
        return NULL;
    }

    g = xcalloc(1, sizeof(*g));
    g->client = c;
    g->url = xstrdup(url);
    g->model = xstrdup(model);
    g->api_key = xstrdup(o->api_key);
    klen = strlen("x-goog-api-key: ") + strlen(o->api_key) + 1;
    g->key_header = xmalloc(klen);
    str_printf(g->key_header, klen, "x-goog-api-key: %s", o->api_key);
    g->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : GEMINI_DEFAULT_TIMEOUT_MS;
    g->fetch.max_bytes = o->fetch_max_bytes > 0 ? o->fetch_max_bytes : FETCH_DEFAULT_MAX_BYTES;
    g->fetch.timeout_ms = o->fetch_timeout_ms;
    g->fetch.max_attempts = o->fetch_max_attempts;
    g->fetch.allow_insecure = o->allow_insecure;
    g->max_output = o->max_output_bytes > 0 ? o->max_output_bytes : GEMINI_DEFAULT_MAX_OUTPUT;
    g->image_size = o->image_size ? xstrdup(o->image_size) : NULL;
    g->image_only = o->image_only;
    g->default_prompt = xstrdup(o->default_prompt && o->default_prompt[0] ? o->default_prompt
                                                                          : GEMINI_DEFAULT_PROMPT);

    g->base.name = PROVIDER_NAME;
    g->base.async = false;
    g->base.state = g;
    g->base.submit = gemini_submit;
    g->base.poll = NULL;
    g->base.cancel = NULL;
    g->base.free = gemini_free;
    if (str_starts_with(base, "http://"))
        log_warn("gemini provider uses plain http at %.*s (local simulator only)", (int)n, base);
    return &g->base;
}
