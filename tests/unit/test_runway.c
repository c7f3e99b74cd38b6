/*
 * test_runway.c - the Runway provider: classification tables over canned
 * answers, option validation, request shapes against a scripted local
 * server (fake_http.h), and end to end against provider-sim (SIM_BIN).
 */
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fake_http.h"
#include "http/client.h"
#include "mp4.h"
#include "providers/runway.h"
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

#define KEY     "key_test_0123456789abcdef"
#define SIM_KEY "key_sim_secret_42"
#define TASK(status, extra)                                                                        \
    "{\"id\":\"d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892\",\"status\":\"" status                        \
    "\",\"createdAt\":\"2024-06-27T19:49:32.335Z\"" extra "}"
#define FAILED(code) TASK("FAILED", ",\"failure\":\"It failed.\",\"failureCode\":\"" code "\"")
#define OUT_URL      "https://dnznrvs05pmza.cloudfront.net/a/output.mp4?_jwt=secret"

/* ---- classification ------------------------------------------------------------ */

struct classify_row {
    const char *name;
    enum runway_call call;
    enum status transport;
    bool sent;
    long http;
    const char *body;
    int retry_after; /* Retry-After header */
    enum provider_outcome want;
    const char *code;
    int want_retry;
    bool pause;
    bool resubmit;
    const char *value; /* STARTED: job id; DONE: output url */
    double progress;   /* RUNNING */
};

static const struct classify_row classify_rows[] = {
    /* submit: answers */
    {"created", RUNWAY_SUBMIT, ST_OK, true, 200,
     "{\"id\":\"d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892\"}", 0, S, "", 0, false, false,
     "d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892", 0},
    {"created with a cost", RUNWAY_SUBMIT, ST_OK, true, 200,
     "{\"id\":\"abc-123\",\"estimatedCost\":{\"credits\":25}}", 0, S, "", 0, false, false,
     "abc-123", 0},
    {"id unusable in a path", RUNWAY_SUBMIT, ST_OK, true, 200, "{\"id\":\"../../etc\"}", 0, T,
     "provider_submit_unknown", 0, false, false, NULL, 0},
    {"no id", RUNWAY_SUBMIT, ST_OK, true, 200, "{}", 0, T, "provider_submit_unknown", 0, false,
     false, NULL, 0},
    {"200 not json", RUNWAY_SUBMIT, ST_OK, true, 200, "<html>ok</html>", 0, T,
     "provider_submit_unknown", 0, false, false, NULL, 0},
    {"no credits", RUNWAY_SUBMIT, ST_OK, true, 400,
     "{\"error\":\"You do not have enough credits to run this task.\"}", 0, P,
     "provider_no_credits", 0, true, false, NULL, 0},
    {"validation", RUNWAY_SUBMIT, ST_OK, true, 400,
     "{\"error\":\"Validation of body failed\",\"issues\":[{\"code\":\"invalid_value\",\"path\":["
     "\"ratio\"],\"message\":\"Invalid "
     "option\"}],\"docUrl\":\"https://docs.dev.runwayml.com/api\"}",
     0, P, "provider_invalid_request", 0, false, false, NULL, 0},
    {"asset fetch", RUNWAY_SUBMIT, ST_OK, true, 400,
     "{\"error\":\"Invalid asset promptImage: failed to fetch the asset (HTTP 404).\"}", 0, P,
     "provider_asset_invalid", 0, false, false, NULL, 0},
    {"unsupported legacy model", RUNWAY_SUBMIT, ST_OK, true, 400,
     "{\"error\":\"Validation of body failed\",\"issues\":[{\"code\":\"invalid_union\"}]}", 0, P,
     "provider_invalid_request", 0, false, false, NULL, 0},
    {"401", RUNWAY_SUBMIT, ST_OK, true, 401, "{\"error\":\"Unauthorized\"}", 0, P,
     "provider_auth_failed", 0, false, false, NULL, 0},
    {"403", RUNWAY_SUBMIT, ST_OK, true, 403, "", 0, P, "provider_auth_failed", 0, false, false,
     NULL, 0},
    {"404 endpoint", RUNWAY_SUBMIT, ST_OK, true, 404, "", 0, P, "provider_config", 0, false, false,
     NULL, 0},
    {"405", RUNWAY_SUBMIT, ST_OK, true, 405, "", 0, P, "provider_config", 0, false, false, NULL, 0},
    {"413", RUNWAY_SUBMIT, ST_OK, true, 413, "", 0, P, "provider_invalid_request", 0, false, false,
     NULL, 0},
    {"422", RUNWAY_SUBMIT, ST_OK, true, 422, "{}", 0, P, "provider_invalid_request", 0, false,
     false, NULL, 0},
    {"429 daily cap", RUNWAY_SUBMIT, ST_OK, true, 429, "{\"error\":\"Daily limit reached\"}", 0, T,
     "provider_rate_limited", RUNWAY_DAILY_LIMIT_RETRY_S, false, false, NULL, 0},
    {"429 longer retry-after", RUNWAY_SUBMIT, ST_OK, true, 429, "", 3600, T,
     "provider_rate_limited", 3600, false, false, NULL, 0},
    {"408", RUNWAY_SUBMIT, ST_OK, true, 408, "", 0, T, "provider_timeout", 0, false, false, NULL,
     0},
    {"409", RUNWAY_SUBMIT, ST_OK, true, 409, "", 0, T, "provider_unavailable", 0, false, false,
     NULL, 0},
    {"500", RUNWAY_SUBMIT, ST_OK, true, 500, "{\"error\":\"Internal\"}", 0, T,
     "provider_unavailable", 0, false, false, NULL, 0},
    {"502", RUNWAY_SUBMIT, ST_OK, true, 502, "<html>bad gateway</html>", 0, T,
     "provider_unavailable", 0, false, false, NULL, 0},
    {"503 retry-after", RUNWAY_SUBMIT, ST_OK, true, 503, "", 5, T, "provider_unavailable", 5, false,
     false, NULL, 0},
    {"504", RUNWAY_SUBMIT, ST_OK, true, 504, "", 0, T, "provider_timeout", 0, false, false, NULL,
     0},
    {"301", RUNWAY_SUBMIT, ST_OK, true, 301, "", 0, P, "provider_bad_response", 0, false, false,
     NULL, 0},
    /* submit: no answer */
    {"refused, nothing sent", RUNWAY_SUBMIT, ST_UNAVAILABLE, false, 0, NULL, 0, T,
     "provider_unavailable", 0, false, false, NULL, 0},
    {"connect timeout, nothing sent", RUNWAY_SUBMIT, ST_TIMEOUT, false, 0, NULL, 0, T,
     "provider_timeout", 0, false, false, NULL, 0},
    {"timeout after sending", RUNWAY_SUBMIT, ST_TIMEOUT, true, 0, NULL, 0, T,
     "provider_submit_unknown", 0, false, false, NULL, 0},
    {"reset after sending", RUNWAY_SUBMIT, ST_UNAVAILABLE, true, 0, NULL, 0, T,
     "provider_submit_unknown", 0, false, false, NULL, 0},
    {"answer over the cap", RUNWAY_SUBMIT, ST_TOO_LARGE, true, 200, NULL, 0, T,
     "provider_submit_unknown", 0, false, false, NULL, 0},
    {"bad base url", RUNWAY_SUBMIT, ST_INVALID, false, 0, NULL, 0, P, "provider_config", 0, false,
     false, NULL, 0},
    /* poll: task states */
    {"pending", RUNWAY_POLL, ST_OK, true, 200, TASK("PENDING", ""), 0, R, "", 0, false, false, NULL,
     0},
    {"throttled", RUNWAY_POLL, ST_OK, true, 200, TASK("THROTTLED", ""), 0, R, "", 0, false, false,
     NULL, 0},
    {"running", RUNWAY_POLL, ST_OK, true, 200, TASK("RUNNING", ",\"progress\":0.42"), 0, R, "", 0,
     false, false, NULL, 0.42},
    {"running over 1", RUNWAY_POLL, ST_OK, true, 200, TASK("RUNNING", ",\"progress\":1.7"), 0, R,
     "", 0, false, false, NULL, 1},
    {"running without progress", RUNWAY_POLL, ST_OK, true, 200, TASK("RUNNING", ""), 0, R, "", 0,
     false, false, NULL, 0},
    {"unknown state", RUNWAY_POLL, ST_OK, true, 200, TASK("ASSEMBLING", ""), 0, R, "", 0, false,
     false, NULL, 0},
    {"succeeded", RUNWAY_POLL, ST_OK, true, 200, TASK("SUCCEEDED", ",\"output\":[\"" OUT_URL "\"]"),
     0, D, "", 0, false, false, OUT_URL, 1},
    {"succeeded without output", RUNWAY_POLL, ST_OK, true, 200, TASK("SUCCEEDED", ",\"output\":[]"),
     0, T, "provider_bad_response", 0, false, false, NULL, 0},
    {"cancelled", RUNWAY_POLL, ST_OK, true, 200, TASK("CANCELLED", ""), 0, P, "provider_cancelled",
     0, false, false, NULL, 0},
    {"canceled", RUNWAY_POLL, ST_OK, true, 200, TASK("CANCELED", ""), 0, P, "provider_cancelled", 0,
     false, false, NULL, 0},
    {"no status", RUNWAY_POLL, ST_OK, true, 200, "{\"id\":\"x\"}", 0, T, "provider_bad_response", 0,
     false, false, NULL, 0},
    {"not json", RUNWAY_POLL, ST_OK, true, 200, "<html>", 0, T, "provider_bad_response", 0, false,
     false, NULL, 0},
    /* poll: failed tasks (providers.md 2.5) */
    {"safety input image", RUNWAY_POLL, ST_OK, true, 200, FAILED("SAFETY.INPUT.IMAGE"), 0, P,
     "provider_moderation", 0, false, false, NULL, 0},
    {"safety input text", RUNWAY_POLL, ST_OK, true, 200, FAILED("SAFETY.INPUT.TEXT"), 0, P,
     "provider_moderation", 0, false, false, NULL, 0},
    {"safety output", RUNWAY_POLL, ST_OK, true, 200, FAILED("SAFETY.OUTPUT.VIDEO"), 0, P,
     "provider_moderation", 0, false, false, NULL, 0},
    {"preprocessing safety", RUNWAY_POLL, ST_OK, true, 200,
     FAILED("INPUT_PREPROCESSING.SAFETY.TEXT"), 0, P, "provider_moderation", 0, false, false, NULL,
     0},
    {"asset invalid", RUNWAY_POLL, ST_OK, true, 200, FAILED("ASSET.INVALID"), 0, P,
     "provider_asset_invalid", 0, false, false, NULL, 0},
    {"bad output", RUNWAY_POLL, ST_OK, true, 200, FAILED("INTERNAL.BAD_OUTPUT.CODE01"), 0, T,
     "provider_bad_output", 0, false, true, NULL, 0},
    {"internal", RUNWAY_POLL, ST_OK, true, 200, FAILED("INTERNAL"), 0, T, "provider_job_failed", 0,
     false, true, NULL, 0},
    {"null code", RUNWAY_POLL, ST_OK, true, 200,
     TASK("FAILED", ",\"failure\":\"x\",\"failureCode\":null"), 0, T, "provider_job_failed", 0,
     false, true, NULL, 0},
    {"no code", RUNWAY_POLL, ST_OK, true, 200, TASK("FAILED", ""), 0, T, "provider_job_failed", 0,
     false, true, NULL, 0},
    {"preprocessing internal", RUNWAY_POLL, ST_OK, true, 200,
     FAILED("INPUT_PREPROCESSING.INTERNAL"), 0, T, "provider_job_failed", 0, false, true, NULL, 0},
    {"third party busy", RUNWAY_POLL, ST_OK, true, 200, FAILED("THIRD_PARTY.UNAVAILABLE"), 0, T,
     "provider_job_failed", RUNWAY_BUSY_RETRY_S, false, true, NULL, 0},
    {"unknown code", RUNWAY_POLL, ST_OK, true, 200, FAILED("QUANTUM.FLUX"), 0, T,
     "provider_job_failed", 0, false, true, NULL, 0},
    /* poll: HTTP errors */
    {"poll 400", RUNWAY_POLL, ST_OK, true, 400, "{\"error\":\"bad id\"}", 0, P,
     "provider_invalid_request", 0, false, false, NULL, 0},
    {"poll 401", RUNWAY_POLL, ST_OK, true, 401, "", 0, P, "provider_auth_failed", 0, false, false,
     NULL, 0},
    {"poll 404 gone", RUNWAY_POLL, ST_OK, true, 404, "{\"error\":\"Task not found.\"}", 0, P,
     "provider_job_not_found", 0, false, false, NULL, 0},
    {"poll 408", RUNWAY_POLL, ST_OK, true, 408, "", 0, T, "provider_timeout", 0, false, false, NULL,
     0},
    {"poll 429", RUNWAY_POLL, ST_OK, true, 429, "", 7, T, "provider_rate_limited", 7, false, false,
     NULL, 0},
    {"poll 500", RUNWAY_POLL, ST_OK, true, 500, "", 0, T, "provider_unavailable", 0, false, false,
     NULL, 0},
    {"poll 503", RUNWAY_POLL, ST_OK, true, 503, "", 3, T, "provider_unavailable", 3, false, false,
     NULL, 0},
    {"poll 504", RUNWAY_POLL, ST_OK, true, 504, "", 0, T, "provider_timeout", 0, false, false, NULL,
     0},
    {"poll timeout", RUNWAY_POLL, ST_TIMEOUT, true, 0, NULL, 0, T, "provider_timeout", 0, false,
     false, NULL, 0},
    {"poll reset", RUNWAY_POLL, ST_UNAVAILABLE, true, 0, NULL, 0, T, "provider_unavailable", 0,
     false, false, NULL, 0},
    {"poll over the cap", RUNWAY_POLL, ST_TOO_LARGE, true, 200, NULL, 0, T, "provider_bad_response",
     0, false, false, NULL, 0},
    {"poll bad url", RUNWAY_POLL, ST_PERMISSION_DENIED, false, 0, NULL, 0, P, "provider_config", 0,
     false, false, NULL, 0},
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

    provider_output_init(&out, 1 << 20);
    runway_classify(&reply, r->call, &out);
    ck_assert_msg(out.outcome == r->want, "%s: outcome %s, want %s (%s)", r->name,
                  provider_outcome_name(out.outcome), provider_outcome_name(r->want),
                  out.error_message);
    ck_assert_msg(strcmp(out.error_code, r->code) == 0, "%s: code \"%s\", want \"%s\"", r->name,
                  out.error_code, r->code);
    ck_assert_msg(out.retry_after_s == r->want_retry, "%s: retry after %d, want %d", r->name,
                  out.retry_after_s, r->want_retry);
    ck_assert_msg(out.pause_batch == r->pause, "%s: pause_batch %d", r->name, out.pause_batch);
    ck_assert_msg(out.resubmit == r->resubmit, "%s: resubmit %d", r->name, out.resubmit);
    if (r->want == S)
        ck_assert_str_eq(out.job_id, r->value);
    if (r->want == D)
        ck_assert_str_eq(out.output_url, r->value);
    if (r->want == R || r->want == D)
        ck_assert_msg(out.progress == r->progress, "%s: progress %g, want %g", r->name,
                      out.progress, r->progress);
    if (r->want == T || r->want == P)
        ck_assert_msg(str_starts_with(out.error_message, "runway "), "%s: message \"%s\"", r->name,
                      out.error_message);
    else
        ck_assert_str_eq(out.error_message, "");
    provider_output_release(&out);
}
END_TEST

START_TEST(failure_messages_quote_runway)
{
    struct provider_output out;
    char failure[600];

    provider_output_init(&out, 1024);
    memset(failure, 'x', sizeof(failure) - 1);
    failure[sizeof(failure) - 1] = '\0';
    runway_classify_failure("SAFETY.INPUT.IMAGE", "Your image\ncontains a person.", &out);
    ck_assert_str_eq(out.error_message,
                     "runway refused the content (SAFETY.INPUT.IMAGE): Your image contains a "
                     "person.");
    runway_classify_failure(NULL, failure, &out);
    ck_assert_msg(strstr(out.error_message, "(null): xxx") && strstr(out.error_message, "..."),
                  "message: %s", out.error_message);
    ck_assert_uint_lt(strlen(out.error_message), 200);
    provider_output_release(&out);
}
END_TEST

/* ---- options --------------------------------------------------------------------- */

struct option_row {
    const char *json; /* NULL: no options */
    unsigned flags;
    bool ok;
    const char *model, *ratio; /* resolved, when ok */
    int duration;
    const char *says; /* a piece of the message, when not ok */
};

static const struct option_row option_rows[] = {
    {NULL, 0, true, "gen4_turbo", "1280:720", 5, NULL},
    {"{}", 0, true, "gen4_turbo", "1280:720", 5, NULL},
    {"{\"other\":1,\"aspectRatio\":\"4:3\"}", 0, true, "gen4_turbo", "1280:720", 5, NULL},
    {"{\"model\":\"gen4_turbo\",\"ratio\":\"720:1280\",\"duration\":2}", 0, true, "gen4_turbo",
     "720:1280", 2, NULL},
    {"{\"ratio\":\"1104:832\",\"duration\":10}", 0, true, "gen4_turbo", "1104:832", 10, NULL},
    {"{\"ratio\":\"832:1104\"}", 0, true, "gen4_turbo", "832:1104", 5, NULL},
    {"{\"ratio\":\"960:960\"}", 0, true, "gen4_turbo", "960:960", 5, NULL},
    {"{\"ratio\":\"1584:672\"}", 0, true, "gen4_turbo", "1584:672", 5, NULL},
    {"{\"model\":\"gen4.5\"}", 0, true, "gen4.5", "1280:720", 5, NULL},
    {"{\"model\":\"gen4.5\",\"duration\":7,\"ratio\":\"960:960\"}", 0, true, "gen4.5", "960:960", 7,
     NULL},
    {"{\"model\":null,\"ratio\":null,\"duration\":null,\"seed\":null}", 0, true, "gen4_turbo",
     "1280:720", 5, NULL},
    {"{\"seed\":0}", 0, true, "gen4_turbo", "1280:720", 5, NULL},
    {"{\"seed\":4294967295}", 0, true, "gen4_turbo", "1280:720", 5, NULL},
    {"{\"model\":\"gen3a_turbo\"}", RUNWAY_ALLOW_LEGACY, true, "gen3a_turbo", "1280:768", 5, NULL},
    {"{\"model\":\"gen3a_turbo\",\"ratio\":\"768:1280\",\"duration\":10}", RUNWAY_ALLOW_LEGACY,
     true, "gen3a_turbo", "768:1280", 10, NULL},
    {"{\"model\":\"gen3a_turbo\"}", 0, false, NULL, NULL, 0, "\"model\""},
    {"{\"model\":\"gen3a_turbo\",\"ratio\":\"1280:720\"}", RUNWAY_ALLOW_LEGACY, false, NULL, NULL,
     0, "1280:768 or 768:1280"},
    {"{\"model\":\"gen3a_turbo\",\"duration\":7}", RUNWAY_ALLOW_LEGACY, false, NULL, NULL, 0,
     "5 or 10"},
    {"{\"model\":\"veo3\"}", 0, false, NULL, NULL, 0, "gen4_turbo or gen4.5"},
    {"{\"model\":5}", 0, false, NULL, NULL, 0, "must be a string"},
    {"{\"ratio\":\"1:1\"}", 0, false, NULL, NULL, 0, "\"ratio\": \"1:1\" is not 1280:720"},
    {"{\"ratio\":1280}", 0, false, NULL, NULL, 0, "\"ratio\""},
    {"{\"duration\":1}", 0, false, NULL, NULL, 0, "from 2 to 10"},
    {"{\"duration\":11}", 0, false, NULL, NULL, 0, "from 2 to 10"},
    {"{\"duration\":\"5\"}", 0, false, NULL, NULL, 0, "\"duration\""},
    {"{\"duration\":5.0}", 0, false, NULL, NULL, 0, "\"duration\""},
    {"{\"model\":\"gen4.5\",\"duration\":0}", 0, false, NULL, NULL, 0, "gen4.5"},
    {"{\"seed\":-1}", 0, false, NULL, NULL, 0, "\"seed\""},
    {"{\"seed\":4294967296}", 0, false, NULL, NULL, 0, "\"seed\""},
    {"{\"seed\":1.5}", 0, false, NULL, NULL, 0, "\"seed\""},
    {"{\"prompt\":7}", 0, false, NULL, NULL, 0, "\"prompt\""},
    {"[1,2]", 0, false, NULL, NULL, 0, "not a json object"},
};

START_TEST(options_table)
{
    const struct option_row *r = &option_rows[_i];
    json_t *o = r->json ? json_loads(r->json, 0, NULL) : NULL;
    struct runway_params p;
    struct error err;
    enum status st;

    ck_assert(!r->json || o);
    error_clear(&err);
    st = runway_resolve(o, NULL, r->flags, &p, &err);
    ck_assert_msg((st == ST_OK) == r->ok, "%s: status %s (%s)", r->json ? r->json : "NULL",
                  status_name(st), err.message);
    ck_assert_int_eq(runway_validate_options_flags(o, r->flags, NULL), st);
    if (r->flags == 0)
        ck_assert_int_eq(runway_validate_options(o, NULL), st);
    if (r->ok) {
        ck_assert_str_eq(p.model, r->model);
        ck_assert_str_eq(p.ratio, r->ratio);
        ck_assert_int_eq(p.duration, r->duration);
    } else {
        ck_assert_str_eq(err.code, "invalid_options");
        ck_assert_msg(strstr(err.message, r->says) &&
                          str_starts_with(err.message, "invalid runway"),
                      "%s: message \"%s\" lacks \"%s\"", r->json, err.message, r->says);
    }
    json_decref(o);
}
END_TEST

START_TEST(prompt_length_in_utf16_units)
{
    char text[4 * 501 + 1];
    json_t *o;
    size_t i;

    ck_assert_uint_eq(runway_utf16_length(""), 0);
    ck_assert_uint_eq(runway_utf16_length("abc"), 3);
    ck_assert_uint_eq(runway_utf16_length("caf\xc3\xa9"), 4);         /* é: one unit */
    ck_assert_uint_eq(runway_utf16_length("\xe2\x82\xac"), 1);        /* €: one unit */
    ck_assert_uint_eq(runway_utf16_length("\xf0\x9f\x8f\xa0 ok"), 5); /* 🏠: a surrogate pair */
    for (i = 0; i < 500; i++)
        memcpy(text + 4 * i, "\xf0\x9f\x8f\xa0", 4);
    text[4 * 500] = '\0';
    o = json_pack("{s:s}", "prompt", text);
    ck_assert_int_eq(runway_validate_options(o, NULL), ST_OK); /* 1000 units */
    json_decref(o);
    memcpy(text + 4 * 500, "\xf0\x9f\x8f\xa0", 4);
    text[4 * 501] = '\0';
    o = json_pack("{s:s}", "prompt", text);
    ck_assert_int_eq(runway_validate_options(o, NULL), ST_INVALID); /* 1002 units */
    json_decref(o);
    ck_assert_str_eq(runway_default_ratio("gen4_turbo"), "1280:720");
    ck_assert_str_eq(runway_default_ratio("gen3a_turbo"), "1280:768");
    ck_assert_ptr_null(runway_default_ratio("veo3"));
}
END_TEST

START_TEST(mp4_sniffing)
{
    static const struct {
        const char *bytes;
        size_t len;
        bool mp4;
    } rows[] = {
        {"\0\0\0\x18"
         "ftypisom\0\0\x02\0isomavc1",
         24, true},
        {"\0\0\0\x14"
         "ftypmp42\0\0\0\0mp42",
         20, true},
        {"\0\0\0\x1c"
         "ftypqt  \0\0\0\0qt  ",
         20, true},
        {"\0\0\0\x08"
         "moov",
         8, true},
        {"\0\0\0\x08"
         "free",
         8, true},
        {"\0\0\0\x18"
         "ftypheic\0\0\0\0mif1heic",
         24, false},
        {"\0\0\0\x14"
         "ftypavif\0\0\0\0avif",
         20, false},
        {"\0\0\0\x04"
         "ftypisom",
         12, false},
        {"\0\0\0\x18"
         "ftyp",
         8, false},
        {"<html><body>expired</body></html>", 33, false},
        {"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, false},
        {"", 0, false},
    };
    struct buf b;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(rows); i++)
        ck_assert_msg(video_sniff_mp4(rows[i].bytes, rows[i].len) == rows[i].mp4, "row %zu", i);
    buf_init(&b, 1 << 20);
    ck_assert_int_eq(mp4_build(&b, 32, 32, 2, 1), ST_OK);
    ck_assert(video_sniff_mp4(b.data, b.len));
    ck_assert(!video_sniff_mp4(NULL, 10));
    buf_release(&b);
}
END_TEST

/* ---- request shapes against a scripted server ------------------------------------ */

static struct fake_http *F;
static struct http_client *C;

static void fake_setup(void)
{
    F = fake_http_start();
    C = http_client_new(&(struct http_client_options){.retry_base_ms = 10, .retry_cap_ms = 50});
}

static void fake_teardown(void)
{
    fake_http_stop(F);
    http_client_free(C);
    F = NULL;
    C = NULL;
}

static struct provider *fake_provider(bool insecure, bool fail_ambiguous, const char *base)
{
    struct runway_options o = {
        .base_url = base ? base : fake_http_url(F),
        .api_key = KEY,
        .submit_timeout_ms = 500,
        .poll_timeout_ms = 2000,
        .poll_max_attempts = 2,
        .download_timeout_ms = 2000,
        .download_max_attempts = 1,
        .allow_insecure = insecure,
        .fail_ambiguous_submit = fail_ambiguous,
    };
    struct provider *p = provider_runway_new(&o, C);

    ck_assert_ptr_nonnull(p);
    fake_http_reset(F);
    return p;
}

static void submit(struct provider *p, const char *image_url, const char *item_prompt,
                   const char *options_json, struct provider_output *out)
{
    json_t *meta = item_prompt ? json_pack("{s:s}", "prompt", item_prompt) : NULL;
    json_t *opts = options_json ? json_loads(options_json, 0, NULL) : NULL;
    struct provider_input in = {
        .batch_id = "b_test",
        .item_id = "i_test",
        .type = "video-runway",
        .image_url = image_url,
        .metadata = meta,
        .options = opts,
        .attempt = 1,
    };

    ck_assert_int_eq(p->submit(p, &in, out), ST_OK);
    json_decref(meta);
    json_decref(opts);
}

static void assert_outcome(const struct provider_output *out, enum provider_outcome want,
                           const char *code)
{
    ck_assert_msg(out->outcome == want && strcmp(out->error_code, code) == 0,
                  "outcome %s %s, want %s %s (%s)", provider_outcome_name(out->outcome),
                  out->error_code, provider_outcome_name(want), code, out->error_message);
}

START_TEST(submit_request_shape)
{
    struct provider *p = fake_provider(false, false, NULL);
    struct provider_output out;
    const struct fake_request *r;
    json_t *body;

    fake_http_push_json(F, 200, "{\"id\":\"d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892\"}");
    provider_output_init(&out, 1 << 20);
    submit(p, "https://cdn.example.com/listing/1.jpg?sig=abc", "Slow dolly-in",
           "{\"ratio\":\"720:1280\",\"duration\":7,\"seed\":42,\"prompt\":\"batch prompt\"}", &out);
    assert_outcome(&out, S, "");
    ck_assert_str_eq(out.job_id, "d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892");
    ck_assert_uint_eq(fake_http_count(F), 1);
    r = fake_http_request(F, 0);
    ck_assert_str_eq(r->method, "POST");
    ck_assert_str_eq(r->path, "/v1/image_to_video");
    ck_assert_str_eq(fake_request_header(r, "Authorization"), "Bearer " KEY);
    ck_assert_str_eq(fake_request_header(r, "X-Runway-Version"), "2024-11-06");
    ck_assert_str_eq(fake_request_header(r, "Content-Type"), "application/json");
    body = json_loadb(r->body.data, r->body.len, 0, NULL);
    ck_assert_ptr_nonnull(body);
    ck_assert_uint_eq(json_object_size(body), 6);
    ck_assert_str_eq(json_str_or(body, "model", ""), "gen4_turbo");
    ck_assert_str_eq(json_str_or(body, "promptImage", ""),
                     "https://cdn.example.com/listing/1.jpg?sig=abc");
    ck_assert_str_eq(json_str_or(body, "promptText", ""), "Slow dolly-in");
    ck_assert_str_eq(json_str_or(body, "ratio", ""), "720:1280");
    ck_assert_int_eq(json_int_or(body, "duration", 0), 7);
    ck_assert_int_eq(json_int_or(body, "seed", 0), 42);
    json_decref(body);

    /* Defaults: the model's ratio, 5 s, the batch prompt, then the built-in one; no seed. */
    fake_http_reset(F);
    fake_http_push_json(F, 200, "{\"id\":\"t-2\"}");
    fake_http_push_json(F, 200, "{\"id\":\"t-3\"}");
    submit(p, "https://cdn.example.com/2.jpg", NULL, "{\"model\":\"gen4.5\",\"prompt\":\"pan\"}",
           &out);
    assert_outcome(&out, S, "");
    submit(p, "https://cdn.example.com/3.jpg", NULL, NULL, &out);
    assert_outcome(&out, S, "");
    ck_assert_str_eq(out.job_id, "t-3");
    r = fake_http_request(F, 0);
    body = json_loadb(r->body.data, r->body.len, 0, NULL);
    ck_assert_str_eq(json_str_or(body, "model", ""), "gen4.5");
    ck_assert_str_eq(json_str_or(body, "promptText", ""), "pan");
    ck_assert_str_eq(json_str_or(body, "ratio", ""), "1280:720");
    ck_assert_int_eq(json_int_or(body, "duration", 0), 5);
    ck_assert_ptr_null(json_object_get(body, "seed"));
    json_decref(body);
    r = fake_http_request(F, 1);
    body = json_loadb(r->body.data, r->body.len, 0, NULL);
    ck_assert_str_eq(json_str_or(body, "promptText", ""), RUNWAY_DEFAULT_PROMPT);
    json_decref(body);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(submit_refusals_make_no_call)
{
    static const struct {
        const char *url, *prompt, *options, *code;
    } rows[] = {
        {"http://cdn.example.com/1.jpg", NULL, NULL, "image_url_invalid"},
        {"https://93.184.216.34/1.jpg", NULL, NULL, "image_url_invalid"},
        {"https://[2001:db8::1]/1.jpg", NULL, NULL, "image_url_invalid"},
        {"ftp://cdn.example.com/1.jpg", NULL, NULL, "image_url_invalid"},
        {"", NULL, NULL, "image_url_invalid"},
        {"https://cdn.example.com/1.jpg", NULL, "{\"ratio\":\"4:3\"}", "invalid_options"},
        {"https://cdn.example.com/1.jpg", NULL, "{\"model\":\"gen3a_turbo\"}", "invalid_options"},
    };
    struct provider *p = fake_provider(false, false, NULL);
    struct provider_output out;
    char long_prompt[1100];
    size_t i;

    provider_output_init(&out, 1 << 20);
    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        submit(p, rows[i].url, rows[i].prompt, rows[i].options, &out);
        assert_outcome(&out, P, rows[i].code);
    }
    memset(long_prompt, 'a', sizeof(long_prompt) - 1);
    long_prompt[sizeof(long_prompt) - 1] = '\0';
    submit(p, "https://cdn.example.com/1.jpg", long_prompt, NULL, &out);
    assert_outcome(&out, P, "invalid_prompt");
    ck_assert_uint_eq(fake_http_count(F), 0);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(submit_is_never_retried)
{
    struct provider *p = fake_provider(false, false, NULL);
    struct provider_output out;
    struct fake_answer busy = {503, "application/json", "{\"error\":\"overloaded\"}", 0, "4", 0};

    fake_http_push(F, &busy);
    fake_http_push(F, &busy);
    provider_output_init(&out, 1 << 20);
    submit(p, "https://cdn.example.com/1.jpg", NULL, NULL, &out);
    assert_outcome(&out, T, "provider_unavailable");
    ck_assert_int_eq(out.retry_after_s, 4);
    ck_assert_uint_eq(fake_http_count(F), 1); /* a second POST would be a second bill */
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(ambiguous_submit)
{
    struct provider *retrying = fake_provider(false, false, NULL);
    struct provider *failing = fake_provider(false, true, NULL);
    struct provider *nowhere = fake_provider(false, false, "http://127.0.0.1:1");
    struct fake_answer slow = {200, "application/json", "{\"id\":\"late\"}", 0, NULL, 1500};
    struct provider_output out;

    provider_output_init(&out, 1 << 20);
    /* Sent, no answer in time: a task may exist. */
    fake_http_push(F, &slow);
    submit(retrying, "https://cdn.example.com/1.jpg", NULL, NULL, &out);
    assert_outcome(&out, T, "provider_submit_unknown");
    fake_http_push(F, &slow);
    submit(failing, "https://cdn.example.com/1.jpg", NULL, NULL, &out);
    assert_outcome(&out, P, "provider_submit_unknown");
    /* Nothing sent (connection refused): plainly transient, even when failing on ambiguity. */
    submit(nowhere, "https://cdn.example.com/1.jpg", NULL, NULL, &out);
    assert_outcome(&out, T, "provider_unavailable");
    provider_output_release(&out);
    provider_free(nowhere);
    provider_free(failing);
    provider_free(retrying);
}
END_TEST

START_TEST(poll_retries_and_downloads)
{
    struct provider *p = fake_provider(true, false, NULL);
    struct provider_output out;
    struct fake_answer busy = {503, NULL, "", 0, NULL, 0};
    struct fake_answer video = {200, "video/mp4", NULL, 0, NULL, 0};
    const struct fake_request *r;
    struct mp4_info info;
    char task[512];
    struct buf mp4;

    buf_init(&mp4, 1 << 20);
    ck_assert_int_eq(mp4_build(&mp4, 32, 32, 3, 5), ST_OK);
    video.body = mp4.data;
    video.body_len = mp4.len;
    provider_output_init(&out, 8 << 20);

    /* GET is retried: 503, then a running task. */
    fake_http_push(F, &busy);
    fake_http_push_json(F, 200, TASK("RUNNING", ",\"progress\":0.25"));
    ck_assert_int_eq(p->poll(p, "d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892", &out), ST_OK);
    assert_outcome(&out, R, "");
    ck_assert(out.progress == 0.25);
    ck_assert_uint_eq(fake_http_count(F), 2);
    r = fake_http_request(F, 1);
    ck_assert_str_eq(r->method, "GET");
    ck_assert_str_eq(r->path, "/v1/tasks/d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892");
    ck_assert_str_eq(fake_request_header(r, "Authorization"), "Bearer " KEY);
    ck_assert_str_eq(fake_request_header(r, "X-Runway-Version"), "2024-11-06");

    /* SUCCEEDED: the output is downloaded at once (its URL expires). */
    fake_http_reset(F);
    snprintf(task, sizeof(task),
             TASK("SUCCEEDED", ",\"output\":[\"%s/out/video.mp4?_jwt=topsecret\"]"),
             fake_http_url(F));
    fake_http_push_json(F, 200, task);
    fake_http_push(F, &video);
    ck_assert_int_eq(p->poll(p, "d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892", &out), ST_OK);
    assert_outcome(&out, D, "");
    ck_assert_str_eq(out.content_type, "video/mp4");
    ck_assert_uint_eq(out.data.len, mp4.len);
    ck_assert_mem_eq(out.data.data, mp4.data, mp4.len);
    ck_assert_mem_eq(out.data.data + 4, "ftyp", 4);
    ck_assert(mp4_parse(out.data.data, out.data.len, &info));
    ck_assert_int_eq(info.samples, 3);
    ck_assert_msg(strstr(out.output_url, "/out/video.mp4") && !strstr(out.output_url, "secret"),
                  "output url %s", out.output_url);
    ck_assert_str_eq(fake_http_request(F, 1)->path, "/out/video.mp4");
    provider_output_release(&out);
    buf_release(&mp4);
    provider_free(p);
}
END_TEST

START_TEST(download_failures)
{
    struct provider *p = fake_provider(true, false, NULL);
    struct provider *strict = fake_provider(false, false, NULL);
    struct fake_answer html = {200, "text/html", "<html>expired</html>", 0, NULL, 0};
    struct fake_answer octet_html = {200, "application/octet-stream", "<html>x</html>", 0, NULL, 0};
    struct fake_answer denied = {403, "application/xml", "<Error>AccessDenied</Error>", 0, NULL, 0};
    struct fake_answer video = {200, "application/octet-stream", NULL, 0, NULL, 0};
    struct provider_output out, small;
    char task[512];
    struct buf mp4;

    buf_init(&mp4, 1 << 20);
    ck_assert_int_eq(mp4_build(&mp4, 32, 32, 2, 1), ST_OK);
    video.body = mp4.data;
    video.body_len = mp4.len;
    snprintf(task, sizeof(task), TASK("SUCCEEDED", ",\"output\":[\"%s/v.mp4\"]"), fake_http_url(F));
    provider_output_init(&out, 8 << 20);
    provider_output_init(&small, 1000);

    fake_http_push_json(F, 200, task);
    fake_http_push(F, &html);
    p->poll(p, "t1", &out);
    assert_outcome(&out, P, "provider_output_invalid");
    ck_assert_uint_eq(out.data.len, 0);
    fake_http_push_json(F, 200, task);
    fake_http_push(F, &octet_html);
    p->poll(p, "t1", &out);
    assert_outcome(&out, P, "provider_output_invalid");
    fake_http_push_json(F, 200, task);
    fake_http_push(F, &denied);
    p->poll(p, "t1", &out);
    assert_outcome(&out, T, "provider_download_failed"); /* the next poll gets a fresh url */
    fake_http_push_json(F, 200, task);
    fake_http_push(F, &video);
    p->poll(p, "t1", &small);
    assert_outcome(&small, P, "provider_output_too_large");
    fake_http_push_json(F, 200, task);
    fake_http_push(F, &video);
    p->poll(p, "t1", &out); /* octet-stream is fine when the bytes are an MP4 */
    assert_outcome(&out, D, "");
    ck_assert_str_eq(out.content_type, "video/mp4");
    /* Without allow_insecure the output must be https on a public address. */
    fake_http_push_json(F, 200, task);
    strict->poll(strict, "t1", &out);
    assert_outcome(&out, P, "provider_output_url_invalid");
    provider_output_release(&small);
    provider_output_release(&out);
    buf_release(&mp4);
    provider_free(strict);
    provider_free(p);
}
END_TEST

START_TEST(key_never_in_messages)
{
    struct provider *p = fake_provider(false, false, NULL);
    struct provider_output out;

    fake_http_push_json(F, 401, "{\"error\":\"Key " KEY " is disabled\"}");
    provider_output_init(&out, 1 << 20);
    submit(p, "https://cdn.example.com/1.jpg", NULL, NULL, &out);
    assert_outcome(&out, P, "provider_auth_failed");
    ck_assert_msg(!strstr(out.error_message, KEY) && strstr(out.error_message, "***"),
                  "message: %s", out.error_message);
    fake_http_push_json(F, 404, "{\"error\":\"no task for " KEY "\"}");
    p->poll(p, "t1", &out);
    assert_outcome(&out, P, "provider_job_not_found");
    ck_assert(!strstr(out.error_message, KEY));
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(cancel_and_bad_ids)
{
    struct provider *p = fake_provider(false, false, NULL);
    struct fake_answer gone = {204, NULL, NULL, 0, NULL, 0};
    struct fake_answer failing = {500, NULL, "", 0, NULL, 0};
    const struct fake_request *r;
    struct provider_output out;
    struct error err;

    fake_http_push(F, &gone);
    ck_assert_int_eq(p->cancel(p, "task-1", &err), ST_OK);
    r = fake_http_request(F, 0);
    ck_assert_str_eq(r->method, "DELETE");
    ck_assert_str_eq(r->path, "/v1/tasks/task-1");
    ck_assert_str_eq(fake_request_header(r, "X-Runway-Version"), "2024-11-06");
    ck_assert_str_eq(fake_request_header(r, "Authorization"), "Bearer " KEY);
    fake_http_push_json(F, 404, "{\"error\":\"Task not found.\"}");
    ck_assert_int_eq(p->cancel(p, "task-1", &err), ST_OK); /* already gone */
    fake_http_push(F, &failing);
    fake_http_push(F, &failing);
    ck_assert_int_eq(p->cancel(p, "task-1", &err), ST_UNAVAILABLE);
    ck_assert_msg(strstr(err.message, "cannot cancel runway task task-1"), "%s", err.message);
    ck_assert_uint_eq(fake_http_count(F), 4); /* DELETE is retried */
    fake_http_push_json(F, 401, "{}");
    ck_assert_int_eq(p->cancel(p, "task-1", &err), ST_UNAUTHENTICATED);

    fake_http_reset(F);
    ck_assert_int_eq(p->cancel(p, "../admin", &err), ST_INVALID);
    provider_output_init(&out, 1 << 20);
    p->poll(p, "a/b", &out);
    assert_outcome(&out, P, "provider_job_invalid");
    p->poll(p, "", &out);
    assert_outcome(&out, P, "provider_job_invalid");
    ck_assert_uint_eq(fake_http_count(F), 0);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(provider_new_validates)
{
    struct runway_options o = {.api_key = KEY};
    struct provider *p;

    p = provider_runway_new(&o, C);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p->name, "runway");
    ck_assert(p->async);
    ck_assert_ptr_nonnull(p->poll);
    ck_assert_ptr_nonnull(p->cancel);
    provider_free(p);
    o.api_key = "";
    ck_assert_ptr_null(provider_runway_new(&o, C));
    o.api_key = "key with space";
    ck_assert_ptr_null(provider_runway_new(&o, C));
    o.api_key = KEY;
    o.base_url = "ftp://runway";
    ck_assert_ptr_null(provider_runway_new(&o, C));
    o.base_url = NULL;
    o.model = "veo3";
    ck_assert_ptr_null(provider_runway_new(&o, C));
    o.model = "gen3a_turbo";
    ck_assert_ptr_null(provider_runway_new(&o, C));
    o.allow_legacy_models = true;
    p = provider_runway_new(&o, C);
    ck_assert_ptr_nonnull(p);
    provider_free(p);
}
END_TEST

/* ---- end to end against provider-sim ------------------------------------------- */

#define JOB_MS 300

static struct sim_proc SIM;

static void sim_setup(void)
{
    static const char *const env[] = {"SIM_JOB_MS=300",
                                      "SIM_RUNWAY_CONCURRENCY=2",
                                      "SIM_RUNWAY_API_KEY=" SIM_KEY,
                                      "SIM_API_KEY=gemini-only-key",
                                      "SIM_FAIL_RATE=0",
                                      "SIM_TIMEOUT_RATE=0",
                                      "SIM_LATENCY_MS=0",
                                      "SHUTDOWN_GRACE_MS=3000",
                                      "LOG_LEVEL=WARNING",
                                      NULL};

    ck_assert_msg(sim_proc_start(&SIM, SIM_BIN, env), "provider-sim did not start");
    C = http_client_new(&(struct http_client_options){.retry_base_ms = 10, .retry_cap_ms = 50});
}

static void sim_teardown(void)
{
    http_client_free(C);
    C = NULL;
    ck_assert_int_eq(sim_proc_stop(&SIM), 0);
}

static struct provider *sim_provider(const char *key, bool legacy)
{
    struct runway_options o = {
        .base_url = SIM.url,
        .api_key = key ? key : SIM_KEY,
        .submit_timeout_ms = 5000,
        .poll_timeout_ms = 5000,
        .allow_insecure = true,
        .allow_legacy_models = legacy,
    };
    struct provider *p = provider_runway_new(&o, C);

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

static json_t *sim_stats(void)
{
    json_t *s = NULL;

    ck_assert_int_eq(sim_call("GET", "/stats", NULL, NULL, &s), 200);
    return s;
}

static void sim_control(const char *body)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};

    ck_assert_int_eq(sim_call("POST", "/control", hdrs, body, NULL), 200);
}

/* Polls until the job leaves RUNNING; counts the RUNNING answers seen. */
static int poll_until_done(struct provider *p, const char *job_id, struct provider_output *out)
{
    int64_t deadline = time_mono_ms() + 15000;
    int running = 0;

    for (;;) {
        ck_assert_int_eq(p->poll(p, job_id, out), ST_OK);
        if (out->outcome != PROVIDER_RUNNING)
            return running;
        ck_assert_msg(out->progress >= 0 && out->progress <= 1, "progress %g", out->progress);
        running++;
        ck_assert_msg(time_mono_ms() < deadline, "job %s never finished", job_id);
        time_sleep_ms(40);
    }
}

static void image_url(int n, char *out, size_t cap)
{
    ck_assert(str_printf(out, cap, "%s/demo/%d.png?w=64&h=48", SIM.url, n));
}

START_TEST(sim_submit_poll_done)
{
    struct provider *p = sim_provider(NULL, false);
    struct provider_output out;
    struct mp4_info info;
    char url[128], job[128];
    json_t *stats, *rw;

    sim_call("POST", "/stats/reset", NULL, NULL, NULL);
    image_url(1, url, sizeof(url));
    provider_output_init(&out, 64 << 20);
    submit(p, url, "Slow pan across the living room", "{\"duration\":4}", &out);
    assert_outcome(&out, S, "");
    str_copy(job, sizeof(job), out.job_id);
    ck_assert_int_gt(poll_until_done(p, job, &out), 0);
    assert_outcome(&out, D, "");
    ck_assert_str_eq(out.content_type, "video/mp4");
    ck_assert_mem_eq(out.data.data + 4, "ftyp", 4);
    ck_assert_msg(mp4_parse(out.data.data, out.data.len, &info), "not an mp4");
    ck_assert_str_eq(info.major_brand, "isom");
    ck_assert(info.compatible_mp41 && info.has_moov && info.has_mdat && info.has_avcc);
    ck_assert_str_eq(info.handler, "vide");
    ck_assert_str_eq(info.codec, "avc1");
    ck_assert_int_eq(info.samples, 4); /* one frame a second of the 4 asked for */
    ck_assert_int_eq(info.duration / info.timescale, 4);
    ck_assert(info.samples_in_mdat);
    ck_assert_msg(strstr(out.output_url, "/media/") && !strchr(out.output_url, '?'), "url %s",
                  out.output_url);

    stats = sim_stats();
    rw = json_object_get(stats, "runway");
    ck_assert_int_eq(json_int_or(rw, "submits", -1), 1);
    ck_assert_int_eq(json_int_or(json_object_get(rw, "byImage"), url, -1), 1);
    json_decref(stats);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

struct keyword_row {
    const char *prompt;
    bool at_submit; /* the failure comes from POST, not from the task */
    enum provider_outcome want;
    const char *code;
    int min_retry;
    bool pause, resubmit;
};

static const struct keyword_row keyword_rows[] = {
    {"Pan. [moderation]", false, P, "provider_moderation", 0, false, false},
    {"Pan. [badoutput]", false, T, "provider_bad_output", 0, false, true},
    {"Pan. [nocredit]", true, P, "provider_no_credits", 0, true, false},
    {"Pan. [daily]", true, T, "provider_rate_limited", RUNWAY_DAILY_LIMIT_RETRY_S, false, false},
};

START_TEST(sim_keywords)
{
    const struct keyword_row *r = &keyword_rows[_i];
    struct provider *p = sim_provider(NULL, false);
    struct provider_output out;
    char url[128], job[128];

    image_url(100 + _i, url, sizeof(url));
    provider_output_init(&out, 64 << 20);
    submit(p, url, r->prompt, NULL, &out);
    if (!r->at_submit) {
        assert_outcome(&out, S, "");
        str_copy(job, sizeof(job), out.job_id);
        poll_until_done(p, job, &out);
    }
    assert_outcome(&out, r->want, r->code);
    ck_assert_int_ge(out.retry_after_s, r->min_retry);
    ck_assert_int_eq(out.pause_batch, r->pause);
    ck_assert_int_eq(out.resubmit, r->resubmit);
    ck_assert(!strstr(out.error_message, SIM_KEY));
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_internal_failure_then_resubmission)
{
    struct provider *p = sim_provider(NULL, false);
    struct provider_output out;
    char url[128], job[128];
    json_t *stats;

    image_url(200, url, sizeof(url));
    provider_output_init(&out, 64 << 20);
    submit(p, url, "Pan. [internal]", NULL, &out);
    assert_outcome(&out, S, "");
    str_copy(job, sizeof(job), out.job_id);
    poll_until_done(p, job, &out);
    assert_outcome(&out, T, "provider_job_failed");
    ck_assert(out.resubmit);
    /* Polling again says the same: only a new submission helps. */
    p->poll(p, job, &out);
    assert_outcome(&out, T, "provider_job_failed");
    submit(p, url, "Pan. [internal]", NULL, &out);
    assert_outcome(&out, S, "");
    str_copy(job, sizeof(job), out.job_id);
    poll_until_done(p, job, &out);
    assert_outcome(&out, D, "");
    stats = sim_stats();
    ck_assert_int_eq(
        json_int_or(json_object_get(json_object_get(stats, "runway"), "byImage"), url, -1), 2);
    json_decref(stats);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_cancel)
{
    struct provider *p = sim_provider(NULL, false);
    struct provider_output out;
    char url[128], job[128];
    struct error err;
    json_t *stats;
    int64_t cancels;

    stats = sim_stats();
    cancels = json_int_or(json_object_get(stats, "runway"), "cancels", -1);
    json_decref(stats);
    image_url(300, url, sizeof(url));
    provider_output_init(&out, 64 << 20);
    submit(p, url, "Pan.", NULL, &out);
    assert_outcome(&out, S, "");
    str_copy(job, sizeof(job), out.job_id);
    ck_assert_int_eq(p->cancel(p, job, &err), ST_OK);
    stats = sim_stats();
    ck_assert_int_eq(json_int_or(json_object_get(stats, "runway"), "cancels", -1), cancels + 1);
    json_decref(stats);
    p->poll(p, job, &out);
    assert_outcome(&out, P, "provider_job_not_found");
    ck_assert_int_eq(p->cancel(p, job, &err), ST_OK); /* 404: already gone */
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_throttled_beyond_concurrency)
{
    static const char *const hdrs[] = {"Authorization: Bearer " SIM_KEY,
                                       "X-Runway-Version: 2024-11-06", NULL};
    struct provider *p = sim_provider(NULL, false);
    struct provider_output out;
    char url[128], jobs[3][128], path[192];
    json_t *task = NULL;
    int i;

    time_sleep_ms(JOB_MS + 50);      /* earlier tests' tasks are done */
    sim_control("{\"jobMs\":1500}"); /* room for three submits on a slow machine */
    provider_output_init(&out, 64 << 20);
    for (i = 0; i < 3; i++) {
        image_url(400 + i, url, sizeof(url));
        submit(p, url, "Pan.", NULL, &out);
        assert_outcome(&out, S, "");
        str_copy(jobs[i], sizeof(jobs[i]), out.job_id);
    }
    snprintf(path, sizeof(path), "/v1/tasks/%s", jobs[2]);
    ck_assert_int_eq(sim_call("GET", path, hdrs, NULL, &task), 200);
    ck_assert_str_eq(json_str_or(task, "status", ""), "THROTTLED");
    json_decref(task);
    p->poll(p, jobs[2], &out);
    assert_outcome(&out, R, "");    /* throttled is not an error */
    sim_control("{\"jobMs\":300}"); /* the queued task keeps the duration it was given */
    for (i = 0; i < 3; i++) {
        poll_until_done(p, jobs[i], &out);
        assert_outcome(&out, D, "");
    }
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(sim_down_wrong_key_and_legacy)
{
    struct provider *p = sim_provider(NULL, false);
    struct provider *bad = sim_provider("key_wrong_one", false);
    struct provider *legacy = sim_provider(NULL, true);
    struct provider_output out;
    char url[128];

    image_url(500, url, sizeof(url));
    provider_output_init(&out, 64 << 20);
    sim_control("{\"runwayDown\":true}");
    submit(p, url, "Pan.", NULL, &out);
    assert_outcome(&out, T, "provider_unavailable");
    sim_control("{\"runwayDown\":false}");
    submit(bad, url, "Pan.", NULL, &out);
    assert_outcome(&out, P, "provider_auth_failed");
    ck_assert(!strstr(out.error_message, "key_wrong_one"));
    submit(legacy, url, "Pan.", "{\"model\":\"gen3a_turbo\",\"duration\":10}", &out);
    assert_outcome(&out, S, "");
    provider_output_release(&out);
    provider_free(legacy);
    provider_free(bad);
    provider_free(p);
}
END_TEST

START_TEST(sim_validates_like_runway)
{
    static const char *const good[] = {"Authorization: Bearer " SIM_KEY,
                                       "X-Runway-Version: 2024-11-06",
                                       "Content-Type: application/json", NULL};
    static const char *const no_version[] = {"Authorization: Bearer " SIM_KEY, NULL};
    static const char *const no_key[] = {"X-Runway-Version: 2024-11-06", NULL};
    json_t *j = NULL;

    ck_assert_int_eq(
        sim_call("POST", "/v1/image_to_video", good,
                 "{\"model\":\"gen4_turbo\",\"promptImage\":\"https://x.example/a.jpg\","
                 "\"ratio\":\"1:1\",\"duration\":11}",
                 &j),
        400);
    ck_assert_str_eq(json_str_or(j, "error", ""), "Validation of body failed");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "issues")), 2);
    ck_assert_str_eq(json_str_or(j, "docUrl", ""), "https://docs.dev.runwayml.com/api");
    json_decref(j);
    ck_assert_int_eq(sim_call("POST", "/v1/image_to_video", good,
                              "{\"model\":\"gen4.5\",\"promptImage\":\"https://x.example/a.jpg\","
                              "\"ratio\":\"1280:720\"}",
                              &j),
                     400); /* gen4.5 needs duration and promptText */
    ck_assert_uint_eq(json_array_size(json_object_get(j, "issues")), 2);
    json_decref(j);
    ck_assert_int_eq(sim_call("GET", "/v1/tasks/nope", no_version, NULL, NULL), 400);
    ck_assert_int_eq(sim_call("GET", "/v1/tasks/nope", no_key, NULL, NULL), 401);
    ck_assert_int_eq(sim_call("GET", "/v1/tasks/nope", good, NULL, NULL), 404);
    ck_assert_int_eq(sim_call("DELETE", "/v1/tasks/nope", good, NULL, NULL), 404);
    ck_assert_int_eq(sim_call("GET", "/media/nope.mp4", NULL, NULL, NULL), 404);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("runway");
    TCase *pure = tcase_create("pure");
    TCase *net = tcase_create("fake");
    TCase *sim = tcase_create("sim");

    tcase_add_loop_test(pure, classify_table, 0, (int)ARRAY_SIZE(classify_rows));
    tcase_add_test(pure, failure_messages_quote_runway);
    tcase_add_loop_test(pure, options_table, 0, (int)ARRAY_SIZE(option_rows));
    tcase_add_test(pure, prompt_length_in_utf16_units);
    tcase_add_test(pure, mp4_sniffing);
    suite_add_tcase(s, pure);

    tcase_add_unchecked_fixture(net, fake_setup, fake_teardown);
    tcase_set_timeout(net, 60);
    tcase_add_test(net, submit_request_shape);
    tcase_add_test(net, submit_refusals_make_no_call);
    tcase_add_test(net, submit_is_never_retried);
    tcase_add_test(net, ambiguous_submit);
    tcase_add_test(net, poll_retries_and_downloads);
    tcase_add_test(net, download_failures);
    tcase_add_test(net, key_never_in_messages);
    tcase_add_test(net, cancel_and_bad_ids);
    tcase_add_test(net, provider_new_validates);
    suite_add_tcase(s, net);

    tcase_add_unchecked_fixture(sim, sim_setup, sim_teardown);
    tcase_set_timeout(sim, 120);
    tcase_add_test(sim, sim_submit_poll_done);
    tcase_add_loop_test(sim, sim_keywords, 0, (int)ARRAY_SIZE(keyword_rows));
    tcase_add_test(sim, sim_internal_failure_then_resubmission);
    tcase_add_test(sim, sim_cancel);
    tcase_add_test(sim, sim_throttled_beyond_concurrency);
    tcase_add_test(sim, sim_down_wrong_key_and_legacy);
    tcase_add_test(sim, sim_validates_like_runway);
    suite_add_tcase(s, sim);
    return s;
}
