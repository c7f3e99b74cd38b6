#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "check_main.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/client.h"
#include "png.h"
#include "providers/fetch.h"
#include "providers/gemini.h"

/* ---- canned bodies -------------------------------------------------------- */

#define PNG_B64  "iVBORw0KGgo=" /* the 8-byte PNG signature */
#define JPEG_B64 "/9j/4AAQ"     /* ff d8 ff e0 00 10 */

#define TEXT_PART       "{\"text\":\"Here is the staged room.\"}"
#define PNG_PART        "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"" PNG_B64 "\"}}"
#define JPEG_PART_SNAKE "{\"inline_data\":{\"mime_type\":\"image/jpeg\",\"data\":\"" JPEG_B64 "\"}}"
#define THOUGHT_IMG_PART                                                                           \
    "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"AAAA\"},\"thought\":true}"
#define SIGNED_JPEG_PART                                                                           \
    "{\"inlineData\":{\"mimeType\":\"image/jpeg\",\"data\":\"" JPEG_B64                            \
    "\"},\"thoughtSignature\":\"c2ln\"}"
#define CAND(fr, parts)                                                                            \
    "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[" parts                          \
    "]},\"finishReason\":\"" fr "\",\"index\":0}],\"modelVersion\":\"gemini-3.1-flash-image\"}"
#define NOCONTENT(fr)                                                                              \
    "{\"candidates\":[{\"finishReason\":\"" fr "\",\"finishMessage\":\"Unable to show.\"}]}"
#define BLOCK(r)                                                                                   \
    "{\"promptFeedback\":{\"blockReason\":\"" r "\",\"blockReasonMessage\":\"Prompt blocked.\"}}"
#define ENVELOPE(code, status, details)                                                            \
    "{\"error\":{\"code\":" #code ",\"message\":\"Something went wrong.\",\"status\":\"" status    \
    "\"" details "}}"
#define RETRY_INFO(d)                                                                              \
    "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"" d "\"}"
#define QUOTA(id)                                                                                  \
    "{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[{\"quotaMetric\":" \
    "\"generativelanguage.googleapis.com/generate_content_free_tier_requests\",\"quotaId\":\"" id  \
    "\"}]}"
#define DETAILS(...) ",\"details\":[" __VA_ARGS__ "]"
#define KEY_INVALID                                                                                \
    "{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"API_KEY_INVALID\","      \
    "\"domain\":\"googleapis.com\"}"

#define T PROVIDER_TRANSIENT
#define P PROVIDER_PERMANENT
#define D PROVIDER_DONE

struct classify_row {
    const char *name;
    enum status transport;
    long http;
    const char *body;
    int retry_after; /* Retry-After header */
    int attempt;
    enum provider_outcome want;
    const char *code;
    int want_retry;
    bool pause;
    const char *ctype; /* DONE: expected content type */
};

static const struct classify_row classify_rows[] = {
    /* successes */
    {"png after text", ST_OK, 200, CAND("STOP", TEXT_PART "," PNG_PART), 0, 1, D, "", 0, false,
     "image/png"},
    {"snake case", ST_OK, 200, CAND("STOP", JPEG_PART_SNAKE), 0, 1, D, "", 0, false, "image/jpeg"},
    {"thought image skipped", ST_OK, 200,
     CAND("STOP", THOUGHT_IMG_PART "," TEXT_PART "," SIGNED_JPEG_PART), 0, 1, D, "", 0, false,
     "image/jpeg"},
    {"last image wins", ST_OK, 200, CAND("STOP", JPEG_PART_SNAKE "," PNG_PART), 0, 1, D, "", 0,
     false, "image/png"},
    {"201 is a success too", ST_OK, 201, CAND("STOP", PNG_PART), 0, 1, D, "", 0, false,
     "image/png"},
    {"image with max tokens", ST_OK, 200, CAND("MAX_TOKENS", PNG_PART), 0, 1, D, "", 0, false,
     "image/png"},
    /* blocked prompt */
    {"block safety", ST_OK, 200, BLOCK("SAFETY"), 0, 1, P, "provider_blocked", 0, false, NULL},
    {"block other", ST_OK, 200, BLOCK("OTHER"), 0, 1, P, "provider_blocked", 0, false, NULL},
    {"block blocklist", ST_OK, 200, BLOCK("BLOCKLIST"), 0, 1, P, "provider_blocked", 0, false,
     NULL},
    {"block prohibited", ST_OK, 200, BLOCK("PROHIBITED_CONTENT"), 0, 1, P, "provider_blocked", 0,
     false, NULL},
    {"block image safety", ST_OK, 200, BLOCK("IMAGE_SAFETY"), 0, 1, P, "provider_blocked", 0, false,
     NULL},
    /* moderation of the output */
    {"image safety", ST_OK, 200, NOCONTENT("IMAGE_SAFETY"), 0, 1, P, "provider_moderation", 0,
     false, NULL},
    {"image prohibited", ST_OK, 200, NOCONTENT("IMAGE_PROHIBITED_CONTENT"), 0, 1, P,
     "provider_moderation", 0, false, NULL},
    {"safety", ST_OK, 200, NOCONTENT("SAFETY"), 0, 1, P, "provider_moderation", 0, false, NULL},
    {"prohibited", ST_OK, 200, NOCONTENT("PROHIBITED_CONTENT"), 0, 1, P, "provider_moderation", 0,
     false, NULL},
    {"blocklist", ST_OK, 200, NOCONTENT("BLOCKLIST"), 0, 1, P, "provider_moderation", 0, false,
     NULL},
    {"spii", ST_OK, 200, NOCONTENT("SPII"), 0, 1, P, "provider_moderation", 0, false, NULL},
    {"safety wins over an image", ST_OK, 200, CAND("IMAGE_SAFETY", PNG_PART), 0, 1, P,
     "provider_moderation", 0, false, NULL},
    {"recitation", ST_OK, 200, NOCONTENT("RECITATION"), 0, 1, P, "provider_recitation", 0, false,
     NULL},
    {"image recitation", ST_OK, 200, NOCONTENT("IMAGE_RECITATION"), 0, 1, P, "provider_recitation",
     0, false, NULL},
    /* configuration-like finish reasons */
    {"max tokens", ST_OK, 200, CAND("MAX_TOKENS", TEXT_PART), 0, 1, P, "provider_finish_reason", 0,
     false, NULL},
    {"malformed function call", ST_OK, 200, NOCONTENT("MALFORMED_FUNCTION_CALL"), 0, 1, P,
     "provider_finish_reason", 0, false, NULL},
    {"language", ST_OK, 200, NOCONTENT("LANGUAGE"), 0, 1, P, "provider_finish_reason", 0, false,
     NULL},
    /* no image: retried while attempt < 3 */
    {"no image 1", ST_OK, 200, NOCONTENT("NO_IMAGE"), 0, 1, T, "provider_no_image", 0, false, NULL},
    {"no image 2", ST_OK, 200, NOCONTENT("NO_IMAGE"), 0, 2, T, "provider_no_image", 0, false, NULL},
    {"no image 3", ST_OK, 200, NOCONTENT("NO_IMAGE"), 0, 3, P, "provider_no_image", 0, false, NULL},
    {"image other", ST_OK, 200, NOCONTENT("IMAGE_OTHER"), 0, 1, T, "provider_no_image", 0, false,
     NULL},
    {"image other last", ST_OK, 200, NOCONTENT("IMAGE_OTHER"), 0, 4, P, "provider_no_image", 0,
     false, NULL},
    {"other", ST_OK, 200, NOCONTENT("OTHER"), 0, 1, T, "provider_no_image", 0, false, NULL},
    {"text only", ST_OK, 200, CAND("STOP", TEXT_PART), 0, 2, T, "provider_no_image", 0, false,
     NULL},
    {"text only last", ST_OK, 200, CAND("STOP", TEXT_PART), 0, 3, P, "provider_no_image", 0, false,
     NULL},
    {"thought image only", ST_OK, 200, CAND("STOP", THOUGHT_IMG_PART), 0, 1, T, "provider_no_image",
     0, false, NULL},
    {"non-image blob", ST_OK, 200,
     CAND("STOP", "{\"inlineData\":{\"mimeType\":\"text/plain\",\"data\":\"aGk=\"}}"), 0, 1, T,
     "provider_no_image", 0, false, NULL},
    {"no candidates", ST_OK, 200, "{\"usageMetadata\":{}}", 0, 1, T, "provider_no_image", 0, false,
     NULL},
    {"attempt 0 counts as 1", ST_OK, 200, NOCONTENT("NO_IMAGE"), 0, 0, T, "provider_no_image", 0,
     false, NULL},
    /* garbled answers */
    {"malformed json", ST_OK, 200, "{\"candidates\":[", 0, 1, T, "provider_bad_response", 0, false,
     NULL},
    {"malformed json last", ST_OK, 200, "<html>oops</html>", 0, 3, P, "provider_bad_response", 0,
     false, NULL},
    {"empty body", ST_OK, 200, "", 0, 1, T, "provider_bad_response", 0, false, NULL},
    {"bad base64", ST_OK, 200,
     CAND("STOP", "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"not base64!\"}}"), 0, 1,
     T, "provider_bad_response", 0, false, NULL},
    /* HTTP errors */
    {"400 invalid argument", ST_OK, 400, ENVELOPE(400, "INVALID_ARGUMENT", ""), 0, 1, P,
     "provider_invalid_request", 0, false, NULL},
    {"400 bad key", ST_OK, 400, ENVELOPE(400, "INVALID_ARGUMENT", DETAILS(KEY_INVALID)), 0, 1, P,
     "provider_auth_failed", 0, false, NULL},
    {"400 failed precondition", ST_OK, 400, ENVELOPE(400, "FAILED_PRECONDITION", ""), 0, 1, P,
     "provider_failed_precondition", 0, false, NULL},
    {"401", ST_OK, 401, ENVELOPE(401, "UNAUTHENTICATED", ""), 0, 1, P, "provider_auth_failed", 0,
     false, NULL},
    {"402 no credits", ST_OK, 402, ENVELOPE(402, "RESOURCE_EXHAUSTED", ""), 0, 1, P,
     "provider_no_credits", 0, true, NULL},
    {"403", ST_OK, 403, ENVELOPE(403, "PERMISSION_DENIED", ""), 0, 1, P, "provider_auth_failed", 0,
     false, NULL},
    {"404 model", ST_OK, 404, ENVELOPE(404, "NOT_FOUND", ""), 0, 1, P, "provider_model_not_found",
     0, false, NULL},
    {"413", ST_OK, 413, "payload too large", 0, 1, P, "provider_invalid_request", 0, false, NULL},
    {"301", ST_OK, 301, "", 0, 1, P, "provider_bad_response", 0, false, NULL},
    {"408", ST_OK, 408, "", 0, 1, T, "provider_timeout", 0, false, NULL},
    {"429 plain", ST_OK, 429, ENVELOPE(429, "RESOURCE_EXHAUSTED", ""), 0, 1, T,
     "provider_rate_limited", 0, false, NULL},
    {"429 retry-after header", ST_OK, 429, ENVELOPE(429, "RESOURCE_EXHAUSTED", ""), 7, 1, T,
     "provider_rate_limited", 7, false, NULL},
    {"429 retry info", ST_OK, 429,
     ENVELOPE(429, "RESOURCE_EXHAUSTED",
              DETAILS(QUOTA("GenerateRequestsPerMinutePerProjectPerModel") "," RETRY_INFO("37s"))),
     0, 1, T, "provider_rate_limited", 37, false, NULL},
    {"429 retry info fraction", ST_OK, 429,
     ENVELOPE(429, "RESOURCE_EXHAUSTED", DETAILS(RETRY_INFO("0.5s"))), 2, 1, T,
     "provider_rate_limited", 2, false, NULL},
    {"429 retry info beats header", ST_OK, 429,
     ENVELOPE(429, "RESOURCE_EXHAUSTED", DETAILS(RETRY_INFO("1.2s"))), 1, 1, T,
     "provider_rate_limited", 2, false, NULL},
    {"429 per day", ST_OK, 429,
     ENVELOPE(429, "RESOURCE_EXHAUSTED",
              DETAILS(QUOTA("GenerateRequestsPerDayPerProjectPerModel-FreeTier"))),
     0, 1, T, "provider_quota_exhausted", 3600, false, NULL},
    {"429 per day with retry info", ST_OK, 429,
     ENVELOPE(429, "RESOURCE_EXHAUSTED",
              DETAILS(QUOTA("GenerateRequestsPerDayPerProjectPerModel") "," RETRY_INFO("50000s"))),
     0, 1, T, "provider_quota_exhausted", 50000, false, NULL},
    {"429 wrapped in an array", ST_OK, 429,
     "[" ENVELOPE(429, "RESOURCE_EXHAUSTED", DETAILS(RETRY_INFO("9s"))) "]", 0, 1, T,
     "provider_rate_limited", 9, false, NULL},
    {"429 no body", ST_OK, 429, "", 0, 1, T, "provider_rate_limited", 0, false, NULL},
    {"499", ST_OK, 499, ENVELOPE(499, "CANCELLED", ""), 0, 1, T, "provider_unavailable", 0, false,
     NULL},
    {"500", ST_OK, 500, ENVELOPE(500, "INTERNAL", ""), 0, 1, T, "provider_unavailable", 0, false,
     NULL},
    {"500 html", ST_OK, 500, "<html>Error</html>", 0, 1, T, "provider_unavailable", 0, false, NULL},
    {"502", ST_OK, 502, "", 0, 1, T, "provider_unavailable", 0, false, NULL},
    {"503 retry-after", ST_OK, 503, ENVELOPE(503, "UNAVAILABLE", ""), 5, 1, T,
     "provider_unavailable", 5, false, NULL},
    {"504", ST_OK, 504, ENVELOPE(504, "DEADLINE_EXCEEDED", ""), 0, 1, T, "provider_timeout", 0,
     false, NULL},
    /* no answer */
    {"client timeout", ST_TIMEOUT, 0, NULL, 0, 1, T, "provider_timeout", 0, false, NULL},
    {"connection refused", ST_UNAVAILABLE, 0, NULL, 0, 1, T, "provider_unavailable", 0, false,
     NULL},
    {"response over the cap", ST_TOO_LARGE, 200, NULL, 0, 1, P, "provider_output_too_large", 0,
     false, NULL},
    {"bad base url", ST_INVALID, 0, NULL, 0, 1, P, "provider_config", 0, false, NULL},
};

START_TEST(classify_table)
{
    const struct classify_row *r = &classify_rows[_i];
    struct provider_output out;
    struct gemini_reply reply = {
        .transport = r->transport,
        .transport_error = r->transport == ST_OK ? NULL : "cannot POST x: it failed",
        .http_status = r->http,
        .body = r->body,
        .body_len = r->body ? strlen(r->body) : 0,
        .retry_after_s = r->retry_after,
    };

    provider_output_init(&out, 1 << 20);
    gemini_classify(&reply, r->attempt, &out);
    ck_assert_msg(out.outcome == r->want, "%s: outcome %s, want %s (%s)", r->name,
                  provider_outcome_name(out.outcome), provider_outcome_name(r->want),
                  out.error_message);
    ck_assert_msg(strcmp(out.error_code, r->code) == 0, "%s: code \"%s\", want \"%s\"", r->name,
                  out.error_code, r->code);
    ck_assert_msg(out.retry_after_s == r->want_retry, "%s: retry after %d, want %d", r->name,
                  out.retry_after_s, r->want_retry);
    ck_assert_msg(out.pause_batch == r->pause, "%s: pause_batch %d", r->name, out.pause_batch);
    if (r->want == D) {
        ck_assert_msg(strcmp(out.content_type, r->ctype) == 0, "%s: type %s, want %s", r->name,
                      out.content_type, r->ctype);
        ck_assert_msg(out.data.len > 0, "%s: no bytes", r->name);
        if (strcmp(r->ctype, "image/png") == 0)
            ck_assert(png_is_png((const uint8_t *)out.data.data, out.data.len));
        ck_assert_str_eq(out.error_message, "");
    } else {
        ck_assert_msg(str_starts_with(out.error_message, "gemini "), "%s: message \"%s\"", r->name,
                      out.error_message);
        ck_assert_int_eq(out.data.len, 0);
    }
    provider_output_release(&out);
}
END_TEST

START_TEST(classify_output_cap)
{
    static const char body[] = CAND("STOP", PNG_PART);
    struct gemini_reply reply = {.http_status = 200, .body = body, .body_len = strlen(body)};
    struct provider_output out;

    provider_output_init(&out, 4); /* the PNG signature is 8 bytes */
    gemini_classify(&reply, 1, &out);
    ck_assert_str_eq(provider_outcome_name(out.outcome), "permanent");
    ck_assert_str_eq(out.error_code, "provider_output_too_large");
    provider_output_release(&out);
}
END_TEST

START_TEST(classify_messages)
{
    static const char text_body[] =
        CAND("STOP", "{\"text\":\"I cannot edit\\nthis photo because it shows a person.\"}");
    char long_msg[1200];
    struct gemini_reply reply = {
        .http_status = 200, .body = text_body, .body_len = strlen(text_body)};
    struct provider_output out;
    size_t n;

    provider_output_init(&out, 1 << 20);
    gemini_classify(&reply, 1, &out);
    /* The model's own words explain the refusal; control characters are flattened. */
    ck_assert_msg(strstr(out.error_message, "text only (stop): I cannot edit this photo") != NULL,
                  "message: %s", out.error_message);
    ck_assert_msg(strstr(out.error_message, "(attempt 1, at most 3)") != NULL, "message: %s",
                  out.error_message);

    /* Google's message is quoted, truncated, never whole. */
    n = (size_t)snprintf(long_msg, sizeof(long_msg), "{\"error\":{\"code\":400,\"message\":\"");
    while (n < 1000)
        long_msg[n++] = 'x';
    str_copy(long_msg + n, sizeof(long_msg) - n, "\",\"status\":\"INVALID_ARGUMENT\"}}");
    reply.http_status = 400;
    reply.body = long_msg;
    reply.body_len = strlen(long_msg);
    gemini_classify(&reply, 1, &out);
    ck_assert_msg(strstr(out.error_message, "gemini rejected the request (http 400 "
                                            "invalid_argument): xxxx") == out.error_message,
                  "message: %s", out.error_message);
    ck_assert_msg(strstr(out.error_message, "...") != NULL, "message: %s", out.error_message);
    ck_assert_uint_lt(strlen(out.error_message), 200);
    provider_output_release(&out);
}
END_TEST

START_TEST(duration_table)
{
    static const struct {
        const char *in;
        int want;
    } rows[] = {
        {"37s", 37}, {"0s", 0},  {"0.5s", 1}, {"1.000s", 1}, {"2.001s", 3}, {"", -1},
        {"s", -1},   {"37", -1}, {"-3s", -1}, {"abc", -1},   {"1.5ms", -1}, {NULL, -1},
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(rows); i++)
        ck_assert_msg(gemini_parse_duration(rows[i].in) == rows[i].want, "\"%s\": got %d, want %d",
                      rows[i].in ? rows[i].in : "(null)", gemini_parse_duration(rows[i].in),
                      rows[i].want);
}
END_TEST

/* ---- sniffing and media types ------------------------------------------------- */

static const uint8_t png_magic[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
static const uint8_t jpeg_magic[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'};
static const uint8_t webp_magic[] = "RIFF\x24\0\0\0WEBPVP8 ";
static const uint8_t heic_magic[] = "\0\0\0\x18"
                                    "ftypheic\0\0\0\0mif1heic";
static const uint8_t heif_magic[] = "\0\0\0\x14"
                                    "ftypmif1\0\0\0\0mif1";
static const uint8_t avif_magic[] = "\0\0\0\x1c"
                                    "ftypavif\0\0\0\0avifmif1miaf";
static const uint8_t avif_mif1_magic[] = "\0\0\0\x18"
                                         "ftypmif1\0\0\0\0avifmif1";
static const uint8_t gif_magic[] = "GIF89a\x01\0\x01\0";
static const uint8_t html_body[] = "<!doctype html><html>nope</html>";

START_TEST(sniff_table)
{
    static const struct {
        const uint8_t *data;
        size_t len;
        const char *want;
    } rows[] = {
        {png_magic, sizeof(png_magic), "image/png"},
        {jpeg_magic, sizeof(jpeg_magic), "image/jpeg"},
        {webp_magic, sizeof(webp_magic) - 1, "image/webp"},
        {heic_magic, sizeof(heic_magic) - 1, "image/heic"},
        {heif_magic, sizeof(heif_magic) - 1, "image/heif"},
        {avif_magic, sizeof(avif_magic) - 1, NULL},
        {avif_mif1_magic, sizeof(avif_mif1_magic) - 1, NULL},
        {gif_magic, sizeof(gif_magic) - 1, NULL},
        {html_body, sizeof(html_body) - 1, NULL},
        {png_magic, 7, NULL},
        {jpeg_magic, 2, NULL},
        {NULL, 0, NULL},
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        const char *got = image_sniff_type(rows[i].data, rows[i].len);

        ck_assert_msg((got == NULL && rows[i].want == NULL) ||
                          (got && rows[i].want && strcmp(got, rows[i].want) == 0),
                      "row %zu: got %s, want %s", i, got ? got : "NULL",
                      rows[i].want ? rows[i].want : "NULL");
    }
}
END_TEST

START_TEST(media_type_table)
{
    static const struct {
        const char *in, *want;
        bool allowed;
    } rows[] = {
        {"image/png", "image/png", true},
        {"Image/PNG; charset=binary", "image/png", true},
        {"  image/jpeg ;q=1", "image/jpeg", true},
        {"image/jpg", "image/jpeg", true},
        {"image/pjpeg", "image/jpeg", true},
        {"image/webp", "image/webp", true},
        {"image/heic", "image/heic", true},
        {"image/heif", "image/heif", true},
        {"image/gif", "image/gif", false},
        {"application/octet-stream", "application/octet-stream", false},
        {"text/html; charset=utf-8", "text/html", false},
        {"", "", false},
        {NULL, "", false},
    };
    char out[64];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        media_type_normalise(rows[i].in, out, sizeof(out));
        ck_assert_msg(strcmp(out, rows[i].want) == 0, "\"%s\": got \"%s\", want \"%s\"",
                      rows[i].in ? rows[i].in : "(null)", out, rows[i].want);
        ck_assert_msg(image_type_allowed(out) == rows[i].allowed, "\"%s\": allowed %d", out,
                      image_type_allowed(out));
    }
}
END_TEST

/* ---- a local origin and fake Gemini on 127.0.0.1 -------------------------------- */

struct fake {
    struct MHD_Daemon *d;
    int port;
    char base[64];
    atomic_bool stopping;
    atomic_int gemini_calls;
    pthread_mutex_t lock;
    /* what the fake Gemini answers, and what it last received */
    int gem_status;
    char *gem_body;
    long gem_sleep_ms;
    char *last_body;
    char last_key[128];
    char last_path[256];
    char last_ctype[128];
    /* a small PNG room for /img/png */
    struct buf png;
};

struct upload {
    char *body;
    size_t len;
};

static struct fake *F;
static struct http_client *C;

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const void *body,
                             size_t len, const char *ctype)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (ctype)
        MHD_add_response_header(r, "Content-Type", ctype);
    if (code >= 300 && code < 400)
        MHD_add_response_header(r, "Location", "http://127.0.0.1:1/elsewhere.png");
    if (code == 429)
        MHD_add_response_header(r, "Retry-After", "1");
    ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static void fake_sleep(struct fake *f, long ms)
{
    int64_t end = time_mono_ms() + ms;

    while (time_mono_ms() < end && !atomic_load(&f->stopping))
        time_sleep_ms(5);
}

/* The origin's images: name, Content-Type (NULL: none) and bytes. */
static enum MHD_Result serve_image(struct fake *f, struct MHD_Connection *conn, const char *name)
{
    static char big[64 << 10];
    static const struct {
        const char *name, *ctype;
        const uint8_t *data;
        size_t len;
    } images[] = {
        {"octet-jpeg", "application/octet-stream", jpeg_magic, sizeof(jpeg_magic)},
        {"none-webp", NULL, webp_magic, sizeof(webp_magic) - 1},
        {"heic", "image/heic", heic_magic, sizeof(heic_magic) - 1},
        {"gif", "image/gif", gif_magic, sizeof(gif_magic) - 1},
        {"html", "text/html", html_body, sizeof(html_body) - 1},
        {"octet-html", "application/octet-stream", html_body, sizeof(html_body) - 1},
        {"liar", "image/png", html_body, sizeof(html_body) - 1},
        {"avif", "application/octet-stream", avif_magic, sizeof(avif_magic) - 1},
        {"empty", "image/png", png_magic, 0},
    };
    size_t i;

    if (strcmp(name, "png") == 0)
        return reply(conn, 200, f->png.data, f->png.len, "image/png");
    if (strcmp(name, "png-params") == 0)
        return reply(conn, 200, f->png.data, f->png.len, "Image/PNG; charset=binary");
    if (strcmp(name, "mislabelled") == 0)
        return reply(conn, 200, f->png.data, f->png.len, "image/jpeg");
    if (strcmp(name, "big") == 0) {
        memcpy(big, png_magic, sizeof(png_magic));
        return reply(conn, 200, big, sizeof(big), "image/png");
    }
    for (i = 0; i < ARRAY_SIZE(images); i++)
        if (strcmp(name, images[i].name) == 0)
            return reply(conn, 200, images[i].data, images[i].len, images[i].ctype);
    return reply(conn, 404, "no such image", 13, "text/plain");
}

static enum MHD_Result serve_gemini(struct fake *f, struct MHD_Connection *conn, const char *url,
                                    struct upload *up)
{
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "x-goog-api-key");
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    char *body;
    int status;
    long sleep_ms;

    atomic_fetch_add(&f->gemini_calls, 1);
    pthread_mutex_lock(&f->lock);
    free(f->last_body);
    f->last_body = xmalloc(up->len + 1);
    memcpy(f->last_body, up->body ? up->body : "", up->len);
    f->last_body[up->len] = '\0';
    str_copy(f->last_key, sizeof(f->last_key), key ? key : "");
    str_copy(f->last_path, sizeof(f->last_path), url);
    str_copy(f->last_ctype, sizeof(f->last_ctype), ct ? ct : "");
    body = xstrdup(f->gem_body ? f->gem_body : "{}");
    status = f->gem_status ? f->gem_status : 200;
    sleep_ms = f->gem_sleep_ms;
    pthread_mutex_unlock(&f->lock);
    if (sleep_ms > 0)
        fake_sleep(f, sleep_ms);
    {
        enum MHD_Result ret = reply(conn, (unsigned)status, body, strlen(body), "application/json");

        free(body);
        return ret;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **req_cls)
{
    struct fake *f = cls;
    struct upload *up = *req_cls;
    int64_t code;

    UNUSED(version);
    UNUSED(method);
    if (!up) {
        *req_cls = xcalloc(1, sizeof(*up));
        return MHD_YES;
    }
    if (*data_size > 0) {
        up->body = xrealloc(up->body, up->len + *data_size);
        memcpy(up->body + up->len, data, *data_size);
        up->len += *data_size;
        *data_size = 0;
        return MHD_YES;
    }
    if (str_starts_with(url, "/img/"))
        return serve_image(f, conn, url + 5);
    if (str_starts_with(url, "/status/") && str_to_i64(url + 8, 100, 599, &code))
        return reply(conn, (unsigned)code, "status", 6, "text/plain");
    if (strcmp(url, "/slow") == 0) {
        fake_sleep(f, 2000);
        return reply(conn, 200, f->png.data, f->png.len, "image/png");
    }
    if (str_starts_with(url, "/v1beta/models/"))
        return serve_gemini(f, conn, url, up);
    return reply(conn, 404, "not found", 9, "text/plain");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct upload *up = *req_cls;

    UNUSED(cls);
    UNUSED(conn);
    UNUSED(toe);
    if (up) {
        free(up->body);
        free(up);
        *req_cls = NULL;
    }
}

static void fake_start(void)
{
    struct sockaddr_in sin;
    const union MHD_DaemonInfo *info;
    struct image room;
    struct http_client_options co = {.retry_base_ms = 10, .retry_cap_ms = 50};

    F = xcalloc(1, sizeof(*F));
    pthread_mutex_init(&F->lock, NULL);
    buf_init(&F->png, 1 << 20);
    image_demo_room(&room, 32, 24, 7);
    ck_assert_int_eq(png_encode(&room, &F->png), ST_OK);
    image_release(&room);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    F->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                            NULL, NULL, on_request, F, MHD_OPTION_SOCK_ADDR, &sin,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, F, MHD_OPTION_END);
    ck_assert_ptr_nonnull(F->d);
    info = MHD_get_daemon_info(F->d, MHD_DAEMON_INFO_BIND_PORT);
    F->port = info->port;
    snprintf(F->base, sizeof(F->base), "http://127.0.0.1:%d", F->port);
    C = http_client_new(&co);
}

static void fake_stop(void)
{
    atomic_store(&F->stopping, true);
    MHD_stop_daemon(F->d);
    http_client_free(C);
    free(F->gem_body);
    free(F->last_body);
    buf_release(&F->png);
    pthread_mutex_destroy(&F->lock);
    free(F);
    F = NULL;
    C = NULL;
}

static void fake_answer(int status, const char *body, long sleep_ms)
{
    pthread_mutex_lock(&F->lock);
    free(F->gem_body);
    F->gem_body = xstrdup(body);
    F->gem_status = status;
    F->gem_sleep_ms = sleep_ms;
    pthread_mutex_unlock(&F->lock);
}

static const char *url_of(const char *path)
{
    static char url[256];

    ck_assert(str_printf(url, sizeof(url), "%s%s", F->base, path));
    return url;
}

/* ---- fetch_image ------------------------------------------------------------- */

struct fetch_row {
    const char *path;
    enum status want;
    const char *code;
    const char *ctype;
};

static const struct fetch_row fetch_rows[] = {
    {"/img/png", ST_OK, "", "image/png"},
    {"/img/png-params", ST_OK, "", "image/png"},
    {"/img/mislabelled", ST_OK, "", "image/png"},
    {"/img/octet-jpeg", ST_OK, "", "image/jpeg"},
    {"/img/none-webp", ST_OK, "", "image/webp"},
    {"/img/heic", ST_OK, "", "image/heic"},
    {"/img/gif", ST_UNSUPPORTED_MEDIA, "image_unsupported_type", ""},
    {"/img/html", ST_UNSUPPORTED_MEDIA, "image_unsupported_type", ""},
    {"/img/octet-html", ST_UNSUPPORTED_MEDIA, "image_unsupported_type", ""},
    {"/img/liar", ST_UNSUPPORTED_MEDIA, "image_unsupported_type", ""},
    {"/img/avif", ST_UNSUPPORTED_MEDIA, "image_unsupported_type", ""},
    {"/img/big", ST_TOO_LARGE, "image_too_large", ""},
    {"/img/empty", ST_INVALID, "image_fetch_failed", ""},
    {"/img/missing", ST_NOT_FOUND, "image_fetch_failed", ""},
    {"/status/410", ST_NOT_FOUND, "image_fetch_failed", ""},
    {"/status/403", ST_PERMISSION_DENIED, "image_fetch_failed", ""},
    {"/status/401", ST_PERMISSION_DENIED, "image_fetch_failed", ""},
    {"/status/400", ST_INVALID, "image_fetch_failed", ""},
    {"/status/302", ST_INVALID, "image_fetch_failed", ""},
    {"/status/429", ST_RATE_LIMITED, "image_fetch_failed", ""},
    {"/status/500", ST_UNAVAILABLE, "image_fetch_failed", ""},
    {"/status/503", ST_UNAVAILABLE, "image_fetch_failed", ""},
    {"/status/504", ST_TIMEOUT, "image_fetch_failed", ""},
};

static const struct fetch_limits insecure = {
    .max_bytes = 16 << 10, .timeout_ms = 3000, .max_attempts = 2, .allow_insecure = true};

START_TEST(fetch_table)
{
    const struct fetch_row *r = &fetch_rows[_i];
    char ctype[FETCH_CONTENT_TYPE_MAX];
    struct buf out;
    struct error err;
    enum status st;

    buf_init(&out, 1 << 20);
    error_clear(&err);
    st = fetch_image(C, url_of(r->path), &insecure, &out, ctype, &err);
    ck_assert_msg(st == r->want, "%s: status %s, want %s (%s)", r->path, status_name(st),
                  status_name(r->want), err.message);
    ck_assert_msg(strcmp(ctype, r->ctype) == 0, "%s: type \"%s\", want \"%s\"", r->path, ctype,
                  r->ctype);
    if (st == ST_OK) {
        ck_assert_uint_gt(out.len, 0);
        ck_assert_str_eq(image_sniff_type(out.data, out.len), r->ctype);
    } else {
        ck_assert_msg(strcmp(err.code, r->code) == 0, "%s: code \"%s\", want \"%s\"", r->path,
                      err.code, r->code);
        ck_assert_uint_eq(out.len, 0);
        ck_assert_msg(strstr(err.message, "127.0.0.1") != NULL, "%s: message names no url: %s",
                      r->path, err.message);
    }
    buf_release(&out);
}
END_TEST

START_TEST(fetch_png_bytes_and_retry_after)
{
    char ctype[FETCH_CONTENT_TYPE_MAX];
    struct buf out;
    struct error err;

    buf_init(&out, 1 << 20);
    ck_assert_int_eq(fetch_image(C, url_of("/img/png"), &insecure, &out, ctype, &err), ST_OK);
    ck_assert_uint_eq(out.len, F->png.len);
    ck_assert_mem_eq(out.data, F->png.data, out.len);
    /* A failure leaves the buffer empty, and passes the peer's wait on. */
    ck_assert_int_eq(fetch_image(C, url_of("/status/429"), &insecure, &out, ctype, &err),
                     ST_RATE_LIMITED);
    ck_assert_int_eq(err.retry_after_s, 1);
    ck_assert_uint_eq(out.len, 0);
    /* The caller's own bound applies too. */
    buf_release(&out);
    buf_init(&out, 16);
    ck_assert_int_eq(fetch_image(C, url_of("/img/png"), &insecure, &out, ctype, &err),
                     ST_TOO_LARGE);
    ck_assert_str_eq(err.code, "image_too_large");
    buf_release(&out);
    /* NULL err and NULL limits are allowed. */
    buf_init(&out, 1 << 20);
    ck_assert_int_eq(fetch_image(C, url_of("/img/gif"), NULL, &out, ctype, NULL),
                     ST_PERMISSION_DENIED); /* defaults are strict: no http */
    buf_release(&out);
}
END_TEST

START_TEST(fetch_timeout)
{
    struct fetch_limits lim = insecure;
    char ctype[FETCH_CONTENT_TYPE_MAX];
    struct buf out;
    struct error err;
    int64_t t0 = time_mono_ms();

    lim.timeout_ms = 200;
    lim.max_attempts = 1;
    buf_init(&out, 1 << 20);
    ck_assert_int_eq(fetch_image(C, url_of("/slow"), &lim, &out, ctype, &err), ST_TIMEOUT);
    ck_assert_str_eq(err.code, "image_fetch_failed");
    ck_assert(status_is_transient(err.status));
    ck_assert_int_lt(time_mono_ms() - t0, 1500);
    buf_release(&out);
}
END_TEST

/* With allow_insecure off: https only, and no loopback, private or metadata targets. */
START_TEST(fetch_refuses_private_targets)
{
    static const char *const hosts[] = {
        "127.0.0.1", "localhost", "169.254.169.254", "10.0.0.1", "[::1]", "192.168.1.1",
    };
    struct fetch_limits strict = insecure;
    char ctype[FETCH_CONTENT_TYPE_MAX], url[128];
    struct buf out;
    struct error err;
    size_t i;
    enum status st;

    strict.allow_insecure = false;
    buf_init(&out, 1 << 20);
    /* plain http is refused before anything else */
    st = fetch_image(C, url_of("/img/png"), &strict, &out, ctype, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "http: %s (%s)", status_name(st), err.message);
    ck_assert_str_eq(err.code, "image_url_not_allowed");
    for (i = 0; i < ARRAY_SIZE(hosts); i++) {
        snprintf(url, sizeof(url), "https://%s:%d/img/x.png", hosts[i], F->port);
        st = fetch_image(C, url, &strict, &out, ctype, &err);
        ck_assert_msg(st == ST_PERMISSION_DENIED, "%s: %s (%s)", url, status_name(st), err.message);
        ck_assert_msg(strcmp(err.code, "image_url_not_allowed") == 0, "%s: code %s", url, err.code);
        ck_assert_str_eq(ctype, "");
    }
    st = fetch_image(C, "ftp://example.com/x.png", &strict, &out, ctype, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "ftp: %s", status_name(st));
    st = fetch_image(C, "not a url", &strict, &out, ctype, &err);
    ck_assert_msg(st == ST_INVALID || st == ST_PERMISSION_DENIED, "garbage: %s", status_name(st));
    st = fetch_image(C, "", &strict, &out, ctype, &err);
    ck_assert_int_eq(st, ST_INVALID);
    ck_assert_str_eq(err.code, "image_url_invalid");
    buf_release(&out);
}
END_TEST

START_TEST(fetch_hides_query)
{
    char ctype[FETCH_CONTENT_TYPE_MAX];
    struct buf out;
    struct error err;

    buf_init(&out, 1 << 20);
    ck_assert_int_eq(fetch_image(C, url_of("/img/missing?X-Goog-Signature=s3cr3t"), &insecure, &out,
                                 ctype, &err),
                     ST_NOT_FOUND);
    ck_assert_msg(strstr(err.message, "s3cr3t") == NULL, "message: %s", err.message);
    buf_release(&out);
}
END_TEST

/* ---- the provider against the fake ---------------------------------------------- */

static struct provider *new_provider(const char *model, const char *image_size, bool image_only)
{
    struct gemini_options o = {
        .base_url = F->base,
        .api_key = "test-key-123456",
        .model = model,
        .timeout_ms = 2000,
        .fetch_max_bytes = insecure.max_bytes,
        .fetch_timeout_ms = insecure.timeout_ms,
        .fetch_max_attempts = insecure.max_attempts,
        .allow_insecure = true,
        .max_output_bytes = 1 << 20,
        .image_size = image_size,
        .image_only = image_only,
    };
    struct provider *p = provider_gemini_new(&o, C);

    ck_assert_ptr_nonnull(p);
    return p;
}

static const char *ok_body(void)
{
    static char body[4096];
    struct buf b64;

    buf_init(&b64, sizeof(body));
    ck_assert_int_eq(base64_encode(&b64, F->png.data, F->png.len, B64_STD), ST_OK);
    ck_assert(str_printf(body, sizeof(body),
                         "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ok\"},"
                         "{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"%s\"}}]},"
                         "\"finishReason\":\"STOP\"}]}",
                         b64.data));
    buf_release(&b64);
    return body;
}

/* Part i of the request's first content (borrowed). */
static json_t *part(json_t *req, size_t i)
{
    json_t *content = json_array_get(json_object_get(req, "contents"), 0);

    return json_array_get(json_object_get(content, "parts"), i);
}

/* The last request the fake Gemini received, parsed (new reference). */
static json_t *last_request(void)
{
    json_t *v;

    pthread_mutex_lock(&F->lock);
    v = json_loads(F->last_body ? F->last_body : "", 0, NULL);
    pthread_mutex_unlock(&F->lock);
    ck_assert_ptr_nonnull(v);
    return v;
}

static void submit(struct provider *p, const char *image_path, const char *meta_json,
                   const char *options_json, int attempt, struct provider_output *out)
{
    json_t *meta = meta_json ? json_loads(meta_json, 0, NULL) : NULL;
    json_t *opts = options_json ? json_loads(options_json, 0, NULL) : NULL;
    struct provider_input in = {
        .batch_id = "b_test",
        .item_id = "i_1",
        .type = "virtual-staging",
        .image_url = url_of(image_path),
        .metadata = meta,
        .options = opts,
        .attempt = attempt,
    };

    ck_assert_int_eq(p->submit(p, &in, out), ST_OK);
    json_decref(meta);
    json_decref(opts);
}

START_TEST(provider_request_and_success)
{
    struct provider *p = new_provider("gemini-3.1-flash-image", "2K", false);
    struct provider_output out;
    const char *labels[] = {"gemini", "done", ""};
    double before =
        metric_value(metric_counter("provider_calls_total", "", "provider,outcome,code"), labels);
    json_t *req, *parts, *img, *cfg;
    struct buf raw;

    ck_assert_str_eq(p->name, "gemini");
    ck_assert(!p->async);
    fake_answer(200, ok_body(), 0);
    provider_output_init(&out, 1 << 20);
    submit(p, "/img/png", "{\"prompt\":\"stage it [meta]\"}",
           "{\"prompt\":\"batch prompt\",\"aspectRatio\":\"4:3\"}", 1, &out);
    ck_assert_msg(out.outcome == PROVIDER_DONE, "outcome %s: %s",
                  provider_outcome_name(out.outcome), out.error_message);
    ck_assert_str_eq(out.content_type, "image/png");
    ck_assert_uint_eq(out.data.len, F->png.len);
    ck_assert_mem_eq(out.data.data, F->png.data, out.data.len);
    ck_assert_double_eq(
        metric_value(metric_counter("provider_calls_total", "", "provider,outcome,code"), labels),
        before + 1);

    /* What went on the wire (providers.md 1.3). */
    ck_assert_str_eq(F->last_path, "/v1beta/models/gemini-3.1-flash-image:generateContent");
    ck_assert_str_eq(F->last_key, "test-key-123456");
    ck_assert_str_eq(F->last_ctype, "application/json");
    req = last_request();
    parts = json_object_get(json_array_get(json_object_get(req, "contents"), 0), "parts");
    ck_assert_int_eq(json_array_size(parts), 2);
    ck_assert_ptr_eq(part(req, 1), json_array_get(parts, 1));
    ck_assert_str_eq(json_str_or(json_array_get(parts, 0), "text", ""), "stage it [meta]");
    img = json_object_get(json_array_get(parts, 1), "inlineData");
    ck_assert_str_eq(json_str_or(img, "mimeType", ""), "image/png");
    buf_init(&raw, 1 << 20);
    ck_assert_int_eq(
        base64_decode(&raw, json_str_or(img, "data", ""), strlen(json_str_or(img, "data", ""))),
        ST_OK);
    ck_assert_uint_eq(raw.len, F->png.len);
    ck_assert_mem_eq(raw.data, F->png.data, raw.len);
    buf_release(&raw);
    cfg = json_object_get(req, "generationConfig");
    ck_assert_int_eq(json_array_size(json_object_get(cfg, "responseModalities")), 2);
    ck_assert_str_eq(
        json_string_value(json_array_get(json_object_get(cfg, "responseModalities"), 1)), "IMAGE");
    ck_assert_str_eq(json_str_or(json_object_get(cfg, "imageConfig"), "aspectRatio", ""), "4:3");
    ck_assert_str_eq(json_str_or(json_object_get(cfg, "imageConfig"), "imageSize", ""), "2K");
    ck_assert_int_eq(json_object_size(req), 2); /* contents and generationConfig, nothing else */
    json_decref(req);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(provider_prompt_and_config_choices)
{
    struct provider *p = new_provider("gemini-2.5-flash-image", "2K", true);
    struct provider_output out;
    json_t *req, *cfg;

    fake_answer(200, ok_body(), 0);
    provider_output_init(&out, 1 << 20);
    /* the batch's prompt when the item has none */
    submit(p, "/img/png", "{\"room\":\"kitchen\"}", "{\"prompt\":\"batch prompt\"}", 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_DONE);
    req = last_request();
    ck_assert_str_eq(json_str_or(part(req, 0), "text", ""), "batch prompt");
    cfg = json_object_get(req, "generationConfig");
    /* image only, and no imageSize for a 2.x model */
    ck_assert_int_eq(json_array_size(json_object_get(cfg, "responseModalities")), 1);
    ck_assert_ptr_null(json_object_get(cfg, "imageConfig"));
    json_decref(req);
    /* the default prompt when neither has one */
    submit(p, "/img/octet-jpeg", NULL, NULL, 1, &out);
    req = last_request();
    ck_assert_str_eq(json_str_or(part(req, 0), "text", ""), GEMINI_DEFAULT_PROMPT);
    ck_assert_str_eq(json_str_or(json_object_get(part(req, 1), "inlineData"), "mimeType", ""),
                     "image/jpeg");
    json_decref(req);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(provider_bad_options_make_no_call)
{
    struct provider *p = new_provider(NULL, NULL, false);
    struct provider_output out;
    int calls = atomic_load(&F->gemini_calls);

    provider_output_init(&out, 1 << 20);
    submit(p, "/img/png", NULL, "{\"aspectRatio\":\"7:5\"}", 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_PERMANENT);
    ck_assert_str_eq(out.error_code, "invalid_options");
    submit(p, "/img/png", NULL, "{\"imageSize\":\"8K\"}", 1, &out);
    ck_assert_str_eq(out.error_code, "invalid_options");
    ck_assert_int_eq(atomic_load(&F->gemini_calls), calls);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

/* Fetch failures: permanent for what will not change, transient for the rest; no Gemini call. */
START_TEST(provider_fetch_failures)
{
    static const struct {
        const char *path;
        enum provider_outcome want;
        const char *code;
    } rows[] = {
        {"/img/missing", PROVIDER_PERMANENT, "image_fetch_failed"},
        {"/status/403", PROVIDER_PERMANENT, "image_fetch_failed"},
        {"/img/big", PROVIDER_PERMANENT, "image_too_large"},
        {"/img/gif", PROVIDER_PERMANENT, "image_unsupported_type"},
        {"/status/503", PROVIDER_TRANSIENT, "image_fetch_failed"},
        {"/status/429", PROVIDER_TRANSIENT, "image_fetch_failed"},
    };
    struct provider *p = new_provider(NULL, NULL, false);
    struct provider_output out;
    int calls = atomic_load(&F->gemini_calls);
    size_t i;

    provider_output_init(&out, 1 << 20);
    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        submit(p, rows[i].path, NULL, NULL, 1, &out);
        ck_assert_msg(out.outcome == rows[i].want && strcmp(out.error_code, rows[i].code) == 0,
                      "%s: %s %s, want %s %s (%s)", rows[i].path,
                      provider_outcome_name(out.outcome), out.error_code,
                      provider_outcome_name(rows[i].want), rows[i].code, out.error_message);
        ck_assert_msg(str_starts_with(out.error_message, "gemini cannot get the input image: "),
                      "message: %s", out.error_message);
    }
    ck_assert_int_eq(out.retry_after_s, 1); /* the origin's Retry-After on its 429 */
    ck_assert_int_eq(atomic_load(&F->gemini_calls), calls);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(provider_refuses_loopback_when_strict)
{
    struct gemini_options o = {.base_url = F->base, .api_key = "k-123456", .timeout_ms = 2000};
    struct provider *p = provider_gemini_new(&o, C);
    struct provider_output out;

    ck_assert_ptr_nonnull(p);
    provider_output_init(&out, 1 << 20);
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_PERMANENT);
    ck_assert_str_eq(out.error_code, "image_url_not_allowed");
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

/* One bill per attempt: a 503 or a 429 is not retried at the HTTP layer. */
START_TEST(provider_not_retried_and_key_scrubbed)
{
    struct provider *p = new_provider(NULL, NULL, false);
    struct provider_output out;
    int calls;

    provider_output_init(&out, 1 << 20);
    fake_answer(503, ENVELOPE(503, "UNAVAILABLE", ""), 0);
    calls = atomic_load(&F->gemini_calls);
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_TRANSIENT);
    ck_assert_str_eq(out.error_code, "provider_unavailable");
    ck_assert_int_eq(out.retry_after_s, 0);
    ck_assert_int_eq(atomic_load(&F->gemini_calls), calls + 1);
    fake_answer(429, ENVELOPE(429, "RESOURCE_EXHAUSTED", ""), 0);
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_str_eq(out.error_code, "provider_rate_limited");
    ck_assert_int_eq(out.retry_after_s, 1); /* Retry-After passed on, not slept through */
    ck_assert_int_eq(atomic_load(&F->gemini_calls), calls + 2);

    /* A peer echoing the key never puts it in our messages. */
    fake_answer(400,
                "{\"error\":{\"code\":400,\"message\":\"API key test-key-123456 not valid.\","
                "\"status\":\"INVALID_ARGUMENT\"}}",
                0);
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_PERMANENT);
    ck_assert_msg(strstr(out.error_message, "test-key-123456") == NULL, "message: %s",
                  out.error_message);
    ck_assert_msg(strstr(out.error_message, "API key *** not valid") != NULL, "message: %s",
                  out.error_message);

    /* 402 pauses the batch */
    fake_answer(402, ENVELOPE(402, "RESOURCE_EXHAUSTED", ""), 0);
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_str_eq(out.error_code, "provider_no_credits");
    ck_assert(out.pause_batch);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(provider_timeout_and_output_cap)
{
    struct gemini_options o = {.base_url = F->base,
                               .api_key = "test-key-123456",
                               .timeout_ms = 200,
                               .allow_insecure = true};
    struct provider *p = provider_gemini_new(&o, C);
    struct provider_output out;
    int64_t t0 = time_mono_ms();

    ck_assert_ptr_nonnull(p);
    provider_output_init(&out, 1 << 20);
    fake_answer(200, ok_body(), 1500);
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_TRANSIENT);
    ck_assert_str_eq(out.error_code, "provider_timeout");
    ck_assert_int_lt(time_mono_ms() - t0, 1200);
    provider_output_release(&out);

    fake_answer(200, ok_body(), 0);
    provider_output_init(&out, 16); /* smaller than the image */
    submit(p, "/img/png", NULL, NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_PERMANENT);
    ck_assert_str_eq(out.error_code, "provider_output_too_large");
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(provider_new_validates)
{
    struct gemini_options o = {.api_key = "k"};
    struct provider *p;

    o.api_key = NULL;
    ck_assert_ptr_null(provider_gemini_new(&o, C));
    o.api_key = "bad key";
    ck_assert_ptr_null(provider_gemini_new(&o, C));
    o.api_key = "k";
    o.base_url = "ftp://example.com";
    ck_assert_ptr_null(provider_gemini_new(&o, C));
    o.base_url = NULL;
    o.model = "models/../x";
    ck_assert_ptr_null(provider_gemini_new(&o, C));
    o.model = NULL;
    o.image_size = "3K";
    ck_assert_ptr_null(provider_gemini_new(&o, C));
    o.image_size = NULL;
    p = provider_gemini_new(&o, C); /* every default */
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(p->poll);
    provider_free(p);
    provider_free(NULL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gemini");
    TCase *pure = tcase_create("classify");
    TCase *net = tcase_create("net");

    tcase_add_loop_test(pure, classify_table, 0, (int)ARRAY_SIZE(classify_rows));
    tcase_add_test(pure, classify_output_cap);
    tcase_add_test(pure, classify_messages);
    tcase_add_test(pure, duration_table);
    tcase_add_test(pure, sniff_table);
    tcase_add_test(pure, media_type_table);
    suite_add_tcase(s, pure);

    tcase_add_unchecked_fixture(net, fake_start, fake_stop);
    tcase_set_timeout(net, 60);
    tcase_add_loop_test(net, fetch_table, 0, (int)ARRAY_SIZE(fetch_rows));
    tcase_add_test(net, fetch_png_bytes_and_retry_after);
    tcase_add_test(net, fetch_timeout);
    tcase_add_test(net, fetch_refuses_private_targets);
    tcase_add_test(net, fetch_hides_query);
    tcase_add_test(net, provider_request_and_success);
    tcase_add_test(net, provider_prompt_and_config_choices);
    tcase_add_test(net, provider_bad_options_make_no_call);
    tcase_add_test(net, provider_fetch_failures);
    tcase_add_test(net, provider_refuses_loopback_when_strict);
    tcase_add_test(net, provider_not_retried_and_key_scrubbed);
    tcase_add_test(net, provider_timeout_and_output_cap);
    tcase_add_test(net, provider_new_validates);
    suite_add_tcase(s, net);
    return s;
}
