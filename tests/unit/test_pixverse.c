/*
 * test_pixverse.c - the PixVerse provider: classification tables over
 * canned envelopes, option validation, exact 64-bit ids, request shapes
 * against a scripted local server (fake_http.h: multipart upload, a fresh
 * Ai-trace-id per request), and end to end against provider-sim (SIM_BIN).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fake_http.h"
#include "http/client.h"
#include "mp4.h"
#include "png.h"
#include "providers/pixverse.h"
#include "providers/video.h"
#include "sim_proc.h"

#ifndef SIM_BIN
#error "SIM_BIN must name the provider-sim executable"
#endif

#define T PROVIDER_TRANSIENT
#define P PROVIDER_PERMANENT
#define R PROVIDER_RUNNING
#define S PROVIDER_STARTED
#define D PROVIDER_DONE
#define U PROVIDER_RUNNING /* UPLOAD rows: the call succeeded, a step on the way */

#define KEY     "px-test-key-0123456789"
#define SIM_KEY "px-sim-key-42"

#define ENV(code, msg, resp) "{\"ErrCode\":" #code ",\"ErrMsg\":\"" msg "\",\"Resp\":" resp "}"
#define ERR(code)            ENV(code, "Something is wrong", "null")
#define STATUS(n, extra)                                                                           \
    ENV(0, "success", "{\"id\":9223372036854775807,\"status\":" #n extra ",\"prompt\":\"p\"}")
#define VIDEO_URL "https://media.pixverse.ai/openapi/output/abc.mp4"
#define HTML      "<html><body><h1>500 Internal Server Error</h1></body></html>"

/* ---- classification ------------------------------------------------------------ */

struct classify_row {
    const char *name;
    enum pixverse_call call;
    enum status transport;
    bool sent;
    long http;
    const char *body;
    int retry_after;
    bool ok;
    enum provider_outcome want; /* when !ok, or for GENERATE/RESULT */
    const char *code;
    int want_retry;
    bool pause, resubmit;
    long long id;      /* UPLOAD/GENERATE: the id */
    const char *value; /* GENERATE: job id; RESULT DONE: url */
};

static const struct classify_row classify_rows[] = {
    /* upload */
    {"upload ok", PIXVERSE_UPLOAD, ST_OK, true, 200,
     ENV(0, "success", "{\"img_id\":627410861853514292,\"img_url\":\"https://m/x.jpg\"}"), 0, true,
     U, "", 0, false, false, 627410861853514292LL, NULL},
    {"upload ok, quoted id", PIXVERSE_UPLOAD, ST_OK, true, 200,
     ENV(0, "success", "{\"img_id\":\"627410861853514293\"}"), 0, true, U, "", 0, false, false,
     627410861853514293LL, NULL},
    {"upload real id", PIXVERSE_UPLOAD, ST_OK, true, 200,
     ENV(0, "success", "{\"img_id\":6.274108618535143e17}"), 0, false, T, "provider_bad_response",
     0, false, false, 0, NULL},
    {"upload without resp", PIXVERSE_UPLOAD, ST_OK, true, 200, ENV(0, "success", "null"), 0, false,
     T, "provider_bad_response", 0, false, false, 0, NULL},
    {"upload failed", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(500041), 0, false, T,
     "provider_upload_failed", 0, false, false, 0, NULL},
    {"image too large", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(500030), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"image unreadable", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(500031), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"image format", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(500032), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"image size", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(500033), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"image path", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(500042), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"empty parameter", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(400011), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"invalid account", PIXVERSE_UPLOAD, ST_OK, true, 200, ERR(400012), 0, false, P,
     "provider_auth_failed", 0, false, false, 0, NULL},
    {"invalid api key", PIXVERSE_UPLOAD, ST_OK, true, 401, ENV(10005, "Invalid API-KEY", "null"), 0,
     false, P, "provider_auth_failed", 0, false, false, 0, NULL},
    {"invalid api key, http 200", PIXVERSE_UPLOAD, ST_OK, true, 200,
     "{\"ErrMsg\":\"Invalid API-KEY\"}", 0, false, P, "provider_auth_failed", 0, false, false, 0,
     NULL},
    {"upload 503 html", PIXVERSE_UPLOAD, ST_OK, true, 503, HTML, 0, false, T,
     "provider_unavailable", 0, false, false, 0, NULL},
    {"upload timeout", PIXVERSE_UPLOAD, ST_TIMEOUT, true, 0, NULL, 0, false, T, "provider_timeout",
     0, false, false, 0, NULL}, /* not billed: never ambiguous */
    /* generate */
    {"generate ok", PIXVERSE_GENERATE, ST_OK, true, 200,
     ENV(0, "success", "{\"video_id\":9007199254740993}"), 0, true, S, "", 0, false, false,
     9007199254740993LL, "9007199254740993"},
    {"generate ok, largest id", PIXVERSE_GENERATE, ST_OK, true, 200,
     ENV(0, "success", "{\"video_id\":9223372036854775807,\"credit\":45}"), 0, true, S, "", 0,
     false, false, 9223372036854775807LL, "9223372036854775807"},
    {"generate without id", PIXVERSE_GENERATE, ST_OK, true, 200, ENV(0, "success", "{}"), 0, false,
     T, "provider_submit_unknown", 0, false, false, 0, NULL},
    {"generate 200 html", PIXVERSE_GENERATE, ST_OK, true, 200, HTML, 0, false, T,
     "provider_submit_unknown", 0, false, false, 0, NULL},
    {"binding", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(400013), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"invalid parameter", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(400017), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"prompt too long", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(400018), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"negative prompt too long", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(400019), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"other 4000xx", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(400099), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"invalid image id", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(400032), 0, false, P,
     "provider_invalid_image_id", 0, false, false, 0, NULL},
    {"no permission", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500020), 0, false, P,
     "provider_not_permitted", 0, false, false, 0, NULL},
    {"concurrency", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500044), 0, false, T,
     "provider_concurrency_limit", PIXVERSE_BUSY_RETRY_S, false, false, 0, NULL},
    {"concurrency, longer retry-after", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500044), 60, false,
     T, "provider_concurrency_limit", 60, false, false, 0, NULL},
    {"image moderation", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500054), 0, false, P,
     "provider_moderation", 0, false, false, 0, NULL},
    {"content moderation", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500063), 0, false, P,
     "provider_moderation", 0, false, false, 0, NULL},
    {"monthly limit", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500060), 0, false, P,
     "provider_limit_reached", 0, false, false, 0, NULL},
    {"content deleted", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500064), 0, false, P,
     "provider_content_deleted", 0, false, false, 0, NULL},
    {"high load", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500069), 0, false, T,
     "provider_overloaded", PIXVERSE_BUSY_RETRY_S, false, false, 0, NULL},
    {"template", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500070), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"effect quality", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500071), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"no balance", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500090), 0, false, P,
     "provider_no_credits", 0, true, false, 0, NULL},
    {"mysql", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(500100), 0, false, T, "provider_unavailable",
     0, false, false, 0, NULL},
    {"unknown 99999", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(99999), 0, false, T,
     "provider_unavailable", 0, false, false, 0, NULL},
    {"subject detection", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(701002), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"lip sync detection", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(701003), 0, false, P,
     "provider_invalid_image", 0, false, false, 0, NULL},
    {"code nobody knows", PIXVERSE_GENERATE, ST_OK, true, 200, ERR(123456), 0, false, T,
     "provider_error", 0, false, false, 0, NULL},
    {"envelope on http 400", PIXVERSE_GENERATE, ST_OK, true, 400, ERR(400017), 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"envelope on http 500", PIXVERSE_GENERATE, ST_OK, true, 500, ERR(500044), 0, false, T,
     "provider_concurrency_limit", PIXVERSE_BUSY_RETRY_S, false, false, 0, NULL},
    {"http 500 html", PIXVERSE_GENERATE, ST_OK, true, 500, HTML, 0, false, T,
     "provider_unavailable", 0, false, false, 0, NULL},
    {"http 502 empty", PIXVERSE_GENERATE, ST_OK, true, 502, "", 2, false, T, "provider_unavailable",
     2, false, false, 0, NULL},
    {"http 429", PIXVERSE_GENERATE, ST_OK, true, 429, "", 9, false, T, "provider_rate_limited", 9,
     false, false, 0, NULL},
    {"http 401", PIXVERSE_GENERATE, ST_OK, true, 401, "", 0, false, P, "provider_auth_failed", 0,
     false, false, 0, NULL},
    {"http 404", PIXVERSE_GENERATE, ST_OK, true, 404, "Not Found", 0, false, P, "provider_config",
     0, false, false, 0, NULL},
    {"http 400 plain", PIXVERSE_GENERATE, ST_OK, true, 400, "bad", 0, false, P,
     "provider_invalid_request", 0, false, false, 0, NULL},
    {"http 504", PIXVERSE_GENERATE, ST_OK, true, 504, "", 0, false, T, "provider_timeout", 0, false,
     false, 0, NULL},
    {"generate timeout after sending", PIXVERSE_GENERATE, ST_TIMEOUT, true, 0, NULL, 0, false, T,
     "provider_submit_unknown", 0, false, false, 0, NULL},
    {"generate reset after sending", PIXVERSE_GENERATE, ST_UNAVAILABLE, true, 0, NULL, 0, false, T,
     "provider_submit_unknown", 0, false, false, 0, NULL},
    {"generate refused", PIXVERSE_GENERATE, ST_UNAVAILABLE, false, 0, NULL, 0, false, T,
     "provider_unavailable", 0, false, false, 0, NULL},
    {"generate connect timeout", PIXVERSE_GENERATE, ST_TIMEOUT, false, 0, NULL, 0, false, T,
     "provider_timeout", 0, false, false, 0, NULL},
    {"bad url", PIXVERSE_GENERATE, ST_INVALID, false, 0, NULL, 0, false, P, "provider_config", 0,
     false, false, 0, NULL},
    /* result */
    {"generating", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(5, ""), 0, true, R, "", 0, false,
     false, 0, NULL},
    {"done", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(1, ",\"url\":\"" VIDEO_URL "\""), 0, true, D,
     "", 0, false, false, 0, VIDEO_URL},
    {"done without url", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(1, ",\"url\":\"\""), 0, false, T,
     "provider_bad_response", 0, false, false, 0, NULL},
    {"deleted", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(6, ""), 0, false, P,
     "provider_job_deleted", 0, false, false, 0, NULL},
    {"moderated", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(7, ""), 0, false, P,
     "provider_moderation", 0, false, false, 0, NULL},
    {"failed", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(8, ""), 0, false, T, "provider_job_failed",
     0, false, true, 0, NULL},
    {"unknown status", PIXVERSE_RESULT, ST_OK, true, 200, STATUS(2, ""), 0, true, R, "", 0, false,
     false, 0, NULL},
    {"status as text", PIXVERSE_RESULT, ST_OK, true, 200,
     ENV(0, "success", "{\"id\":1,\"status\":\"5\"}"), 0, false, T, "provider_bad_response", 0,
     false, false, 0, NULL},
    {"no status", PIXVERSE_RESULT, ST_OK, true, 200, ENV(0, "success", "{\"id\":1}"), 0, false, T,
     "provider_bad_response", 0, false, false, 0, NULL},
    {"unknown video", PIXVERSE_RESULT, ST_OK, true, 200, ERR(500008), 0, false, P,
     "provider_job_not_found", 0, false, false, 0, NULL},
    {"result 503", PIXVERSE_RESULT, ST_OK, true, 503, HTML, 0, false, T, "provider_unavailable", 0,
     false, false, 0, NULL},
    {"result timeout", PIXVERSE_RESULT, ST_TIMEOUT, true, 0, NULL, 0, false, T, "provider_timeout",
     0, false, false, 0, NULL},
};

START_TEST(classify_table)
{
    const struct classify_row *r = &classify_rows[_i];
    struct provider_output out;
    struct video_reply reply = {
        .transport = r->transport,
        .transport_error = r->transport == ST_OK ? NULL : "cannot POST x: it failed",
        .request_sent = r->sent,
        .http_status = r->http,
        .body = r->body,
        .body_len = r->body ? strlen(r->body) : 0,
        .retry_after_s = r->retry_after,
    };
    int64_t id = -1;
    bool ok;

    provider_output_init(&out, 1 << 20);
    ok = pixverse_classify(&reply, r->call, &out, &id);
    ck_assert_msg(ok == r->ok, "%s: ok %d (%s %s)", r->name, ok, out.error_code, out.error_message);
    ck_assert_msg(out.outcome == r->want, "%s: outcome %s, want %s (%s)", r->name,
                  provider_outcome_name(out.outcome), provider_outcome_name(r->want),
                  out.error_message);
    ck_assert_msg(strcmp(out.error_code, r->code) == 0, "%s: code \"%s\", want \"%s\"", r->name,
                  out.error_code, r->code);
    ck_assert_msg(out.retry_after_s == r->want_retry, "%s: retry after %d, want %d", r->name,
                  out.retry_after_s, r->want_retry);
    ck_assert_msg(out.pause_batch == r->pause, "%s: pause %d", r->name, out.pause_batch);
    ck_assert_msg(out.resubmit == r->resubmit, "%s: resubmit %d", r->name, out.resubmit);
    if (r->ok && r->call != PIXVERSE_RESULT)
        ck_assert_msg(id == r->id, "%s: id %lld, want %lld", r->name, (long long)id, r->id);
    if (r->ok && r->call == PIXVERSE_GENERATE)
        ck_assert_str_eq(out.job_id, r->value);
    if (r->ok && r->want == D && r->call == PIXVERSE_RESULT)
        ck_assert_str_eq(out.output_url, r->value);
    if (!r->ok)
        ck_assert_msg(str_starts_with(out.error_message, "pixverse "), "%s: message \"%s\"",
                      r->name, out.error_message);
    provider_output_release(&out);
}
END_TEST

START_TEST(errcode_messages)
{
    struct provider_output out;

    provider_output_init(&out, 1024);
    pixverse_classify_errcode(500044, "Concurrent\tlimit reached", PIXVERSE_GENERATE, &out);
    ck_assert_str_eq(out.error_message, "pixverse is at its concurrent generation limit (errcode "
                                        "500044): Concurrent limit reached");
    pixverse_classify_errcode(500008, NULL, PIXVERSE_GENERATE, &out);
    ck_assert_str_eq(out.error_code, "provider_invalid_request");
    pixverse_classify_errcode(42, "invalid api key", PIXVERSE_RESULT, &out);
    ck_assert_str_eq(out.error_code, "provider_auth_failed");
    provider_output_release(&out);
}
END_TEST

/* ---- ids -------------------------------------------------------------------------- */

START_TEST(ids_are_exact)
{
    static const struct {
        const char *json; /* {"id": ...} */
        bool ok;
        long long want;
    } rows[] = {
        {"627410861853514292", true, 627410861853514292LL},
        {"627410861853514293", true, 627410861853514293LL}, /* a double would round it */
        {"9007199254740993", true, 9007199254740993LL},     /* 2^53 + 1 */
        {"9223372036854775807", true, 9223372036854775807LL},
        {"\"9223372036854775807\"", true, 9223372036854775807LL},
        {"\"627410861853514292\"", true, 627410861853514292LL},
        {"1", true, 1},
        {"0", false, 0},
        {"-5", false, 0},
        {"6.274108618535143e17", false, 0},
        {"1.0", false, 0},
        {"\"12a\"", false, 0},
        {"\"\"", false, 0},
        {"\"-3\"", false, 0},
        {"\"9223372036854775808\"", false, 0},
        {"null", false, 0},
        {"true", false, 0},
    };
    char text[96], job[32];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        json_t *root, *v;
        int64_t id = 0;
        bool ok;

        snprintf(text, sizeof(text), "{\"id\":%s}", rows[i].json);
        root = json_loads(text, 0, NULL);
        ck_assert_msg(root != NULL, "%s does not parse", text);
        v = json_object_get(root, "id");
        ok = pixverse_id_from_json(v, &id);
        ck_assert_msg(ok == rows[i].ok, "%s: ok %d", rows[i].json, ok);
        if (ok) {
            ck_assert_msg(id == rows[i].want, "%s: got %lld", rows[i].json, (long long)id);
            /* Back to a job id and again to the integer, exactly. */
            ck_assert(pixverse_job_id_format(id, job, sizeof(job)));
            id = 0;
            ck_assert(pixverse_job_id_parse(job, &id));
            ck_assert_msg(id == rows[i].want, "%s: round trip %lld", job, (long long)id);
        }
        json_decref(root);
    }
    /* jansson itself refuses integers beyond int64 rather than rounding them. */
    ck_assert_ptr_null(json_loads("{\"id\":9223372036854775808}", 0, NULL));
}
END_TEST

START_TEST(job_ids)
{
    static const char *const bad[] = {"",   "abc", "-5",  "0",  "9223372036854775808",
                                      " 5", "5 ",  "1e5", "+5", "0x1F"};
    char job[32];
    int64_t id;
    size_t i;

    ck_assert(pixverse_job_id_parse("627410861853514292", &id));
    ck_assert(id == 627410861853514292LL);
    ck_assert(pixverse_job_id_parse("9223372036854775807", &id));
    ck_assert(id == INT64_MAX);
    ck_assert(pixverse_job_id_format(INT64_MAX, job, sizeof(job)));
    ck_assert_str_eq(job, "9223372036854775807");
    ck_assert(!pixverse_job_id_format(0, job, sizeof(job)));
    ck_assert(!pixverse_job_id_format(INT64_MAX, job, 10)); /* does not fit */
    for (i = 0; i < ARRAY_SIZE(bad); i++)
        ck_assert_msg(!pixverse_job_id_parse(bad[i], &id), "\"%s\" parsed", bad[i]);
    ck_assert(!pixverse_job_id_parse(NULL, &id));
}
END_TEST

/* ---- options --------------------------------------------------------------------- */

struct option_row {
    const char *json;
    bool ok;
    const char *model, *quality, *motion;
    int duration;
    const char *says;
};

static const struct option_row option_rows[] = {
    {NULL, true, "v5", "540p", NULL, 5, NULL},
    {"{}", true, "v5", "540p", NULL, 5, NULL},
    {"{\"ratio\":\"16:9\"}", true, "v5", "540p", NULL, 5, NULL},
    {"{\"quality\":\"360p\"}", true, "v5", "360p", NULL, 5, NULL},
    {"{\"quality\":\"720p\",\"duration\":8}", true, "v5", "720p", NULL, 8, NULL},
    {"{\"quality\":\"1080p\"}", true, "v5", "1080p", NULL, 5, NULL},
    {"{\"quality\":\"1080p\",\"duration\":8}", false, NULL, NULL, NULL, 0, "1080p"},
    {"{\"quality\":\"4k\"}", false, NULL, NULL, NULL, 0, "360p, 540p, 720p or 1080p"},
    {"{\"duration\":10}", false, NULL, NULL, NULL, 0, "5 or 8"},
    {"{\"duration\":\"5\"}", false, NULL, NULL, NULL, 0, "\"duration\""},
    {"{\"model\":\"v3.5\"}", true, "v3.5", "540p", NULL, 5, NULL},
    {"{\"model\":\"v4\",\"motionMode\":\"normal\",\"duration\":8}", true, "v4", "540p", "normal", 8,
     NULL},
    {"{\"model\":\"v4.5\",\"motionMode\":\"fast\"}", true, "v4.5", "540p", "fast", 5, NULL},
    {"{\"model\":\"v4.5\",\"motionMode\":\"fast\",\"duration\":8}", false, NULL, NULL, NULL, 0,
     "fast is for 5-second"},
    {"{\"model\":\"v4\",\"motionMode\":\"fast\",\"quality\":\"1080p\"}", false, NULL, NULL, NULL, 0,
     "below 1080p"},
    {"{\"model\":\"v3.5\",\"motionMode\":\"slow\"}", false, NULL, NULL, NULL, 0, "normal or fast"},
    {"{\"model\":\"v5\",\"motionMode\":\"normal\"}", false, NULL, NULL, NULL, 0,
     "does not take a motion mode"},
    {"{\"model\":\"v6\",\"motionMode\":\"fast\"}", false, NULL, NULL, NULL, 0,
     "does not take a motion mode"},
    {"{\"model\":\"v5.5\",\"duration\":10}", true, "v5.5", "540p", NULL, 10, NULL},
    {"{\"model\":\"v5.6\",\"quality\":\"1080p\",\"duration\":8}", true, "v5.6", "1080p", NULL, 8,
     NULL},
    {"{\"model\":\"v5.5\",\"duration\":7}", false, NULL, NULL, NULL, 0, "5, 8 or 10"},
    {"{\"model\":\"v6\",\"duration\":15}", true, "v6", "540p", NULL, 15, NULL},
    {"{\"model\":\"c1\",\"duration\":1,\"quality\":\"1080p\"}", true, "c1", "1080p", NULL, 1, NULL},
    {"{\"model\":\"v6\",\"duration\":16}", false, NULL, NULL, NULL, 0, "from 1 to 15"},
    {"{\"model\":\"c1\",\"duration\":0}", false, NULL, NULL, NULL, 0, "from 1 to 15"},
    {"{\"model\":\"v7\"}", false, NULL, NULL, NULL, 0, "\"model\""},
    {"{\"model\":4}", false, NULL, NULL, NULL, 0, "must be a string"},
    {"{\"seed\":2147483647}", true, "v5", "540p", NULL, 5, NULL},
    {"{\"seed\":2147483648}", false, NULL, NULL, NULL, 0, "\"seed\""},
    {"{\"seed\":-1}", false, NULL, NULL, NULL, 0, "\"seed\""},
    {"{\"prompt\":[]}", false, NULL, NULL, NULL, 0, "\"prompt\""},
    {"\"v5\"", false, NULL, NULL, NULL, 0, "not a json object"},
};

START_TEST(options_table)
{
    const struct option_row *r = &option_rows[_i];
    json_t *o = r->json ? json_loads(r->json, JSON_DECODE_ANY, NULL) : NULL;
    struct pixverse_params p;
    struct error err;
    enum status st;

    ck_assert(!r->json || o);
    error_clear(&err);
    st = pixverse_resolve(o, NULL, NULL, &p, &err);
    ck_assert_msg((st == ST_OK) == r->ok, "%s: %s (%s)", r->json ? r->json : "NULL",
                  status_name(st), err.message);
    ck_assert_int_eq(pixverse_validate_options(o, NULL), st);
    if (r->ok) {
        ck_assert_str_eq(p.model, r->model);
        ck_assert_str_eq(p.quality, r->quality);
        ck_assert_int_eq(p.duration, r->duration);
        if (r->motion)
            ck_assert_str_eq(p.motion_mode, r->motion);
        else
            ck_assert_ptr_null(p.motion_mode);
    } else {
        ck_assert_str_eq(err.code, "invalid_options");
        ck_assert_msg(strstr(err.message, r->says) &&
                          str_starts_with(err.message, "invalid pixverse"),
                      "%s: message \"%s\" lacks \"%s\"", r->json, err.message, r->says);
    }
    json_decref(o);
}
END_TEST

START_TEST(prompt_length)
{
    char text[2 * 2049 + 1];
    json_t *o;
    size_t i;

    for (i = 0; i < 2048; i++)
        memcpy(text + 2 * i, "\xc3\xa9", 2); /* é: 2 bytes, one character */
    text[2 * 2048] = '\0';
    o = json_pack("{s:s}", "prompt", text);
    ck_assert_int_eq(pixverse_validate_options(o, NULL), ST_OK);
    json_decref(o);
    memcpy(text + 2 * 2048, "\xc3\xa9", 2);
    text[2 * 2049] = '\0';
    o = json_pack("{s:s}", "prompt", text);
    ck_assert_int_eq(pixverse_validate_options(o, NULL), ST_INVALID);
    json_decref(o);
}
END_TEST

/* ---- request shapes against a scripted server ------------------------------------ */

static struct fake_http *F;
static struct http_client *C;
static struct buf PNG;

static void fake_setup(void)
{
    struct image room;

    F = fake_http_start();
    C = http_client_new(&(struct http_client_options){.retry_base_ms = 10, .retry_cap_ms = 50});
    buf_init(&PNG, 1 << 20);
    image_demo_room(&room, 48, 32, 3);
    ck_assert_int_eq(png_encode(&room, &PNG), ST_OK);
    image_release(&room);
}

static void fake_teardown(void)
{
    fake_http_stop(F);
    http_client_free(C);
    buf_release(&PNG);
    F = NULL;
    C = NULL;
}

static struct provider *fake_provider(bool fail_ambiguous)
{
    struct pixverse_options o = {
        .base_url = fake_http_url(F),
        .api_key = KEY,
        .submit_timeout_ms = 500,
        .upload_max_attempts = 2,
        .poll_max_attempts = 2,
        .fetch_max_attempts = 1,
        .download_max_attempts = 1,
        .allow_insecure = true,
        .fail_ambiguous_submit = fail_ambiguous,
    };
    struct provider *p = provider_pixverse_new(&o, C);

    ck_assert_ptr_nonnull(p);
    fake_http_reset(F);
    return p;
}

static void push_png(void)
{
    struct fake_answer a = {200, "image/png", PNG.data, PNG.len, NULL, 0};

    fake_http_push(F, &a);
}

static void submit(struct provider *p, const char *image_url, const char *prompt,
                   const char *options_json, struct provider_output *out)
{
    json_t *meta = prompt ? json_pack("{s:s}", "prompt", prompt) : NULL;
    json_t *opts = options_json ? json_loads(options_json, 0, NULL) : NULL;
    struct provider_input in = {
        .batch_id = "b_test",
        .item_id = "i_test",
        .type = "video-pixverse",
        .image_url = image_url,
        .metadata = meta,
        .options = opts,
        .attempt = 1,
    };

    ck_assert_int_eq(p->submit(p, &in, out), ST_OK);
    json_decref(meta);
    json_decref(opts);
}

static void fake_submit(struct provider *p, const char *prompt, const char *options_json,
                        struct provider_output *out)
{
    char url[128];

    snprintf(url, sizeof(url), "%s/img/room.png", fake_http_url(F));
    submit(p, url, prompt, options_json, out);
}

static void assert_outcome(const struct provider_output *out, enum provider_outcome want,
                           const char *code)
{
    ck_assert_msg(out->outcome == want && strcmp(out->error_code, code) == 0,
                  "outcome %s %s, want %s %s (%s)", provider_outcome_name(out->outcome),
                  out->error_code, provider_outcome_name(want), code, out->error_message);
}

static bool uuid_v4(const char *s)
{
    size_t i;

    if (!s || strlen(s) != 36 || s[14] != '4' || !strchr("89ab", s[19]))
        return false;
    for (i = 0; i < 36; i++)
        if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-'
                                                      : !isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* Every request but the partner's image carries the key and a trace id no other one has. */
static void assert_trace_ids_fresh(void)
{
    size_t i, j, n = fake_http_count(F);

    for (i = 0; i < n; i++) {
        const struct fake_request *a = fake_http_request(F, i);
        const char *ta = fake_request_header(a, "Ai-trace-id");

        if (str_starts_with(a->path, "/img/")) {
            ck_assert_ptr_null(fake_request_header(a, "API-KEY")); /* never to the partner */
            continue;
        }
        ck_assert_str_eq(fake_request_header(a, "API-KEY"), KEY);
        ck_assert_msg(uuid_v4(ta), "request %zu: trace id \"%s\"", i, ta ? ta : "(none)");
        for (j = 0; j < i; j++) {
            const char *tb = fake_request_header(fake_http_request(F, j), "Ai-trace-id");

            ck_assert_msg(!tb || strcmp(ta, tb) != 0, "requests %zu and %zu share %s", j, i, ta);
        }
    }
}

START_TEST(submit_request_shape)
{
    struct provider *p = fake_provider(false);
    struct provider_output out;
    const struct fake_request *r;
    const char *ct;
    json_t *body;

    push_png();
    fake_http_push_json(
        F, 200,
        ENV(0, "success", "{\"img_id\":627410861853514292,\"img_url\":\"https://m/x.png\"}"));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"video_id\":9223372036854775807}"));
    provider_output_init(&out, 1 << 20);
    fake_submit(p, "Push in slowly", NULL, &out);
    assert_outcome(&out, S, "");
    ck_assert_str_eq(out.job_id, "9223372036854775807");
    ck_assert_uint_eq(fake_http_count(F), 3);
    r = fake_http_request(F, 0);
    ck_assert_str_eq(r->method, "GET");
    ck_assert_str_eq(r->path, "/img/room.png");

    r = fake_http_request(F, 1);
    ck_assert_str_eq(r->method, "POST");
    ck_assert_str_eq(r->path, "/openapi/v2/image/upload");
    ct = fake_request_header(r, "Content-Type");
    ck_assert_msg(str_starts_with(ct, "multipart/form-data; boundary="), "content type %s", ct);
    ck_assert(memmem(r->body.data, r->body.len, "name=\"image\"", 12));
    ck_assert(memmem(r->body.data, r->body.len, "filename=\"image.png\"", 20));
    ck_assert(memmem(r->body.data, r->body.len, "Content-Type: image/png", 23));
    ck_assert(memmem(r->body.data, r->body.len, PNG.data, PNG.len));

    r = fake_http_request(F, 2);
    ck_assert_str_eq(r->path, "/openapi/v2/video/img/generate");
    ck_assert_str_eq(fake_request_header(r, "Content-Type"), "application/json");
    /* The id goes back exactly as it came, as an integer. */
    ck_assert_msg(memmem(r->body.data, r->body.len, "\"img_id\":627410861853514292", 27), "body %s",
                  buf_str(&r->body));
    body = json_loadb(r->body.data, r->body.len, 0, NULL);
    ck_assert_uint_eq(json_object_size(body), 5);
    ck_assert(json_integer_value(json_object_get(body, "img_id")) == 627410861853514292LL);
    ck_assert_str_eq(json_str_or(body, "model", ""), "v5");
    ck_assert_str_eq(json_str_or(body, "prompt", ""), "Push in slowly");
    ck_assert_int_eq(json_int_or(body, "duration", 0), 5);
    ck_assert_str_eq(json_str_or(body, "quality", ""), "540p");
    json_decref(body);
    assert_trace_ids_fresh();

    /* motion_mode and seed when asked for (and allowed); the batch prompt, then the default. */
    fake_http_reset(F);
    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":5}"));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"video_id\":6}"));
    fake_submit(p, NULL,
                "{\"model\":\"v4.5\",\"motionMode\":\"fast\",\"seed\":7,\"quality\":\"720p\","
                "\"prompt\":\"batch prompt\"}",
                &out);
    assert_outcome(&out, S, "");
    ck_assert_str_eq(out.job_id, "6");
    r = fake_http_request(F, 2);
    body = json_loadb(r->body.data, r->body.len, 0, NULL);
    ck_assert_str_eq(json_str_or(body, "model", ""), "v4.5");
    ck_assert_str_eq(json_str_or(body, "motion_mode", ""), "fast");
    ck_assert_int_eq(json_int_or(body, "seed", -1), 7);
    ck_assert_str_eq(json_str_or(body, "quality", ""), "720p");
    ck_assert_str_eq(json_str_or(body, "prompt", ""), "batch prompt");
    json_decref(body);
    fake_http_reset(F);
    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":5}"));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"video_id\":7}"));
    fake_submit(p, NULL, NULL, &out);
    body =
        json_loadb(fake_http_request(F, 2)->body.data, fake_http_request(F, 2)->body.len, 0, NULL);
    ck_assert_str_eq(json_str_or(body, "prompt", ""), PIXVERSE_DEFAULT_PROMPT);
    json_decref(body);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(retries_get_fresh_trace_ids)
{
    struct provider *p = fake_provider(false);
    struct fake_answer busy = {503, "text/html", HTML, 0, NULL, 0};
    struct provider_output out;

    push_png();
    fake_http_push(F, &busy);
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":11}"));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"video_id\":12}"));
    provider_output_init(&out, 1 << 20);
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, S, "");
    ck_assert_uint_eq(fake_http_count(F), 4); /* the upload was retried: it is not billed */
    ck_assert_str_eq(fake_http_request(F, 1)->path, "/openapi/v2/image/upload");
    ck_assert_str_eq(fake_http_request(F, 2)->path, "/openapi/v2/image/upload");
    assert_trace_ids_fresh();

    /* The result GET is retried too, each attempt with its own trace id. */
    fake_http_reset(F);
    fake_http_push(F, &busy);
    fake_http_push_json(F, 200, STATUS(5, ""));
    ck_assert_int_eq(p->poll(p, "9223372036854775807", &out), ST_OK);
    assert_outcome(&out, R, "");
    ck_assert_uint_eq(fake_http_count(F), 2);
    ck_assert_str_eq(fake_http_request(F, 1)->method, "GET");
    ck_assert_str_eq(fake_http_request(F, 1)->path, "/openapi/v2/video/result/9223372036854775807");
    assert_trace_ids_fresh();
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(unknown_image_id_uploads_once_more)
{
    struct provider *p = fake_provider(false);
    struct provider_output out;
    json_t *body;

    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":627410861853514292}"));
    fake_http_push_json(F, 200, ERR(400032));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":627410861853514299}"));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"video_id\":99}"));
    provider_output_init(&out, 1 << 20);
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, S, "");
    ck_assert_uint_eq(fake_http_count(F), 5);
    body =
        json_loadb(fake_http_request(F, 4)->body.data, fake_http_request(F, 4)->body.len, 0, NULL);
    ck_assert(json_integer_value(json_object_get(body, "img_id")) == 627410861853514299LL);
    json_decref(body);

    /* Twice unknown: final. */
    fake_http_reset(F);
    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":1}"));
    fake_http_push_json(F, 200, ERR(400032));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":2}"));
    fake_http_push_json(F, 200, ERR(400032));
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, P, "provider_invalid_image_id");
    ck_assert_uint_eq(fake_http_count(F), 5);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(generate_is_never_retried)
{
    struct provider *p = fake_provider(false);
    struct provider *failing = fake_provider(true);
    struct fake_answer html500 = {500, "text/html", HTML, 0, NULL, 0};
    struct fake_answer slow = {
        200, "application/json", ENV(0, "success", "{\"video_id\":1}"), 0, NULL, 1500};
    struct provider_output out;

    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":1}"));
    fake_http_push(F, &html500);
    fake_http_push(F, &html500);
    provider_output_init(&out, 1 << 20);
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, T, "provider_unavailable");
    ck_assert_uint_eq(fake_http_count(F), 3); /* one generate: each is billed */

    fake_http_reset(F);
    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":1}"));
    fake_http_push(F, &slow);
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, T, "provider_submit_unknown");
    fake_http_reset(F);
    push_png();
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":1}"));
    fake_http_push(F, &slow);
    fake_submit(failing, "Pan", NULL, &out);
    assert_outcome(&out, P, "provider_submit_unknown");
    provider_output_release(&out);
    provider_free(failing);
    provider_free(p);
}
END_TEST

START_TEST(image_problems_stop_before_upload)
{
    static const uint8_t heic[] = "\0\0\0\x18"
                                  "ftypheic\0\0\0\0mif1heic";
    struct provider *p = fake_provider(false);
    struct fake_answer a = {200, "image/heic", heic, sizeof(heic) - 1, NULL, 0};
    struct fake_answer missing = {404, "text/plain", "nope", 0, NULL, 0};
    struct provider_output out;

    provider_output_init(&out, 1 << 20);
    fake_http_push(F, &a);
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, P, "image_unsupported_type");
    fake_http_push(F, &missing);
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, P, "image_fetch_failed");
    fake_submit(p, "Pan", "{\"duration\":9}", &out);
    assert_outcome(&out, P, "invalid_options");
    ck_assert_uint_eq(fake_http_count(F), 2); /* the two image fetches, nothing else */
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(image_from_the_caller_is_not_fetched)
{
    struct provider *p = fake_provider(false);
    struct provider_output out;
    struct provider_input in = {
        .item_id = "i_cached",
        .type = "video-pixverse",
        .image_url = "https://partner.example/never-fetched.png",
        .attempt = 1,
        .image_data = NULL,
        .image_type = "image/png",
    };

    in.image_data = PNG.data;
    in.image_len = PNG.len;
    fake_http_push_json(F, 200, ENV(0, "success", "{\"img_id\":21}"));
    fake_http_push_json(F, 200, ENV(0, "success", "{\"video_id\":22}"));
    provider_output_init(&out, 1 << 20);
    ck_assert_int_eq(p->submit(p, &in, &out), ST_OK);
    assert_outcome(&out, S, "");
    ck_assert_uint_eq(fake_http_count(F), 2);
    ck_assert_str_eq(fake_http_request(F, 0)->path, "/openapi/v2/image/upload");
    ck_assert(memmem(fake_http_request(F, 0)->body.data, fake_http_request(F, 0)->body.len,
                     PNG.data, PNG.len));
    in.image_type = "image/heic";
    p->submit(p, &in, &out);
    assert_outcome(&out, P, "image_unsupported_type");
    ck_assert_uint_eq(fake_http_count(F), 2);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(poll_downloads_and_bad_ids)
{
    static const char *const bad[] = {"abc", "-5", "0", "9223372036854775808", "", "12 "};
    struct provider *p = fake_provider(false);
    struct fake_answer video = {200, "video/mp4", NULL, 0, NULL, 0};
    struct provider_output out;
    struct mp4_info info;
    struct error err;
    char result[512];
    struct buf mp4;
    size_t i;

    buf_init(&mp4, 1 << 20);
    ck_assert_int_eq(mp4_build(&mp4, 48, 32, 5, 2), ST_OK);
    video.body = mp4.data;
    video.body_len = mp4.len;
    snprintf(result, sizeof(result), STATUS(1, ",\"url\":\"%s/v/abc.mp4\""), fake_http_url(F));
    fake_http_push_json(F, 200, result);
    fake_http_push(F, &video);
    provider_output_init(&out, 8 << 20);
    ck_assert_int_eq(p->poll(p, "9223372036854775807", &out), ST_OK);
    assert_outcome(&out, D, "");
    ck_assert_str_eq(out.content_type, "video/mp4");
    ck_assert_mem_eq(out.data.data + 4, "ftyp", 4);
    ck_assert(mp4_parse(out.data.data, out.data.len, &info));
    ck_assert_int_eq(info.samples, 5);
    ck_assert_str_eq(fake_http_request(F, 1)->path, "/v/abc.mp4");
    ck_assert_ptr_null(fake_request_header(fake_http_request(F, 1), "API-KEY"));

    fake_http_reset(F);
    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        p->poll(p, bad[i], &out);
        assert_outcome(&out, P, "provider_job_invalid");
    }
    /* No cancel endpoint: nothing is sent. */
    ck_assert_int_eq(p->cancel(p, "9223372036854775807", &err), ST_OK);
    ck_assert_uint_eq(fake_http_count(F), 0);

    /* The key never shows in a message, even when the peer echoes it. */
    push_png();
    fake_http_push_json(F, 401, ENV(10005, "Invalid API-KEY " KEY, "null"));
    fake_submit(p, "Pan", NULL, &out);
    assert_outcome(&out, P, "provider_auth_failed");
    ck_assert_msg(!strstr(out.error_message, KEY), "message %s", out.error_message);
    provider_output_release(&out);
    buf_release(&mp4);
    provider_free(p);
}
END_TEST

START_TEST(provider_new_validates)
{
    struct pixverse_options o = {.api_key = KEY};
    struct provider *p = provider_pixverse_new(&o, C);

    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p->name, "pixverse");
    ck_assert(p->async);
    provider_free(p);
    o.api_key = NULL;
    ck_assert_ptr_null(provider_pixverse_new(&o, C));
    o.api_key = KEY;
    o.base_url = "app-api.pixverse.ai";
    ck_assert_ptr_null(provider_pixverse_new(&o, C));
    o.base_url = NULL;
    o.model = "v9";
    ck_assert_ptr_null(provider_pixverse_new(&o, C));
    o.model = "c1";
    o.quality = "8k";
    ck_assert_ptr_null(provider_pixverse_new(&o, C));
    o.quality = "1080p";
    p = provider_pixverse_new(&o, C);
    ck_assert_ptr_nonnull(p);
    provider_free(p);
}
END_TEST

/* ---- end to end against provider-sim ------------------------------------------- */

#define JOB_MS 300

static struct sim_proc SIM;

static void sim_setup(void)
{
    static const char *const env[] = {
        "SIM_JOB_MS=300",         "SIM_PIXVERSE_CONCURRENCY=3", "SIM_PIXVERSE_API_KEY=" SIM_KEY,
        "SIM_FAIL_RATE=0",        "SIM_TIMEOUT_RATE=0",         "SIM_LATENCY_MS=0",
        "SHUTDOWN_GRACE_MS=3000", "LOG_LEVEL=WARNING",          NULL};

    ck_assert_msg(sim_proc_start(&SIM, SIM_BIN, env), "provider-sim did not start");
    C = http_client_new(&(struct http_client_options){.retry_base_ms = 10, .retry_cap_ms = 50});
}

static void sim_teardown(void)
{
    http_client_free(C);
    C = NULL;
    ck_assert_int_eq(sim_proc_stop(&SIM), 0);
}

static struct provider *sim_provider(const char *key)
{
    struct pixverse_options o = {
        .base_url = SIM.url,
        .api_key = key ? key : SIM_KEY,
        .submit_timeout_ms = 5000,
        .upload_max_attempts = 2,
        .allow_insecure = true,
    };
    struct provider *p = provider_pixverse_new(&o, C);

    ck_assert_ptr_nonnull(p);
    return p;
}

static long sim_call(const char *method, const char *path, const char *const *headers,
                     const char *body, json_t **json)
{
    char url[256];
    struct http_call call = {.method = method, .url = url, .headers = headers, .timeout_ms = 5000};
    struct http_result res;
    struct error err;
    long status;

    ck_assert(str_printf(url, sizeof(url), "%s%s", SIM.url, path));
    if (body) {
        call.body = body;
        call.body_len = strlen(body);
    }
    http_result_init(&res);
    ck_assert_int_eq(http_client_do(C, &call, &res, &err), ST_OK);
    status = res.status;
    if (json)
        *json = json_loadb(res.body.data ? res.body.data : "", res.body.len, 0, NULL);
    http_result_release(&res);
    return status;
}

static json_t *px_stats(void)
{
    json_t *s = NULL, *px;

    ck_assert_int_eq(sim_call("GET", "/stats", NULL, NULL, &s), 200);
    px = json_incref(json_object_get(s, "pixverse"));
    json_decref(s);
    return px;
}

static void sim_control(const char *body)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};

    ck_assert_int_eq(sim_call("POST", "/control", hdrs, body, NULL), 200);
}

static void poll_until_done(struct provider *p, const char *job_id, struct provider_output *out)
{
    int64_t deadline = time_mono_ms() + 15000;

    for (;;) {
        ck_assert_int_eq(p->poll(p, job_id, out), ST_OK);
        if (out->outcome != PROVIDER_RUNNING)
            return;
        ck_assert_msg(time_mono_ms() < deadline, "video %s never finished", job_id);
        time_sleep_ms(40);
    }
}

static void sim_submit(struct provider *p, int demo, const char *prompt, const char *options,
                       struct provider_output *out)
{
    char url[128];

    ck_assert(str_printf(url, sizeof(url), "%s/demo/%d.png?w=64&h=48", SIM.url, demo));
    submit(p, url, prompt, options, out);
}

START_TEST(sim_submit_poll_done)
{
    struct provider *p = sim_provider(NULL);
    struct provider_output out;
    struct mp4_info info;
    char job[64];
    json_t *st;
    int64_t video_id;

    sim_call("POST", "/stats/reset", NULL, NULL, NULL);
    provider_output_init(&out, 64 << 20);
    sim_submit(p, 1, "Push in through the kitchen", "{\"quality\":\"720p\"}", &out);
    assert_outcome(&out, S, "");
    ck_assert(pixverse_job_id_parse(out.job_id, &video_id));
    ck_assert(video_id > (1LL << 53)); /* the sim's ids are beyond a double's precision */
    str_copy(job, sizeof(job), out.job_id);
    poll_until_done(p, job, &out);
    assert_outcome(&out, D, "");
    ck_assert_str_eq(out.content_type, "video/mp4");
    ck_assert_mem_eq(out.data.data + 4, "ftyp", 4);
    ck_assert(mp4_parse(out.data.data, out.data.len, &info));
    ck_assert_str_eq(info.codec, "avc1");
    ck_assert_int_eq(info.samples, 5);

    st = px_stats();
    ck_assert_int_eq(json_int_or(st, "uploads", -1), 1);
    ck_assert_int_eq(json_int_or(st, "submits", -1), 1);
    ck_assert_uint_eq(json_object_size(json_object_get(st, "byImage")), 1);
    ck_assert_int_eq(json_int_or(st, "traceIdReuses", -1), 0);
    ck_assert_int_eq(json_int_or(st, "traceIds", -1), json_int_or(st, "calls", -2));
    json_decref(st);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

struct keyword_row {
    const char *prompt;
    bool at_submit;
    enum provider_outcome want;
    const char *code;
    int min_retry;
    bool pause, resubmit;
};

static const struct keyword_row keyword_rows[] = {
    {"Pan. [moderation]", false, P, "provider_moderation", 0, false, false},
    {"Pan. [nobalance]", true, P, "provider_no_credits", 0, true, false},
    {"Pan. [busy]", true, T, "provider_concurrency_limit", PIXVERSE_BUSY_RETRY_S, false, false},
    {"Pan. [imagemod]", true, P, "provider_moderation", 0, false, false},
    {"Pan. [highload]", true, T, "provider_overloaded", PIXVERSE_BUSY_RETRY_S, false, false},
};

START_TEST(sim_keywords)
{
    const struct keyword_row *r = &keyword_rows[_i];
    struct provider *p = sim_provider(NULL);
    struct provider_output out;
    char job[64];

    provider_output_init(&out, 64 << 20);
    sim_submit(p, 100 + _i, r->prompt, NULL, &out);
    if (!r->at_submit) {
        assert_outcome(&out, S, "");
        str_copy(job, sizeof(job), out.job_id);
        poll_until_done(p, job, &out);
    }
    assert_outcome(&out, r->want, r->code);
    ck_assert_int_ge(out.retry_after_s, r->min_retry);
    ck_assert_int_eq(out.pause_batch, r->pause);
    ck_assert_int_eq(out.resubmit, r->resubmit);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_failed_then_resubmission)
{
    struct provider *p = sim_provider(NULL);
    struct provider_output out;
    char job[64];
    json_t *st;

    provider_output_init(&out, 64 << 20);
    sim_submit(p, 200, "Pan. [failed]", NULL, &out);
    assert_outcome(&out, S, "");
    str_copy(job, sizeof(job), out.job_id);
    poll_until_done(p, job, &out);
    assert_outcome(&out, T, "provider_job_failed");
    ck_assert(out.resubmit);
    sim_submit(p, 200, "Pan. [failed]", NULL, &out);
    assert_outcome(&out, S, "");
    str_copy(job, sizeof(job), out.job_id);
    poll_until_done(p, job, &out);
    assert_outcome(&out, D, "");
    st = px_stats();
    ck_assert_int_eq(json_int_or(st, "traceIdReuses", -1), 0);
    json_decref(st);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_concurrency_limit)
{
    struct provider *p = sim_provider(NULL);
    struct provider_output out;
    char jobs[3][64];
    int i;

    time_sleep_ms(JOB_MS + 50);      /* earlier tests' videos are done */
    sim_control("{\"jobMs\":1500}"); /* the fourth submit must come while three run */
    provider_output_init(&out, 64 << 20);
    for (i = 0; i < 3; i++) {
        sim_submit(p, 300 + i, "Pan.", NULL, &out);
        assert_outcome(&out, S, "");
        str_copy(jobs[i], sizeof(jobs[i]), out.job_id);
    }
    sim_submit(p, 303, "Pan.", NULL, &out);
    assert_outcome(&out, T, "provider_concurrency_limit");
    ck_assert_int_ge(out.retry_after_s, 30);
    sim_control("{\"jobMs\":300}");
    for (i = 0; i < 3; i++) {
        poll_until_done(p, jobs[i], &out);
        assert_outcome(&out, D, "");
    }
    sim_submit(p, 303, "Pan.", NULL, &out); /* slots are free again */
    assert_outcome(&out, S, "");
    str_copy(jobs[0], sizeof(jobs[0]), out.job_id);
    poll_until_done(p, jobs[0], &out);
    assert_outcome(&out, D, "");
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_down_faults_and_wrong_key)
{
    struct provider *p = sim_provider(NULL);
    struct provider *bad = sim_provider("px-wrong-key");
    struct provider_output out;

    provider_output_init(&out, 64 << 20);
    sim_control("{\"pixverseDown\":true}");
    sim_submit(p, 400, "Pan.", NULL, &out);
    assert_outcome(&out, T, "provider_unavailable");
    sim_control("{\"pixverseDown\":false,\"failRate\":1}");
    sim_submit(p, 401, "Pan.", NULL, &out);
    assert_outcome(&out, T, "provider_unavailable"); /* HTTP 500 with an HTML body */
    sim_control("{\"failRate\":0}");
    sim_submit(bad, 402, "Pan.", NULL, &out);
    assert_outcome(&out, P, "provider_auth_failed");
    ck_assert(!strstr(out.error_message, "px-wrong-key"));
    provider_output_release(&out);
    provider_free(bad);
    provider_free(p);
}
END_TEST

START_TEST(sim_validates_like_pixverse)
{
    static const char *const key_only[] = {"API-KEY: " SIM_KEY, NULL};
    static const char *const same_trace[] = {"API-KEY: " SIM_KEY,
                                             "Ai-trace-id: 0b5c3a9e-2f43-4c1e-9a57-1d2e3f4a5b6c",
                                             "Content-Type: application/json", NULL};
    json_t *j = NULL, *st;
    int64_t reuses;

    ck_assert_int_eq(sim_call("GET", "/openapi/v2/video/result/1", key_only, NULL, &j), 400);
    ck_assert_int_eq(json_int_or(j, "ErrCode", 0), 400017);
    json_decref(j);
    st = px_stats();
    reuses = json_int_or(st, "traceIdReuses", -1);
    json_decref(st);
    ck_assert_int_eq(
        sim_call("GET", "/openapi/v2/video/result/9223372036854775807", same_trace, NULL, &j), 200);
    ck_assert_int_eq(json_int_or(j, "ErrCode", 0), 500008);
    json_decref(j);
    ck_assert_int_eq(sim_call("POST", "/openapi/v2/video/img/generate", same_trace,
                              "{\"img_id\":1,\"model\":\"v9\",\"prompt\":\"p\",\"duration\":5,"
                              "\"quality\":\"540p\"}",
                              &j),
                     200);
    ck_assert_int_eq(json_int_or(j, "ErrCode", 0), 400017);
    json_decref(j);
    st = px_stats();
    ck_assert_int_eq(json_int_or(st, "traceIdReuses", -1), reuses + 1);
    json_decref(st);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pixverse");
    TCase *pure = tcase_create("pure");
    TCase *net = tcase_create("fake");
    TCase *sim = tcase_create("sim");

    tcase_add_loop_test(pure, classify_table, 0, (int)ARRAY_SIZE(classify_rows));
    tcase_add_test(pure, errcode_messages);
    tcase_add_test(pure, ids_are_exact);
    tcase_add_test(pure, job_ids);
    tcase_add_loop_test(pure, options_table, 0, (int)ARRAY_SIZE(option_rows));
    tcase_add_test(pure, prompt_length);
    suite_add_tcase(s, pure);

    tcase_add_unchecked_fixture(net, fake_setup, fake_teardown);
    tcase_set_timeout(net, 60);
    tcase_add_test(net, submit_request_shape);
    tcase_add_test(net, retries_get_fresh_trace_ids);
    tcase_add_test(net, unknown_image_id_uploads_once_more);
    tcase_add_test(net, generate_is_never_retried);
    tcase_add_test(net, image_problems_stop_before_upload);
    tcase_add_test(net, image_from_the_caller_is_not_fetched);
    tcase_add_test(net, poll_downloads_and_bad_ids);
    tcase_add_test(net, provider_new_validates);
    suite_add_tcase(s, net);

    tcase_add_unchecked_fixture(sim, sim_setup, sim_teardown);
    tcase_set_timeout(sim, 120);
    tcase_add_test(sim, sim_submit_poll_done);
    tcase_add_loop_test(sim, sim_keywords, 0, (int)ARRAY_SIZE(keyword_rows));
    tcase_add_test(sim, sim_failed_then_resubmission);
    tcase_add_test(sim, sim_concurrency_limit);
    tcase_add_test(sim, sim_down_faults_and_wrong_key);
    tcase_add_test(sim, sim_validates_like_pixverse);
    suite_add_tcase(s, sim);
    return s;
}
