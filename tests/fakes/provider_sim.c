/*
 * provider_sim.c - provider-sim, a local stand-in for Google's Gemini image
 * API (providers.md 1.3-1.7 and 1.10), for tests and for the local demo
 * when no GEMINI_API_KEY is set; and for Runway's and PixVerse's
 * image-to-video APIs (sim_video.h: asynchronous jobs, MP4 outputs).
 *
 * POST /v1beta/models/{model}:generateContent checks the key and the request
 * as the real API does (Google's error envelopes, both proto-JSON
 * spellings) and answers with a real PNG: the input photo with furniture
 * drawn on it. Prompt keywords select one behaviour per item ("[block]",
 * "[safety]", "[noimage]", "[textonly]", "[recitation]", "[fail429]",
 * "[fail429day]", "[fail500]", "[fail503]", "[nocredit]", "[slow]",
 * "[flaky]"); SIM_FAIL_RATE / SIM_TIMEOUT_RATE inject random faults, also
 * settable at run time through /control. GET /stats counts calls per input
 * image, so tests can tell a retry from a duplicate. GET /demo/{n}.png
 * serves deterministic demo room photos. Run with --help for the settings.
 *
 * The video APIs (sim_video.c): Runway's POST /v1/image_to_video, GET and
 * DELETE /v1/tasks/{id}; PixVerse's POST /openapi/v2/image/upload and
 * /openapi/v2/video/img/generate, GET /openapi/v2/video/result/{id}; the
 * finished videos at GET /media/{name}.mp4. Jobs take SIM_JOB_MS. Prompt
 * keywords: Runway "[moderation]", "[internal]" (the first task of an image
 * only), "[badoutput]", "[nocredit]", "[daily]"; PixVerse "[moderation]",
 * "[failed]" (the first video of an image only), "[busy]", "[nobalance]",
 * "[imagemod]", "[highload]". SIM_FAIL_RATE, SIM_TIMEOUT_RATE and
 * SIM_LATENCY_MS apply to their submits too; /control takes runwayDown,
 * pixverseDown and jobMs; /stats has "runway" and "pixverse" sections.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/codec.h"
#include "core/config.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/server.h"
#include "png.h"
#include "providers/fetch.h"
#include "sim_video.h"

#define PROGRAM        "provider-sim"
#define MODELS_MAX     32
#define BY_IMAGE_MAX   100000 /* distinct images counted; later ones fold into "other" */
#define DEMO_N_MAX     1000000
#define DEMO_W         640
#define DEMO_H         480
#define DEMO_SIDE_MIN  16
#define DEMO_SIDE_MAX  2048
#define DECODE_PX_MAX  (4096 * 4096) /* larger inputs are not decoded: a room is drawn instead */
#define OUT_LONG_SIDE  640           /* generated rooms, when the input is not a PNG */
#define SLEEP_SLICE_MS 20

/* ---- settings ------------------------------------------------------------- */

struct sim_settings {
    int64_t port;
    char *bind_address;
    char *log_level;
    char *models;
    char *api_key;
    double fail_rate;
    double timeout_rate;
    int64_t timeout_ms;
    int64_t latency_ms;
    int64_t seed;
    int64_t max_body_bytes;
    int64_t shutdown_grace_ms;
    bool fast;
    int64_t job_ms;
    int64_t runway_concurrency;
    int64_t pixverse_concurrency;
    char *runway_api_key;
    char *pixverse_api_key;
};

#define F(field) offsetof(struct sim_settings, field)

/* clang-format off */
static const struct config_var sim_table[] = {
    {"PORT", CFG_INT, "8090", 0, 65535, NULL, "TCP port to listen on (0 picks one)", F(port), 0, 1},
    {"BIND_ADDRESS", CFG_STRING, "127.0.0.1", 0, 0, NULL, "address to listen on", F(bind_address), 0, 1},
    {"LOG_LEVEL", CFG_ENUM, "INFO", 0, 0, "DEBUG|INFO|NOTICE|WARNING|ERROR", "minimum log severity", F(log_level), 0, 1},
    {"SIM_MODELS", CFG_STRING, "gemini-2.5-flash-image,gemini-3.1-flash-image,gemini-3-pro-image", 0, 0, NULL, "comma-separated model ids served (others get 404)", F(models), 0, 1},
    {"SIM_API_KEY", CFG_STRING, NULL, 0, 0, NULL, "when set, other keys get 400 API_KEY_INVALID (any key otherwise)", F(api_key), CFG_SECRET, 1},
    {"SIM_FAIL_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fraction of generateContent calls answered 500, 503 or 429", F(fail_rate), 0, 1},
    {"SIM_TIMEOUT_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fraction of generateContent calls that sleep SIM_TIMEOUT_MS first", F(timeout_rate), 0, 1},
    {"SIM_TIMEOUT_MS", CFG_INT, "30000", 0, 600000, NULL, "how long a timed-out call sleeps", F(timeout_ms), 0, 1},
    {"SIM_LATENCY_MS", CFG_INT, "0", 0, 600000, NULL, "latency added to every generateContent call", F(latency_ms), 0, 1},
    {"SIM_SEED", CFG_INT, "1", 0, 9007199254740991.0, NULL, "seed of the fault injection", F(seed), 0, 1},
    {"SIM_MAX_BODY_BYTES", CFG_INT, "67108864", 1024, 268435456, NULL, "largest request body accepted", F(max_body_bytes), 0, 1},
    {"SHUTDOWN_GRACE_MS", CFG_INT, "5000", 0, 60000, NULL, "time in-flight requests get after SIGTERM", F(shutdown_grace_ms), 0, 1},
    {"SIM_FAST", CFG_BOOL, "false", 0, 0, NULL, "benchmarks: serve one cached demo image and one cached staged output, so the fixture's image work does not dominate the measurement", F(fast), 0, 1},
    {"SIM_JOB_MS", CFG_INT, "3000", 0, 3600000, NULL, "how long a Runway or PixVerse job runs (PENDING for the first 20%)", F(job_ms), 0, 1},
    {"SIM_RUNWAY_CONCURRENCY", CFG_INT, "5", 1, 1000, NULL, "active Runway tasks before new ones wait THROTTLED", F(runway_concurrency), 0, 1},
    {"SIM_PIXVERSE_CONCURRENCY", CFG_INT, "3", 1, 1000, NULL, "active PixVerse videos before generate answers ErrCode 500044", F(pixverse_concurrency), 0, 1},
    {"SIM_RUNWAY_API_KEY", CFG_STRING, NULL, 0, 0, NULL, "the only Runway bearer token accepted (default SIM_API_KEY; unset: any \"key_...\")", F(runway_api_key), CFG_SECRET, 1},
    {"SIM_PIXVERSE_API_KEY", CFG_STRING, NULL, 0, 0, NULL, "the only PixVerse API-KEY accepted (default SIM_API_KEY; unset: any)", F(pixverse_api_key), CFG_SECRET, 1},
};
/* clang-format on */

#undef F

/* ---- state ------------------------------------------------------------------ */

struct faults {
    double fail_rate;
    double timeout_rate;
    int64_t latency_ms;
    int64_t timeout_ms;
};

struct sim {
    char *models[MODELS_MAX];
    size_t n_models;
    const char *api_key; /* borrowed from the settings, NULL: any key */

    pthread_mutex_t lock; /* guards everything below */
    struct faults faults;
    uint64_t rng;
    int64_t calls, ok, failed;
    json_t *by_image;  /* {"<sha256 16 hex>": calls} */
    json_t *by_status; /* {"200": n, ...} */
    struct sim_video *video;
    json_t *hooks; /* {"<name>": [{"headers": {...}, "body": ..., "status": n}]} */
};

/* xorshift64*: deterministic per seed, good enough to pick faults. */
static double sim_random(struct sim *s)
{
    uint64_t x;

    pthread_mutex_lock(&s->lock);
    x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    pthread_mutex_unlock(&s->lock);
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static struct faults faults_get(struct sim *s)
{
    struct faults f;

    pthread_mutex_lock(&s->lock);
    f = s->faults;
    pthread_mutex_unlock(&s->lock);
    return f;
}

/* The video part's view of the faults and the random source (sim_video.h). */
static struct sim_faults video_faults(void *ud)
{
    struct faults f = faults_get(ud);
    struct sim_faults out = {f.fail_rate, f.timeout_rate, f.latency_ms, f.timeout_ms};

    return out;
}

static double video_random(void *ud)
{
    return sim_random(ud);
}

/* Sleeps ms in slices; false when the server began draining meanwhile. */
static bool sim_sleep(struct http_request *req, int64_t ms)
{
    int64_t end = time_mono_ms() + ms;
    struct http_server *srv = http_request_server(req);

    while (time_mono_ms() < end) {
        if (http_server_draining(srv))
            return false;
        time_sleep_ms(end - time_mono_ms() < SLEEP_SLICE_MS ? end - time_mono_ms()
                                                            : SLEEP_SLICE_MS);
    }
    return true;
}

/* Counts a call for an image; returns how many calls that image has had, this one included. */
static int64_t stats_image(struct sim *s, const char *hash)
{
    json_t *v;
    int64_t n;

    pthread_mutex_lock(&s->lock);
    if (!json_object_get(s->by_image, hash) && json_object_size(s->by_image) >= BY_IMAGE_MAX)
        hash = "other";
    v = json_object_get(s->by_image, hash);
    n = (v ? json_integer_value(v) : 0) + 1;
    json_object_set_new(s->by_image, hash, json_integer(n));
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void stats_answer(struct sim *s, int status, bool ok)
{
    char key[8];
    json_t *v;

    snprintf(key, sizeof(key), "%d", status);
    pthread_mutex_lock(&s->lock);
    if (ok)
        s->ok++;
    else
        s->failed++;
    v = json_object_get(s->by_status, key);
    json_object_set_new(s->by_status, key, json_integer((v ? json_integer_value(v) : 0) + 1));
    pthread_mutex_unlock(&s->lock);
}

/* ---- Google's answers ------------------------------------------------------- */

/* Sends a Google RPC error envelope (providers.md 1.7); details stolen, may be NULL. */
static void google_error(struct sim *s, struct http_response *resp, int code, const char *status,
                         const char *message, json_t *details)
{
    json_t *error =
        json_pack("{s:i, s:s, s:s}", "code", code, "message", message, "status", status);

    if (details)
        json_object_set_new(error, "details", details);
    stats_answer(s, code, false);
    http_respond_json(resp, code, json_pack("{s:o}", "error", error));
}

static void invalid_argument(struct sim *s, struct http_response *resp, const char *message)
{
    google_error(s, resp, 400, "INVALID_ARGUMENT", message, NULL);
}

/* A 429 with QuotaFailure and RetryInfo details, as Google sends it (gemini-cli#8437). */
static void quota_error(struct sim *s, struct http_response *resp, const char *model, bool per_day,
                        const char *retry_delay)
{
    const char *quota_id = per_day ? "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
                                   : "GenerateRequestsPerMinutePerProjectPerModel";
    json_t *details = json_pack(
        "[{s:s, s:[{s:s, s:s, s:{s:s, s:s}, s:s}]}, {s:s, s:[{s:s, s:s}]}, {s:s, s:s}]", "@type",
        "type.googleapis.com/google.rpc.QuotaFailure", "violations", "quotaMetric",
        per_day ? "generativelanguage.googleapis.com/generate_content_free_tier_requests"
                : "generativelanguage.googleapis.com/generate_requests_per_model",
        "quotaId", quota_id, "quotaDimensions", "location", "global", "model", model, "quotaValue",
        per_day ? "250" : "10", "@type", "type.googleapis.com/google.rpc.Help", "links",
        "description", "Learn more about Gemini API quotas", "url",
        "https://ai.google.dev/gemini-api/docs/rate-limits", "@type",
        "type.googleapis.com/google.rpc.RetryInfo", "retryDelay", retry_delay);

    google_error(s, resp, 429, "RESOURCE_EXHAUSTED",
                 "You exceeded your current quota, please check your plan and billing details.",
                 details);
}

static json_t *usage(size_t prompt_chars, bool image_out)
{
    json_int_t text = (json_int_t)(prompt_chars + 3) / 4, image_in = 1290,
               out = image_out ? 1290 : 12;

    return json_pack("{s:I, s:I, s:I, s:[{s:s, s:I}, {s:s, s:I}], s:[{s:s, s:I}]}",
                     "promptTokenCount", text + image_in, "candidatesTokenCount", out,
                     "totalTokenCount", text + image_in + out, "promptTokensDetails", "modality",
                     "TEXT", "tokenCount", text, "modality", "IMAGE", "tokenCount", image_in,
                     "candidatesTokensDetails", "modality", image_out ? "IMAGE" : "TEXT",
                     "tokenCount", out);
}

/* Sends a 200 generateContent answer: candidates (stolen, may be NULL) or a prompt block. */
static void answer(struct sim *s, struct http_response *resp, const char *model, json_t *candidates,
                   const char *block_reason, size_t prompt_chars, bool ok)
{
    char rid[32];
    json_t *body;

    id_random(rid, sizeof(rid), "", 22);
    body = json_object();
    if (candidates)
        json_object_set_new(body, "candidates", candidates);
    if (block_reason)
        json_object_set_new(body, "promptFeedback",
                            json_pack("{s:s}", "blockReason", block_reason));
    json_object_set_new(body, "usageMetadata", usage(prompt_chars, ok));
    json_object_set_new(body, "modelVersion", json_string(model));
    json_object_set_new(body, "responseId", json_string(rid));
    stats_answer(s, 200, ok);
    http_respond_json(resp, 200, body);
}

/* One candidate without an image: finishReason, optional text, optional finishMessage. */
static json_t *candidate_without_image(const char *finish, const char *text, const char *message)
{
    json_t *c = json_pack("{s:s, s:i}", "finishReason", finish, "index", 0);

    if (text)
        json_object_set_new(c, "content",
                            json_pack("{s:s, s:[{s:s}]}", "role", "model", "parts", "text", text));
    if (message)
        json_object_set_new(c, "finishMessage", json_string(message));
    return json_pack("[o]", c);
}

/* ---- request validation ----------------------------------------------------- */

/* What a valid request asks for. Strings borrowed from the request JSON or owned as noted. */
struct gen_request {
    struct buf prompt;  /* the text parts, joined (owned) */
    struct buf image;   /* the decoded input image (owned) */
    const char *mime;   /* its declared type */
    int images;         /* inline images seen */
    bool want_text;     /* responseModalities has TEXT (or is absent) */
    bool want_image;    /* responseModalities has IMAGE (or is absent) */
    const char *aspect; /* imageConfig.aspectRatio, NULL when absent */
    const char *size;   /* imageConfig.imageSize, NULL when absent */
    char error[512];    /* the 400 message when invalid */
};

/* Either spelling of a proto field: camelCase or snake_case. */
static json_t *field2(const json_t *obj, const char *camel, const char *snake)
{
    json_t *v = json_object_get(obj, camel);

    return v ? v : json_object_get(obj, snake);
}

/* Refuses fields the message does not have, in Google's words. allowed is NULL-terminated. */
static bool known_fields(const json_t *obj, const char *const *allowed, const char *at,
                         struct gen_request *g)
{
    const char *key;
    json_t *v;
    size_t i;

    json_object_foreach((json_t *)obj, key, v)
    {
        for (i = 0; allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (allowed[i])
            continue;
        if (at)
            snprintf(g->error, sizeof(g->error),
                     "Invalid JSON payload received. Unknown name \"%.64s\" at '%s': Cannot find "
                     "field.",
                     key, at);
        else
            snprintf(g->error, sizeof(g->error),
                     "Invalid JSON payload received. Unknown name \"%.64s\": Cannot find field.",
                     key);
        return false;
    }
    return true;
}

static bool fail_at(struct gen_request *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool fail_at(struct gen_request *g, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(g->error, sizeof(g->error), fmt, ap);
    va_end(ap);
    return false;
}

static bool validate_blob(const json_t *blob, const char *at, struct gen_request *g)
{
    static const char *const fields[] = {"mimeType",    "mime_type",    "data",
                                         "displayName", "display_name", NULL};
    const json_t *mime = field2(blob, "mimeType", "mime_type"),
                 *data = json_object_get(blob, "data");
    const char *text;
    size_t len;
    struct buf tmp;

    if (!json_is_object(blob))
        return fail_at(g,
                       "Invalid value at '%s' (type.googleapis.com/google.ai.generativelanguage."
                       "v1beta.Blob), expected an object",
                       at);
    if (!known_fields(blob, fields, at, g))
        return false;
    if (!json_is_string(mime) || !json_string_value(mime)[0])
        return fail_at(g, "* GenerateContentRequest.%s.mime_type: mime_type is not specified", at);
    if (!image_type_allowed(json_string_value(mime)))
        return fail_at(g, "Unsupported MIME type: %.64s", json_string_value(mime));
    if (!json_is_string(data) || json_string_length(data) == 0)
        return fail_at(g, "* GenerateContentRequest.%s.data: data is not specified", at);
    text = json_string_value(data);
    len = json_string_length(data);
    g->images++;
    if (g->images > 1)
        return true; /* refused by the caller, with the count */
    buf_init(&tmp, len);
    if (base64_decode(&tmp, text, len) != ST_OK || tmp.len == 0) {
        buf_release(&tmp);
        return fail_at(g,
                       "Invalid value at '%s.data' (TYPE_BYTES), Base64 decoding failed for "
                       "\"%.24s%s\"",
                       at, text, len > 24 ? "..." : "");
    }
    buf_release(&g->image);
    g->image = tmp;
    g->mime = json_string_value(mime);
    if (!image_sniff_type(g->image.data, g->image.len))
        return fail_at(g, "Unable to process input image. Please retry or report in "
                          "https://developers.generativeai.google/guide/troubleshooting");
    return true;
}

static bool validate_part(const json_t *part, const char *at, struct gen_request *g)
{
    static const char *const fields[] = {
        "text",    "inlineData",       "inline_data",       "fileData",      "file_data",
        "thought", "thoughtSignature", "thought_signature", "videoMetadata", "video_metadata",
        NULL};
    const json_t *text = json_object_get(part, "text"),
                 *blob = field2(part, "inlineData", "inline_data"),
                 *file = field2(part, "fileData", "file_data");
    char sub[96];

    if (!json_is_object(part))
        return fail_at(g,
                       "Invalid value at '%s' (type.googleapis.com/google.ai.generativelanguage."
                       "v1beta.Part), expected an object",
                       at);
    if (!known_fields(part, fields, at, g))
        return false;
    if ((json_object_get(part, "inlineData") && json_object_get(part, "inline_data")) ||
        (text && blob) || (text && file) || (blob && file))
        return fail_at(g,
                       "Invalid value at '%s' (oneof), oneof field 'data' is already set. "
                       "Cannot set another",
                       at);
    if (file)
        return fail_at(g, "%s.file_data: this simulator takes images inline only", at);
    if (text) {
        if (!json_is_string(text))
            return fail_at(g, "Invalid value at '%s.text' (TYPE_STRING), expected a string", at);
        if (g->prompt.len)
            buf_append_str(&g->prompt, "\n");
        return buf_append_str(&g->prompt, json_string_value(text)) == ST_OK ||
               fail_at(g, "the prompt is too long");
    }
    if (blob) {
        snprintf(sub, sizeof(sub), "%s.inline_data", at);
        return validate_blob(blob, sub, g);
    }
    return fail_at(g,
                   "* GenerateContentRequest.%s.data: required oneof field 'data' must have one "
                   "initialized field",
                   at);
}

static bool validate_contents(const json_t *contents, struct gen_request *g)
{
    static const char *const fields[] = {"role", "parts", NULL};
    const json_t *content, *parts, *part, *role;
    size_t i, j;
    char at[64];

    if (!json_is_array(contents) || json_array_size(contents) == 0)
        return fail_at(g, "* GenerateContentRequest.contents: contents is not specified");
    json_array_foreach(contents, i, content)
    {
        snprintf(at, sizeof(at), "contents[%zu]", i);
        if (!json_is_object(content))
            return fail_at(g, "Invalid value at '%s', expected an object", at);
        if (!known_fields(content, fields, at, g))
            return false;
        role = json_object_get(content, "role");
        if (role && (!json_is_string(role) || (strcmp(json_string_value(role), "user") != 0 &&
                                               strcmp(json_string_value(role), "model") != 0)))
            return fail_at(g, "Please use a valid role: user, model.");
        parts = json_object_get(content, "parts");
        if (!json_is_array(parts) || json_array_size(parts) == 0)
            return fail_at(
                g, "* GenerateContentRequest.%s.parts: contents.parts must not be empty.", at);
        json_array_foreach(parts, j, part)
        {
            snprintf(at, sizeof(at), "contents[%zu].parts[%zu]", i, j);
            if (!validate_part(part, at, g))
                return false;
        }
    }
    return true;
}

static const char *const aspect_ratios[] = {"1:1", "2:3", "3:2",  "3:4",  "4:3",
                                            "4:5", "5:4", "9:16", "16:9", "21:9",
                                            "1:4", "4:1", "1:8",  "8:1",  NULL};

static bool in_list(const char *s, const char *const *list)
{
    size_t i;

    for (i = 0; s && list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

static bool validate_config(const json_t *cfg, const char *model, struct gen_request *g)
{
    static const char *const fields[] = {"responseModalities",
                                         "response_modalities",
                                         "imageConfig",
                                         "image_config",
                                         "temperature",
                                         "topP",
                                         "top_p",
                                         "topK",
                                         "top_k",
                                         "candidateCount",
                                         "candidate_count",
                                         "maxOutputTokens",
                                         "max_output_tokens",
                                         "seed",
                                         "stopSequences",
                                         "stop_sequences",
                                         "thinkingConfig",
                                         "thinking_config",
                                         "responseMimeType",
                                         "response_mime_type",
                                         NULL};
    static const char *const image_fields[] = {"aspectRatio", "aspect_ratio", "imageSize",
                                               "image_size", NULL};
    static const char *const sizes[] = {"512", "1K", "2K", "4K", NULL};
    const json_t *mods, *m, *img, *count, *v;
    size_t i;

    g->want_text = g->want_image = true;
    if (!cfg)
        return true;
    if (!json_is_object(cfg))
        return fail_at(g, "Invalid value at 'generation_config', expected an object");
    if (!known_fields(cfg, fields, "generation_config", g))
        return false;
    count = field2(cfg, "candidateCount", "candidate_count");
    if (count && json_integer_value(count) > 1)
        return fail_at(g, "Multiple candidates is not enabled for models/%s", model);
    mods = field2(cfg, "responseModalities", "response_modalities");
    if (mods) {
        if (!json_is_array(mods) || json_array_size(mods) == 0)
            return fail_at(g, "Invalid value at 'generation_config.response_modalities'");
        g->want_text = g->want_image = false;
        json_array_foreach(mods, i, m)
        {
            const char *name = json_string_value(m);

            if (name && strcmp(name, "TEXT") == 0)
                g->want_text = true;
            else if (name && strcmp(name, "IMAGE") == 0)
                g->want_image = true;
            else if (name && strcmp(name, "AUDIO") == 0)
                return fail_at(g, "Model does not support the requested response modalities: "
                                  "audio");
            else
                return fail_at(g,
                               "Invalid value at 'generation_config.response_modalities[%zu]' "
                               "(type.googleapis.com/google.ai.generativelanguage.v1beta."
                               "GenerationConfig.Modality), \"%.32s\"",
                               i, name ? name : "?");
        }
    }
    img = field2(cfg, "imageConfig", "image_config");
    if (!img)
        return true;
    if (!json_is_object(img))
        return fail_at(g, "Invalid value at 'generation_config.image_config', expected an object");
    if (!known_fields(img, image_fields, "generation_config.image_config", g))
        return false;
    v = field2(img, "aspectRatio", "aspect_ratio");
    if (v) {
        g->aspect = json_string_value(v);
        if (!in_list(g->aspect, aspect_ratios))
            return fail_at(g,
                           "Unsupported aspect ratio: %.16s. Supported values: 1:1, 2:3, 3:2, "
                           "3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9",
                           g->aspect ? g->aspect : "?");
    }
    v = field2(img, "imageSize", "image_size");
    if (v) {
        g->size = json_string_value(v);
        if (str_starts_with(model, "gemini-2"))
            return fail_at(g, "Image size is not supported for models/%s", model);
        if (!in_list(g->size, sizes))
            return fail_at(g, "Unsupported image size: %.16s. Supported values: 512, 1K, 2K, 4K",
                           g->size ? g->size : "?");
    }
    return true;
}

static bool validate_request(const json_t *root, const char *model, struct gen_request *g)
{
    static const char *const fields[] = {"contents",
                                         "generationConfig",
                                         "generation_config",
                                         "safetySettings",
                                         "safety_settings",
                                         "systemInstruction",
                                         "system_instruction",
                                         "tools",
                                         "toolConfig",
                                         "tool_config",
                                         "cachedContent",
                                         "cached_content",
                                         "model",
                                         NULL};

    if (!json_is_object(root))
        return fail_at(g, "Invalid JSON payload received. Expected an object.");
    if (!known_fields(root, fields, NULL, g))
        return false;
    if (!validate_contents(json_object_get(root, "contents"), g))
        return false;
    if (!validate_config(field2(root, "generationConfig", "generation_config"), model, g))
        return false;
    if (g->images != 1)
        return fail_at(g, "this simulator takes exactly one input image, got %d", g->images);
    if (g->prompt.len == 0)
        return fail_at(g, "this simulator needs a text prompt next to the image");
    return true;
}

/* ---- images --------------------------------------------------------------------- */

/* Writes n's low 20 bits as dark and light squares along the bottom: every demo differs. */
static void image_mark(struct image *img, unsigned n)
{
    int b, y = img->height - 8;

    for (b = 0; b < 20; b++) {
        uint8_t c = (n >> b) & 1 ? 30 : 235;

        image_fill_rect(img, 4 + b * 6, y, 5, 5, c, c, c);
    }
}

/* The dimensions of a generated room for an aspect ratio ("4:3"), long side OUT_LONG_SIDE. */
static void room_size(const char *aspect, int *w, int *h)
{
    int64_t a = 4, b = 3;
    char left[8];
    const char *colon = aspect ? strchr(aspect, ':') : NULL;

    if (colon && (size_t)(colon - aspect) < sizeof(left)) {
        memcpy(left, aspect, (size_t)(colon - aspect));
        left[colon - aspect] = '\0';
        if (!str_to_i64(left, 1, 64, &a) || !str_to_i64(colon + 1, 1, 64, &b)) {
            a = 4;
            b = 3;
        }
    }
    *w = a >= b ? OUT_LONG_SIDE : (int)(OUT_LONG_SIDE * a / b);
    *h = a >= b ? (int)(OUT_LONG_SIDE * b / a) : OUT_LONG_SIDE;
    if (*w < DEMO_SIDE_MIN)
        *w = DEMO_SIDE_MIN;
    if (*h < DEMO_SIDE_MIN)
        *h = DEMO_SIDE_MIN;
}

static bool png_dimensions_ok(const struct buf *b)
{
    const uint8_t *p = (const uint8_t *)b->data;
    uint64_t w, h;

    if (b->len < 24 || !png_is_png(p, b->len))
        return false;
    w = (uint64_t)p[16] << 24 | (uint64_t)p[17] << 16 | (uint64_t)p[18] << 8 | p[19];
    h = (uint64_t)p[20] << 24 | (uint64_t)p[21] << 16 | (uint64_t)p[22] << 8 | p[23];
    return w * h <= DECODE_PX_MAX;
}

/*
 * The staged output: the input with furniture drawn on it when it is a PNG
 * we can decode, else a generated room (seeded by the input) staged.
 */
static enum status stage_image(const struct gen_request *g, unsigned seed, struct buf *png);

static bool sim_fast;
static pthread_once_t fast_once = PTHREAD_ONCE_INIT;
static struct buf fast_demo, fast_staged;

/* SIM_FAST: one demo room and its staged version, encoded once. */
static void fast_init(void)
{
    struct image img;

    buf_init(&fast_demo, 64 << 20);
    buf_init(&fast_staged, 64 << 20);
    image_demo_room(&img, DEMO_W, DEMO_H, 1);
    png_encode(&img, &fast_demo);
    image_stage(&img, 1);
    png_encode(&img, &fast_staged);
    image_release(&img);
}

static enum status stage(const struct gen_request *g, unsigned seed, struct buf *png)
{
    if (sim_fast) {
        pthread_once(&fast_once, fast_init);
        return buf_append(png, fast_staged.data, fast_staged.len);
    }
    return stage_image(g, seed, png);
}

static enum status stage_image(const struct gen_request *g, unsigned seed, struct buf *png)
{
    struct image img;
    enum status st;
    int w, h;

    if (!png_dimensions_ok(&g->image) ||
        !png_decode((const uint8_t *)g->image.data, g->image.len, &img)) {
        room_size(g->aspect, &w, &h);
        image_demo_room(&img, w, h, seed);
    }
    image_stage(&img, seed);
    st = png_encode(&img, png);
    image_release(&img);
    return st;
}

/* Base64 of png as a JSON string (new reference). */
static json_t *b64_string(const struct buf *png)
{
    struct buf b64;
    json_t *s;

    buf_init(&b64, base64_encoded_len(png->len, B64_STD) + 1);
    base64_encode(&b64, png->data, png->len, B64_STD);
    s = json_stringn(b64.data ? b64.data : "", b64.len);
    buf_release(&b64);
    return s;
}

/* A 200 with the staged image, and the thinking parts a 3-pro model sends first. */
static void answer_image(struct sim *s, struct http_response *resp, const char *model,
                         const struct gen_request *g, unsigned seed)
{
    struct buf png;
    json_t *parts, *image;

    buf_init(&png, 64 << 20);
    if (stage(g, seed, &png) != ST_OK) {
        buf_release(&png);
        google_error(s, resp, 500, "INTERNAL", "An internal error has occurred.", NULL);
        return;
    }
    parts = json_array();
    if (strstr(model, "-pro-")) {
        struct image draft;
        struct buf thumb;
        char sig[24];

        image_demo_room(&draft, 64, 48, seed);
        buf_init(&thumb, 1 << 20);
        png_encode(&draft, &thumb);
        json_array_append_new(parts, json_pack("{s:s, s:b}", "text",
                                               "**Planning the staging**\nA sofa against the back "
                                               "wall, a rug and a plant by the window.",
                                               "thought", 1));
        json_array_append_new(parts,
                              json_pack("{s:{s:s, s:o}, s:b}", "inlineData", "mimeType",
                                        "image/png", "data", b64_string(&thumb), "thought", 1));
        buf_release(&thumb);
        image_release(&draft);
        id_random(sig, sizeof(sig), "", 16);
        image = json_pack("{s:{s:s, s:o}, s:s}", "inlineData", "mimeType", "image/png", "data",
                          b64_string(&png), "thoughtSignature", sig);
    } else {
        image = json_pack("{s:{s:s, s:o}}", "inlineData", "mimeType", "image/png", "data",
                          b64_string(&png));
    }
    if (g->want_text)
        json_array_append_new(parts, json_pack("{s:s}", "text",
                                               "Here is the room, virtually staged with a sofa, "
                                               "a rug and a plant."));
    json_array_append_new(parts, image);
    buf_release(&png);
    answer(s, resp, model,
           json_pack("[{s:{s:s, s:o}, s:s, s:i}]", "content", "role", "model", "parts", parts,
                     "finishReason", "STOP", "index", 0),
           NULL, g->prompt.len, true);
}

/* ---- generateContent ---------------------------------------------------------------- */

static bool model_known(const struct sim *s, const char *model)
{
    size_t i;

    for (i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i], model) == 0)
            return true;
    return false;
}

static bool has(const struct gen_request *g, const char *keyword)
{
    return strstr(buf_str(&g->prompt), keyword) != NULL;
}

/* Random faults of SIM_FAIL_RATE: 500, 503 or 429 (with Retry-After: 1), equally likely. */
static void random_failure(struct sim *s, struct http_response *resp, const char *model)
{
    double pick = sim_random(s);

    if (pick < 1.0 / 3) {
        google_error(s, resp, 500, "INTERNAL",
                     "An internal error has occurred. Please retry or report in "
                     "https://developers.generativeai.google/guide/troubleshooting",
                     NULL);
    } else if (pick < 2.0 / 3) {
        google_error(s, resp, 503, "UNAVAILABLE",
                     "The model is overloaded. Please try again later.", NULL);
    } else {
        http_response_header(resp, "Retry-After", "1");
        quota_error(s, resp, model, false, "1s");
    }
}

/* Answers what a prompt keyword asks for; false when there is none. */
static bool keyword_answer(struct sim *s, struct http_response *resp, const char *model,
                           const struct gen_request *g, int64_t image_calls)
{
    size_t chars = g->prompt.len;

    if (has(g, "[block]")) {
        answer(s, resp, model, NULL, "PROHIBITED_CONTENT", chars, false);
    } else if (has(g, "[safety]")) {
        answer(s, resp, model,
               candidate_without_image("IMAGE_SAFETY", NULL,
                                       "Unable to show the generated image. The image was "
                                       "filtered out because it violated Google's Generative AI "
                                       "Prohibited Use policy."),
               NULL, chars, false);
    } else if (has(g, "[noimage]")) {
        answer(s, resp, model, candidate_without_image("NO_IMAGE", NULL, NULL), NULL, chars, false);
    } else if (has(g, "[recitation]")) {
        answer(s, resp, model, candidate_without_image("IMAGE_RECITATION", NULL, NULL), NULL, chars,
               false);
    } else if (has(g, "[textonly]")) {
        answer(s, resp, model,
               candidate_without_image("STOP",
                                       "I can describe how this room could be staged: a grey "
                                       "sofa facing the window, a wool rug and two plants.",
                                       NULL),
               NULL, chars, false);
    } else if (has(g, "[fail429day]")) {
        quota_error(s, resp, model, true, "3600s");
    } else if (has(g, "[fail429]")) {
        quota_error(s, resp, model, false, "2s");
    } else if (has(g, "[fail500]")) {
        google_error(s, resp, 500, "INTERNAL", "An internal error has occurred.", NULL);
    } else if (has(g, "[fail503]") || (has(g, "[flaky]") && image_calls == 1)) {
        google_error(s, resp, 503, "UNAVAILABLE",
                     "The model is overloaded. Please try again later.", NULL);
    } else if (has(g, "[nocredit]")) {
        google_error(s, resp, 402, "RESOURCE_EXHAUSTED",
                     "Your prepaid credit balance is depleted. Add credits to continue.", NULL);
    } else {
        return false;
    }
    return true;
}

static void handle_generate(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim *s = ud;
    const char *action = http_request_param(req, "modelAction");
    const char *key = http_request_header(req, "x-goog-api-key");
    const char *colon = action ? strrchr(action, ':') : NULL;
    struct faults f = faults_get(s);
    struct gen_request g;
    char model[160], msg[320], hash[65];
    const char *body;
    json_t *root = NULL;
    int64_t image_calls;
    size_t len;

    memset(&g, 0, sizeof(g));
    buf_init(&g.prompt, 1 << 20);
    buf_init(&g.image, 0);
    pthread_mutex_lock(&s->lock);
    s->calls++;
    pthread_mutex_unlock(&s->lock);
    if (f.latency_ms > 0 && !sim_sleep(req, f.latency_ms)) {
        google_error(s, resp, 503, "UNAVAILABLE", "The service is shutting down.", NULL);
        goto out;
    }
    if (!key || !key[0])
        key = http_request_query(req, "key");
    if (!key || !key[0]) {
        google_error(s, resp, 403, "PERMISSION_DENIED",
                     "Method doesn't allow unregistered callers (callers without established "
                     "identity). Please use API Key or other form of API consumer identity to "
                     "call this API.",
                     NULL);
        goto out;
    }
    if (s->api_key && strcmp(key, s->api_key) != 0) {
        google_error(s, resp, 400, "INVALID_ARGUMENT",
                     "API key not valid. Please pass a valid API key.",
                     json_pack("[{s:s, s:s, s:s, s:{s:s}}]", "@type",
                               "type.googleapis.com/google.rpc.ErrorInfo", "reason",
                               "API_KEY_INVALID", "domain", "googleapis.com", "metadata", "service",
                               "generativelanguage.googleapis.com"));
        goto out;
    }
    if (!colon || strcmp(colon + 1, "generateContent") != 0 ||
        (size_t)(colon - action) >= sizeof(model)) {
        google_error(s, resp, 404, "NOT_FOUND", "Method not found.", NULL);
        goto out;
    }
    memcpy(model, action, (size_t)(colon - action));
    model[colon - action] = '\0';
    if (!model_known(s, model)) {
        snprintf(msg, sizeof(msg),
                 "models/%.64s is not found for API version v1beta, or is not supported for "
                 "generateContent. Call ListModels to see the list of available models and "
                 "their supported methods.",
                 model);
        google_error(s, resp, 404, "NOT_FOUND", msg, NULL);
        goto out;
    }
    body = http_request_body(req, &len);
    root = len ? json_loadb(body, len, 0, NULL) : NULL;
    if (!root) {
        invalid_argument(s, resp, "Invalid JSON payload received. Unexpected token.");
        goto out;
    }
    if (!validate_request(root, model, &g)) {
        invalid_argument(s, resp, g.error);
        goto out;
    }

    sha256_hex(g.image.data, g.image.len, hash);
    hash[16] = '\0';
    image_calls = stats_image(s, hash);
    if (f.timeout_rate > 0 && sim_random(s) < f.timeout_rate) {
        if (!sim_sleep(req, f.timeout_ms)) {
            google_error(s, resp, 503, "UNAVAILABLE", "The service is shutting down.", NULL);
            goto out;
        }
    }
    if (f.fail_rate > 0 && sim_random(s) < f.fail_rate) {
        random_failure(s, resp, model);
        goto out;
    }
    if (has(&g, "[slow]") && !sim_sleep(req, f.timeout_ms)) {
        google_error(s, resp, 503, "UNAVAILABLE", "The service is shutting down.", NULL);
        goto out;
    }
    if (keyword_answer(s, resp, model, &g, image_calls))
        goto out;
    if (!g.want_image) {
        answer(s, resp, model,
               candidate_without_image("STOP", "Here is a description of the staged room.", NULL),
               NULL, g.prompt.len, false);
        goto out;
    }
    answer_image(s, resp, model, &g, (unsigned)strtoul(hash + 8, NULL, 16));
out:
    json_decref(root);
    buf_release(&g.prompt);
    buf_release(&g.image);
}

/* ---- control, stats, demo images, health ----------------------------------------------- */

static json_t *faults_json(struct sim *s)
{
    struct faults f = faults_get(s);
    json_t *j =
        json_pack("{s:f, s:f, s:I, s:I}", "failRate", f.fail_rate, "timeoutRate", f.timeout_rate,
                  "latencyMs", (json_int_t)f.latency_ms, "timeoutMs", (json_int_t)f.timeout_ms);

    sim_video_control_get(s->video, j);
    return j;
}

static void handle_control_get(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    http_respond_json(resp, 200, faults_json(ud));
}

static void handle_control_set(struct http_request *req, struct http_response *resp, void *ud)
{
    static const char *const fields[] = {"failRate",   "timeoutRate",  "latencyMs", "timeoutMs",
                                         "runwayDown", "pixverseDown", "jobMs",     NULL};
    struct sim *s = ud;
    const json_t *body = http_request_json(req);
    struct faults f = faults_get(s);
    struct gen_request unknown;
    struct error err;
    int64_t latency = f.latency_ms, timeout = f.timeout_ms;

    error_clear(&err);
    if (!json_is_object(body)) {
        error_set(&err, ST_INVALID, NULL, "control body must be a json object");
        http_respond_error(resp, &err);
        return;
    }
    memset(&unknown, 0, sizeof(unknown));
    if (!known_fields(body, fields, NULL, &unknown)) {
        error_set(&err, ST_INVALID, "unknown_field", "control: %s", unknown.error);
        http_respond_error(resp, &err);
        return;
    }
    if (json_get_double(body, "failRate", JSON_OPTIONAL, 0, 1, &f.fail_rate, &err) != ST_OK ||
        json_get_double(body, "timeoutRate", JSON_OPTIONAL, 0, 1, &f.timeout_rate, &err) != ST_OK ||
        json_get_int(body, "latencyMs", JSON_OPTIONAL, 0, 600000, &latency, &err) != ST_OK ||
        json_get_int(body, "timeoutMs", JSON_OPTIONAL, 0, 600000, &timeout, &err) != ST_OK ||
        sim_video_control_set(s->video, body, &err) != ST_OK) {
        http_respond_error(resp, &err);
        return;
    }
    f.latency_ms = latency;
    f.timeout_ms = timeout;
    pthread_mutex_lock(&s->lock);
    s->faults = f;
    pthread_mutex_unlock(&s->lock);
    log_write(LOG_NOTICE,
              json_pack("{s:f, s:f, s:I, s:I}", "failRate", f.fail_rate, "timeoutRate",
                        f.timeout_rate, "latencyMs", (json_int_t)f.latency_ms, "timeoutMs",
                        (json_int_t)f.timeout_ms),
              "fault injection changed");
    http_respond_json(resp, 200, faults_json(s));
}

static void handle_stats(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim *s = ud;
    json_t *body;

    UNUSED(req);
    pthread_mutex_lock(&s->lock);
    /* Copies, so the response is not changed by calls made while it is sent. */
    body =
        json_pack("{s:{s:I, s:I, s:I}, s:o, s:o}", "generateContent", "calls", (json_int_t)s->calls,
                  "ok", (json_int_t)s->ok, "failed", (json_int_t)s->failed, "byImage",
                  json_deep_copy(s->by_image), "byStatus", json_deep_copy(s->by_status));
    pthread_mutex_unlock(&s->lock);
    sim_video_stats(s->video, body);
    http_respond_json(resp, 200, body);
}

static void handle_stats_reset(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim *s = ud;

    UNUSED(req);
    pthread_mutex_lock(&s->lock);
    s->calls = s->ok = s->failed = 0;
    json_object_clear(s->by_image);
    json_object_clear(s->by_status);
    pthread_mutex_unlock(&s->lock);
    sim_video_stats_reset(s->video);
    http_respond_json(resp, 200, json_pack("{s:b}", "reset", 1));
}

/* A query parameter as a side length of a demo image, or def. */
static int side_param(struct http_request *req, const char *name, int def)
{
    int64_t v;
    const char *q = http_request_query(req, name);

    return q && str_to_i64(q, DEMO_SIDE_MIN, DEMO_SIDE_MAX, &v) ? (int)v : def;
}

static void handle_demo(struct http_request *req, struct http_response *resp, void *ud)
{
    const char *name = http_request_param(req, "name");
    const char *dot = name ? strrchr(name, '.') : NULL;
    const char *inm = http_request_header(req, "If-None-Match");
    int w = side_param(req, "w", DEMO_W), h = side_param(req, "h", DEMO_H);
    char num[16], etag[64];
    struct image img;
    struct buf png;
    struct error err;
    int64_t n;

    UNUSED(ud);
    if (!dot || strcmp(dot, ".png") != 0 || (size_t)(dot - name) >= sizeof(num)) {
        error_set(&err, ST_NOT_FOUND, NULL, "no demo image %.64s (try /demo/1.png)",
                  name ? name : "");
        http_respond_error(resp, &err);
        return;
    }
    memcpy(num, name, (size_t)(dot - name));
    num[dot - name] = '\0';
    if (!str_to_i64(num, 0, DEMO_N_MAX, &n)) {
        error_set(&err, ST_NOT_FOUND, NULL, "no demo image %.64s (numbers 0 to %d)", name,
                  DEMO_N_MAX);
        http_respond_error(resp, &err);
        return;
    }
    snprintf(etag, sizeof(etag), "\"demo-%lld-%dx%d\"", (long long)n, w, h);
    http_response_header(resp, "ETag", etag);
    http_response_header(resp, "Cache-Control", "public, max-age=86400, immutable");
    if (inm && strcmp(inm, etag) == 0) {
        http_respond_bytes(resp, 304, "image/png", "", 0);
        return;
    }
    if (sim_fast) {
        pthread_once(&fast_once, fast_init);
        http_respond_bytes(resp, 200, "image/png", fast_demo.data, fast_demo.len);
        return;
    }
    image_demo_room(&img, w, h, (unsigned)n);
    image_mark(&img, (unsigned)n);
    buf_init(&png, 64 << 20);
    if (png_encode(&img, &png) != ST_OK) {
        error_set(&err, ST_INTERNAL, NULL, "cannot encode demo image %lld", (long long)n);
        http_respond_error(resp, &err);
    } else {
        http_respond_bytes(resp, 200, "image/png", png.data, png.len);
    }
    buf_release(&png);
    image_release(&img);
}

/*
 * A webhook receiver for tests: POST /hooks/{name}[?fail=N] records each
 * delivery (the Standard Webhooks headers and the body) and answers 503 to
 * the first N of them; GET /hooks/{name} lists what was received.
 */
static void handle_hook_post(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim *s = ud;
    const char *name = http_request_param(req, "name"), *fail = http_request_query(req, "fail");
    static const char *const wanted[] = {"webhook-id", "webhook-timestamp", "webhook-signature",
                                         "Content-Type"};
    json_t *headers = json_object(), *list;
    size_t len, i;
    const char *body = http_request_body(req, &len);
    int64_t fail_n = 0;
    int status;

    for (i = 0; i < ARRAY_SIZE(wanted); i++) {
        const char *v = http_request_header(req, wanted[i]);

        if (v)
            json_object_set_new(headers, wanted[i], json_string(v));
    }
    if (fail)
        str_to_i64(fail, 0, 1000, &fail_n);
    pthread_mutex_lock(&s->lock);
    list = json_object_get(s->hooks, name);
    if (!list) {
        list = json_array();
        json_object_set_new(s->hooks, name, list);
    }
    status = (int64_t)json_array_size(list) < fail_n ? 503 : 200;
    if (json_array_size(list) < 1000)
        json_array_append_new(list, json_pack("{s:o, s:s%, s:i}", "headers", headers, "body", body,
                                              len, "status", status));
    else
        json_decref(headers);
    pthread_mutex_unlock(&s->lock);
    http_respond_json(resp, status, json_pack("{s:b}", "ok", status == 200));
}

static void handle_hook_get(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim *s = ud;
    json_t *list;

    pthread_mutex_lock(&s->lock);
    list = json_object_get(s->hooks, http_request_param(req, "name"));
    list = list ? json_deep_copy(list) : json_array();
    pthread_mutex_unlock(&s->lock);
    http_respond_json(resp, 200, json_pack("{s:o}", "received", list));
}

static void handle_healthz(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    UNUSED(ud);
    http_respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- main ---------------------------------------------------------------------------------- */

static bool parse_models(struct sim *s, const char *list)
{
    const char *p = list;

    while (*p) {
        size_t n = strcspn(p, ",");
        size_t a = 0, b = n;

        while (a < b && (p[a] == ' ' || p[a] == '\t'))
            a++;
        while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
            b--;
        if (b > a) {
            if (s->n_models == MODELS_MAX)
                return false;
            s->models[s->n_models] = xmalloc(b - a + 1);
            memcpy(s->models[s->n_models], p + a, b - a);
            s->models[s->n_models++][b - a] = '\0';
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return s->n_models > 0;
}

static void sim_release(struct sim *s)
{
    size_t i;

    for (i = 0; i < s->n_models; i++)
        free(s->models[i]);
    json_decref(s->by_image);
    json_decref(s->by_status);
    json_decref(s->hooks);
    sim_video_free(s->video);
    pthread_mutex_destroy(&s->lock);
}

int main(int argc, char **argv)
{
    struct sim_settings cfg;
    struct http_server_options opts;
    struct http_server *srv = NULL;
    struct sim s;
    struct error err;
    enum log_severity sev = LOG_INFO;
    sigset_t stop;
    int sig = 0, code = 1;

    if (argc > 1) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;

        if (!help)
            fprintf(stderr, "%s: unknown argument \"%s\"\n", PROGRAM, argv[1]);
        config_print_help(help ? stdout : stderr, PROGRAM,
                          "simulates Google's Gemini image API and Runway's and PixVerse's video "
                          "APIs for tests and the local demo",
                          sim_table, ARRAY_SIZE(sim_table), 1);
        return help ? 0 : 2;
    }
    memset(&cfg, 0, sizeof(cfg));
    memset(&s, 0, sizeof(s));
    error_clear(&err);
    if (config_load(sim_table, ARRAY_SIZE(sim_table), 1, &cfg, config_getenv, NULL, &err) !=
        ST_OK) {
        fprintf(stderr, "%s: %s (see %s --help)\n", PROGRAM, err.message, PROGRAM);
        config_release(sim_table, ARRAY_SIZE(sim_table), &cfg);
        return 2;
    }
    log_severity_parse(cfg.log_level, &sev);
    log_init(PROGRAM, NULL, sev, STDOUT_FILENO);

    pthread_mutex_init(&s.lock, NULL);
    s.by_image = json_object();
    s.by_status = json_object();
    s.hooks = json_object();
    s.api_key = cfg.api_key;
    s.faults.fail_rate = cfg.fail_rate;
    s.faults.timeout_rate = cfg.timeout_rate;
    s.faults.latency_ms = cfg.latency_ms;
    sim_fast = cfg.fast;
    s.faults.timeout_ms = cfg.timeout_ms;
    s.rng = (uint64_t)cfg.seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (s.rng == 0)
        s.rng = 1;
    {
        struct sim_video_config vc = {
            .job_ms = cfg.job_ms,
            .runway_concurrency = cfg.runway_concurrency,
            .pixverse_concurrency = cfg.pixverse_concurrency,
            .runway_key = cfg.runway_api_key ? cfg.runway_api_key : cfg.api_key,
            .pixverse_key = cfg.pixverse_api_key ? cfg.pixverse_api_key : cfg.api_key,
        };
        struct sim_env env = {&s, video_faults, video_random};

        s.video = sim_video_new(&vc, &env);
    }
    if (!parse_models(&s, cfg.models)) {
        fprintf(stderr, "%s: invalid SIM_MODELS=\"%s\": give 1 to %d comma-separated model ids\n",
                PROGRAM, cfg.models, MODELS_MAX);
        code = 2;
        goto out;
    }

    /* Signals are taken by sigwait below; the server's threads inherit the mask. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    memset(&opts, 0, sizeof(opts));
    opts.bind_address = cfg.bind_address;
    opts.port = (int)cfg.port;
    opts.max_body_bytes = (size_t)cfg.max_body_bytes;
    opts.thread_stack_bytes = 1 << 20; /* PNG work and sanitizers */
    opts.service = PROGRAM;
    opts.access_log = true;
    srv = http_server_new(&opts, &err);
    if (!srv)
        goto fail;
    http_server_route(srv, "POST", "/v1beta/models/{modelAction}", 0, handle_generate, &s);
    http_server_route(srv, "GET", "/control", 0, handle_control_get, &s);
    http_server_route(srv, "POST", "/control", HTTP_ROUTE_JSON, handle_control_set, &s);
    http_server_route(srv, "GET", "/stats", 0, handle_stats, &s);
    http_server_route(srv, "POST", "/stats/reset", 0, handle_stats_reset, &s);
    http_server_route(srv, "GET", "/demo/{name}", 0, handle_demo, &s);
    http_server_route(srv, "GET", "/healthz", 0, handle_healthz, &s);
    http_server_route(srv, "POST", "/hooks/{name}", 0, handle_hook_post, &s);
    http_server_route(srv, "GET", "/hooks/{name}", 0, handle_hook_get, &s);
    sim_video_routes(s.video, srv);
    if (http_server_start(srv, &err) != ST_OK)
        goto fail;
    log_write(LOG_NOTICE,
              json_pack("{s:i, s:s, s:f, s:f, s:I, s:I, s:I}", "port", http_server_port(srv),
                        "models", cfg.models, "failRate", cfg.fail_rate, "timeoutRate",
                        cfg.timeout_rate, "latencyMs", (json_int_t)cfg.latency_ms, "timeoutMs",
                        (json_int_t)cfg.timeout_ms, "seed", (json_int_t)cfg.seed),
              "%s listening on %s:%d", PROGRAM, cfg.bind_address, http_server_port(srv));

    while (sigwait(&stop, &sig) != 0)
        ;
    log_write(LOG_NOTICE, NULL, "%s received %s, stopping", PROGRAM,
              sig == SIGTERM ? "SIGTERM" : "SIGINT");
    if (http_server_shutdown(srv, (int)cfg.shutdown_grace_ms) > 0) {
        /* Handlers still running use the server and the state: leave without freeing. */
        log_warn("%s stopping with requests still running", PROGRAM);
        fflush(stdout);
        _exit(0);
    }
    code = 0;
    goto out;
fail:
    fprintf(stderr, "%s: %s\n", PROGRAM, err.message);
out:
    http_server_free(srv);
    sim_release(&s);
    config_release(sim_table, ARRAY_SIZE(sim_table), &cfg);
    return code;
}
