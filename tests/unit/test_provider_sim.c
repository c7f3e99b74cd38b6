/*
 * test_provider_sim.c - the provider simulator (a child process, SIM_BIN)
 * driven by the real Gemini provider end to end, and by raw requests for
 * the API's validation rules.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/client.h"
#include "png.h"
#include "providers/fetch.h"
#include "providers/gemini.h"

#ifndef SIM_BIN
#error "SIM_BIN must name the provider-sim executable"
#endif

#define SIM_KEY "test-key-sim"

extern char **environ;

static pid_t sim_pid;
static char sim_url[64];
static struct http_client *C;
static char *small_png_b64; /* a 16x12 PNG, base64 */

/* ---- the simulator process -------------------------------------------------- */

static int free_port(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

static long http_get(const char *path, json_t **json, struct buf *raw, char *ctype, size_t cap);

static void sim_start(void)
{
    static char port_env[32];
    static const char *const overrides[] = {port_env,
                                            "BIND_ADDRESS=127.0.0.1",
                                            "SIM_SEED=7",
                                            "SIM_TIMEOUT_MS=3000",
                                            "LOG_LEVEL=WARNING",
                                            "SIM_API_KEY=" SIM_KEY,
                                            "SIM_FAIL_RATE=0",
                                            "SIM_TIMEOUT_RATE=0",
                                            "SIM_LATENCY_MS=0",
                                            "SHUTDOWN_GRACE_MS=3000",
                                            NULL};
    const char *envp[256];
    char *const argv[] = {(char *)SIM_BIN, NULL};
    size_t n = 0, i;
    int port = free_port();
    int64_t deadline;
    struct image img;
    struct buf png, b64;

    snprintf(port_env, sizeof(port_env), "PORT=%d", port);
    snprintf(sim_url, sizeof(sim_url), "http://127.0.0.1:%d", port);
    /* Our environment (sanitizer options...) minus what we set. */
    for (i = 0; environ[i] && n < ARRAY_SIZE(envp) - ARRAY_SIZE(overrides); i++) {
        size_t k, name_len = strcspn(environ[i], "=");
        bool ours = false;

        for (k = 0; overrides[k]; k++)
            ours = ours || (strncmp(environ[i], overrides[k], name_len) == 0 &&
                            overrides[k][name_len] == '=');
        if (!ours)
            envp[n++] = environ[i];
    }
    for (i = 0; overrides[i]; i++)
        envp[n++] = overrides[i];
    envp[n] = NULL;

    sim_pid = fork();
    ck_assert_int_ge(sim_pid, 0);
    if (sim_pid == 0) {
        execve(SIM_BIN, argv, (char *const *)envp);
        _exit(127);
    }
    C = http_client_new(&(struct http_client_options){.retry_base_ms = 10, .retry_cap_ms = 50});
    deadline = time_mono_ms() + 20000;
    while (http_get("/healthz", NULL, NULL, NULL, 0) != 200) {
        ck_assert_msg(time_mono_ms() < deadline, "provider-sim did not answer /healthz");
        time_sleep_ms(50);
    }

    image_demo_room(&img, 16, 12, 9);
    buf_init(&png, 1 << 20);
    ck_assert_int_eq(png_encode(&img, &png), ST_OK);
    buf_init(&b64, 1 << 20);
    ck_assert_int_eq(base64_encode(&b64, png.data, png.len, B64_STD), ST_OK);
    small_png_b64 = buf_take(&b64, NULL);
    buf_release(&png);
    image_release(&img);
}

/* SIGTERM: the simulator must drain and exit 0 (under ASan: without leaks). */
static void sim_stop(void)
{
    int64_t deadline = time_mono_ms() + 20000;
    int wstatus = 0;
    pid_t got = 0;

    kill(sim_pid, SIGTERM);
    while (time_mono_ms() < deadline && (got = waitpid(sim_pid, &wstatus, WNOHANG)) == 0)
        time_sleep_ms(20);
    if (got == 0) {
        kill(sim_pid, SIGKILL);
        waitpid(sim_pid, &wstatus, 0);
    }
    http_client_free(C);
    free(small_png_b64);
    ck_assert_msg(got == sim_pid, "provider-sim did not stop on SIGTERM");
    ck_assert_msg(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0,
                  "provider-sim exited with status %d", wstatus);
}

/* ---- raw requests ------------------------------------------------------------ */

static long request(const char *method, const char *path, const char *const *headers,
                    const char *body, json_t **json, struct buf *raw, char *ctype, size_t cap)
{
    char url[512];
    struct http_call call = {.method = method, .url = url, .headers = headers, .timeout_ms = 10000};
    struct http_result res;
    struct error err;
    long status;

    ck_assert(str_printf(url, sizeof(url), "%s%s", sim_url, path));
    if (body) {
        call.body = body;
        call.body_len = strlen(body);
    }
    http_result_init(&res);
    if (http_client_do(C, &call, &res, &err) != ST_OK) {
        http_result_release(&res);
        return -1;
    }
    status = res.status;
    if (json)
        *json = json_loadb(res.body.data ? res.body.data : "", res.body.len, 0, NULL);
    if (raw) {
        buf_reset(raw);
        buf_append(raw, res.body.data, res.body.len);
    }
    if (ctype)
        str_copy(ctype, cap, res.content_type);
    http_result_release(&res);
    return status;
}

static long http_get(const char *path, json_t **json, struct buf *raw, char *ctype, size_t cap)
{
    return request("GET", path, NULL, NULL, json, raw, ctype, cap);
}

static void control(const char *body)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    json_t *j = NULL;

    ck_assert_int_eq(request("POST", "/control", hdrs, body, &j, NULL, NULL, 0), 200);
    json_decref(j);
}

static void stats_reset(void)
{
    ck_assert_int_eq(request("POST", "/stats/reset", NULL, NULL, NULL, NULL, NULL, 0), 200);
}

/* First 16 hex digits of the SHA-256 of the demo image at path (the sim's byImage key). */
static void image_hash(const char *path, char out[17])
{
    struct buf raw;
    char hex[65];

    buf_init(&raw, 16 << 20);
    ck_assert_int_eq(http_get(path, NULL, &raw, NULL, 0), 200);
    sha256_hex(raw.data, raw.len, hex);
    memcpy(out, hex, 16);
    out[16] = '\0';
    buf_release(&raw);
}

/* ---- the provider against the simulator ----------------------------------------- */

static struct provider *new_provider(const char *model, const char *key, long timeout_ms)
{
    struct gemini_options o = {
        .base_url = sim_url,
        .api_key = key ? key : SIM_KEY,
        .model = model,
        .timeout_ms = timeout_ms ? timeout_ms : 10000,
        .allow_insecure = true,
        .fetch_timeout_ms = 10000,
        .fetch_max_attempts = 1,
    };
    struct provider *p = provider_gemini_new(&o, C);

    ck_assert_ptr_nonnull(p);
    return p;
}

static void run(struct provider *p, const char *image_path, const char *prompt, int attempt,
                struct provider_output *out)
{
    char url[256];
    json_t *meta = prompt ? json_pack("{s:s}", "prompt", prompt) : NULL;
    struct provider_input in = {
        .batch_id = "b_sim",
        .item_id = "i_sim",
        .type = "virtual-staging",
        .image_url = url,
        .metadata = meta,
        .attempt = attempt,
    };

    ck_assert(str_printf(url, sizeof(url), "%s%s", sim_url, image_path));
    ck_assert_int_eq(p->submit(p, &in, out), ST_OK);
    json_decref(meta);
}

static void assert_staged(const struct provider_output *out, const char *input_path)
{
    struct image in_img, out_img;
    struct buf raw;

    ck_assert_msg(out->outcome == PROVIDER_DONE, "outcome %s %s: %s",
                  provider_outcome_name(out->outcome), out->error_code, out->error_message);
    ck_assert_str_eq(out->content_type, "image/png");
    buf_init(&raw, 16 << 20);
    ck_assert_int_eq(http_get(input_path, NULL, &raw, NULL, 0), 200);
    ck_assert(png_decode((const uint8_t *)raw.data, raw.len, &in_img));
    ck_assert(png_decode((const uint8_t *)out->data.data, out->data.len, &out_img));
    ck_assert_int_eq(out_img.width, in_img.width);
    ck_assert_int_eq(out_img.height, in_img.height);
    ck_assert_msg(memcmp(out_img.rgb, in_img.rgb, (size_t)in_img.width * in_img.height * 3) != 0,
                  "the output is the input, unstaged");
    image_release(&in_img);
    image_release(&out_img);
    buf_release(&raw);
}

START_TEST(success_is_a_staged_png)
{
    static const char *const models[] = {"gemini-3.1-flash-image", "gemini-2.5-flash-image",
                                         "gemini-3-pro-image"};
    struct provider_output out;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(models); i++) {
        struct provider *p = new_provider(models[i], NULL, 0);

        provider_output_init(&out, 64 << 20);
        run(p, "/demo/3.png?w=160&h=120", "Stage this living room.", 1, &out);
        assert_staged(&out, "/demo/3.png?w=160&h=120");
        provider_output_release(&out);
        provider_free(p);
    }
    /* The full-size demo photo too (640x480). */
    {
        struct provider *p = new_provider(NULL, NULL, 0);

        provider_output_init(&out, 64 << 20);
        run(p, "/demo/4.png", NULL, 1, &out);
        assert_staged(&out, "/demo/4.png");
        provider_output_release(&out);
        provider_free(p);
    }
}
END_TEST

struct keyword_row {
    const char *prompt;
    int attempt;
    enum provider_outcome want;
    const char *code;
    int retry_after;
    bool pause;
};

static const struct keyword_row keyword_rows[] = {
    {"Stage it. [block]", 1, PROVIDER_PERMANENT, "provider_blocked", 0, false},
    {"Stage it. [safety]", 1, PROVIDER_PERMANENT, "provider_moderation", 0, false},
    {"Stage it. [noimage]", 1, PROVIDER_TRANSIENT, "provider_no_image", 0, false},
    {"Stage it. [noimage]", 3, PROVIDER_PERMANENT, "provider_no_image", 0, false},
    {"Stage it. [textonly]", 1, PROVIDER_TRANSIENT, "provider_no_image", 0, false},
    {"Stage it. [textonly]", 3, PROVIDER_PERMANENT, "provider_no_image", 0, false},
    {"Stage it. [recitation]", 1, PROVIDER_PERMANENT, "provider_recitation", 0, false},
    {"Stage it. [fail429]", 1, PROVIDER_TRANSIENT, "provider_rate_limited", 2, false},
    {"Stage it. [fail429day]", 1, PROVIDER_TRANSIENT, "provider_quota_exhausted", 3600, false},
    {"Stage it. [fail500]", 1, PROVIDER_TRANSIENT, "provider_unavailable", 0, false},
    {"Stage it. [fail503]", 1, PROVIDER_TRANSIENT, "provider_unavailable", 0, false},
    {"Stage it. [nocredit]", 1, PROVIDER_PERMANENT, "provider_no_credits", 0, true},
};

START_TEST(prompt_keywords)
{
    const struct keyword_row *r = &keyword_rows[_i];
    struct provider *p = new_provider(NULL, NULL, 0);
    struct provider_output out;

    provider_output_init(&out, 64 << 20);
    run(p, "/demo/10.png?w=64&h=48", r->prompt, r->attempt, &out);
    ck_assert_msg(out.outcome == r->want && strcmp(out.error_code, r->code) == 0,
                  "%s (attempt %d): %s %s, want %s %s (%s)", r->prompt, r->attempt,
                  provider_outcome_name(out.outcome), out.error_code,
                  provider_outcome_name(r->want), r->code, out.error_message);
    ck_assert_msg(out.retry_after_s == r->retry_after, "%s: retry after %d, want %d", r->prompt,
                  out.retry_after_s, r->retry_after);
    ck_assert_int_eq(out.pause_batch, r->pause);
    ck_assert_msg(strstr(out.error_message, SIM_KEY) == NULL, "key in message: %s",
                  out.error_message);
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(flaky_then_success_and_config_errors)
{
    struct provider *p = new_provider(NULL, NULL, 0);
    struct provider *unknown_model = new_provider("gemini-9-ultra-image", NULL, 0);
    struct provider *bad_key = new_provider(NULL, "wrong-key-123", 0);
    struct provider_output out;

    provider_output_init(&out, 64 << 20);
    /* "[flaky]" fails the first call for an image, then succeeds: a queue retry works. */
    run(p, "/demo/77.png?w=64&h=48", "Stage it. [flaky]", 1, &out);
    ck_assert_str_eq(out.error_code, "provider_unavailable");
    run(p, "/demo/77.png?w=64&h=48", "Stage it. [flaky]", 2, &out);
    assert_staged(&out, "/demo/77.png?w=64&h=48");

    run(unknown_model, "/demo/1.png?w=64&h=48", NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_PERMANENT);
    ck_assert_str_eq(out.error_code, "provider_model_not_found");
    run(bad_key, "/demo/1.png?w=64&h=48", NULL, 1, &out);
    ck_assert_int_eq(out.outcome, PROVIDER_PERMANENT);
    ck_assert_str_eq(out.error_code, "provider_auth_failed");
    ck_assert_msg(strstr(out.error_message, "wrong-key-123") == NULL, "key in message: %s",
                  out.error_message);
    provider_output_release(&out);
    provider_free(bad_key);
    provider_free(unknown_model);
    provider_free(p);
}
END_TEST

/* 30 % random faults over 100 calls: about 30 transient outcomes, the rest staged. */
START_TEST(random_faults)
{
    struct provider *p = new_provider(NULL, NULL, 0);
    struct provider_output out;
    int i, done = 0, transient = 0, other = 0, limited = 0;

    control("{\"failRate\":0.3}");
    for (i = 0; i < 100; i++) {
        char path[64];

        snprintf(path, sizeof(path), "/demo/%d.png?w=32&h=24", 1000 + i);
        provider_output_init(&out, 64 << 20);
        run(p, path, "Stage it.", 1, &out);
        if (out.outcome == PROVIDER_DONE) {
            done++;
        } else if (out.outcome == PROVIDER_TRANSIENT) {
            transient++;
            ck_assert_msg(strcmp(out.error_code, "provider_unavailable") == 0 ||
                              strcmp(out.error_code, "provider_rate_limited") == 0,
                          "code %s", out.error_code);
            if (strcmp(out.error_code, "provider_rate_limited") == 0) {
                limited++;
                ck_assert_int_eq(out.retry_after_s, 1);
            }
        } else {
            other++;
        }
        provider_output_release(&out);
    }
    control("{\"failRate\":0}");
    ck_assert_msg(transient >= 15 && transient <= 45, "%d transient of 100", transient);
    ck_assert_int_eq(done + transient, 100);
    ck_assert_int_eq(other, 0);
    ck_assert_int_gt(limited, 0);
    provider_free(p);
}
END_TEST

START_TEST(timeouts_are_transient)
{
    struct provider *p = new_provider(NULL, NULL, 300);
    struct provider_output out;
    int64_t t0;

    control("{\"timeoutRate\":1,\"timeoutMs\":3000}");
    provider_output_init(&out, 64 << 20);
    t0 = time_mono_ms();
    run(p, "/demo/20.png?w=32&h=24", "Stage it.", 1, &out);
    control("{\"timeoutRate\":0}");
    ck_assert_int_eq(out.outcome, PROVIDER_TRANSIENT);
    ck_assert_str_eq(out.error_code, "provider_timeout");
    ck_assert_int_lt(time_mono_ms() - t0, 2500);
    /* "[slow]" does the same for one item, whatever the rates. */
    run(p, "/demo/21.png?w=32&h=24", "Stage it. [slow]", 1, &out);
    ck_assert_str_eq(out.error_code, "provider_timeout");
    provider_output_release(&out);
    provider_free(p);
}
END_TEST

START_TEST(stats_count_calls_per_image)
{
    struct provider *p = new_provider(NULL, NULL, 0);
    struct provider_output out;
    char h5[17], h6[17];
    json_t *stats = NULL, *by_image, *gc;

    stats_reset();
    provider_output_init(&out, 64 << 20);
    run(p, "/demo/5.png?w=48&h=36", NULL, 1, &out);
    run(p, "/demo/5.png?w=48&h=36", NULL, 2, &out);
    run(p, "/demo/6.png?w=48&h=36", "Stage it. [fail503]", 1, &out);
    provider_output_release(&out);
    image_hash("/demo/5.png?w=48&h=36", h5);
    image_hash("/demo/6.png?w=48&h=36", h6);
    ck_assert_str_ne(h5, h6);
    ck_assert_int_eq(http_get("/stats", &stats, NULL, NULL, 0), 200);
    gc = json_object_get(stats, "generateContent");
    ck_assert_int_eq(json_int_or(gc, "calls", -1), 3);
    ck_assert_int_eq(json_int_or(gc, "ok", -1), 2);
    ck_assert_int_eq(json_int_or(gc, "failed", -1), 1);
    by_image = json_object_get(stats, "byImage");
    ck_assert_int_eq(json_object_size(by_image), 2);
    ck_assert_int_eq(json_int_or(by_image, h5, -1), 2);
    ck_assert_int_eq(json_int_or(by_image, h6, -1), 1);
    ck_assert_int_eq(json_int_or(json_object_get(stats, "byStatus"), "503", -1), 1);
    json_decref(stats);
    stats_reset();
    ck_assert_int_eq(http_get("/stats", &stats, NULL, NULL, 0), 200);
    ck_assert_int_eq(json_int_or(json_object_get(stats, "generateContent"), "calls", -1), 0);
    ck_assert_int_eq(json_object_size(json_object_get(stats, "byImage")), 0);
    json_decref(stats);
    provider_free(p);
}
END_TEST

/* ---- raw validation ------------------------------------------------------------- */

struct validation_row {
    const char *name;
    const char *action; /* after /v1beta/models/ */
    const char *key;    /* header value, NULL: none */
    const char *body;   /* "@IMG@" stands for a small PNG in base64 */
    long want;
    const char *status; /* Google status, NULL for success */
    const char *says;   /* substring of the message, or of the body on success */
};

#define GOOD_PARTS                                                                                 \
    "[{\"text\":\"Stage it\"},{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"@IMG@\"}}]"
#define CONTENTS(parts) "{\"contents\":[{\"role\":\"user\",\"parts\":" parts "}]"

static const struct validation_row validation_rows[] = {
    {"camel case", "gemini-3.1-flash-image:generateContent", SIM_KEY, CONTENTS(GOOD_PARTS) "}", 200,
     NULL, "\"inlineData\""},
    {"snake case", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(
         "[{\"text\":\"Stage it\"},{\"inline_data\":{\"mime_type\":\"image/png\","
         "\"data\":\"@IMG@\"}}]") ",\"generation_config\":{\"response_modalities\":[\"IMAGE\"],"
                                  "\"image_config\":{\"aspect_ratio\":\"4:3\"}}}",
     200, NULL, "\"finishReason\":\"STOP\""},
    {"key in the query", "gemini-3.1-flash-image:generateContent?key=" SIM_KEY, NULL,
     CONTENTS(GOOD_PARTS) "}", 200, NULL, "\"candidates\""},
    {"missing key", "gemini-3.1-flash-image:generateContent", NULL, CONTENTS(GOOD_PARTS) "}", 403,
     "PERMISSION_DENIED", "unregistered callers"},
    {"wrong key", "gemini-3.1-flash-image:generateContent", "nope", CONTENTS(GOOD_PARTS) "}", 400,
     "INVALID_ARGUMENT", "API key not valid"},
    {"unknown model", "gemini-1.0-pro-vision:generateContent", SIM_KEY, CONTENTS(GOOD_PARTS) "}",
     404, "NOT_FOUND", "models/gemini-1.0-pro-vision is not found"},
    {"unknown action", "gemini-3.1-flash-image:countTokens", SIM_KEY, CONTENTS(GOOD_PARTS) "}", 404,
     "NOT_FOUND", "Method not found"},
    {"malformed json", "gemini-3.1-flash-image:generateContent", SIM_KEY, "{\"contents\":[", 400,
     "INVALID_ARGUMENT", "Invalid JSON payload"},
    {"bad base64", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"text\":\"Stage it\"},{\"inlineData\":{\"mimeType\":\"image/png\","
              "\"data\":\"not*base64\"}}]") "}",
     400, "INVALID_ARGUMENT", "Base64 decoding failed"},
    {"two images", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"text\":\"Stage it\"},{\"inlineData\":{\"mimeType\":\"image/png\","
              "\"data\":\"@IMG@\"}},{\"inline_data\":{\"mime_type\":\"image/png\","
              "\"data\":\"@IMG@\"}}]") "}",
     400, "INVALID_ARGUMENT", "exactly one input image, got 2"},
    {"no image", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"text\":\"Stage it\"}]") "}", 400, "INVALID_ARGUMENT",
     "exactly one input image, got 0"},
    {"no prompt", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"inlineData\":{\"mimeType\":\"image/png\",\"data\":\"@IMG@\"}}]") "}", 400,
     "INVALID_ARGUMENT", "text prompt"},
    {"unsupported mime", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"text\":\"Stage it\"},{\"inlineData\":{\"mimeType\":\"image/gif\","
              "\"data\":\"@IMG@\"}}]") "}",
     400, "INVALID_ARGUMENT", "Unsupported MIME type: image/gif"},
    {"not an image", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"text\":\"Stage it\"},{\"inlineData\":{\"mimeType\":\"image/png\","
              "\"data\":\"aGVsbG8gd29ybGQ=\"}}]") "}",
     400, "INVALID_ARGUMENT", "Unable to process input image"},
    {"unknown top-level field", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"prompt\":\"x\"}", 400, "INVALID_ARGUMENT",
     "Unknown name \"prompt\": Cannot find field"},
    {"unknown part field", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS("[{\"text\":\"Stage it\",\"url\":\"x\"},{\"inlineData\":{\"mimeType\":\"image/"
              "png\",\"data\":\"@IMG@\"}}]") "}",
     400, "INVALID_ARGUMENT", "Unknown name \"url\" at 'contents[0].parts[0]'"},
    {"output mime type is vertex only", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"generationConfig\":{\"imageConfig\":{\"outputMimeType\":\"image/"
                          "jpeg\"}}}",
     400, "INVALID_ARGUMENT", "Unknown name \"outputMimeType\""},
    {"bad modality", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"generationConfig\":{\"responseModalities\":[\"VIDEO\"]}}", 400,
     "INVALID_ARGUMENT", "response_modalities[0]"},
    {"bad aspect ratio", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"generationConfig\":{\"imageConfig\":{\"aspectRatio\":\"7:5\"}}}", 400,
     "INVALID_ARGUMENT", "Unsupported aspect ratio"},
    {"image size on 2.5", "gemini-2.5-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"generationConfig\":{\"imageConfig\":{\"imageSize\":\"2K\"}}}", 400,
     "INVALID_ARGUMENT", "Image size is not supported"},
    {"image size on 3.1", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"generationConfig\":{\"imageConfig\":{\"imageSize\":\"2K\"}}}", 200,
     NULL, "\"inlineData\""},
    {"text only modality", "gemini-3.1-flash-image:generateContent", SIM_KEY,
     CONTENTS(GOOD_PARTS) ",\"generationConfig\":{\"responseModalities\":[\"TEXT\"]}}", 200, NULL,
     "\"text\""},
    {"empty contents", "gemini-3.1-flash-image:generateContent", SIM_KEY, "{\"contents\":[]}", 400,
     "INVALID_ARGUMENT", "contents is not specified"},
};

/* tmpl with every "@IMG@" replaced by the small PNG's base64 (caller frees). */
static char *expand(const char *tmpl)
{
    struct buf out;
    const char *p = tmpl, *at;

    buf_init(&out, 1 << 20);
    while ((at = strstr(p, "@IMG@")) != NULL) {
        buf_append(&out, p, (size_t)(at - p));
        buf_append_str(&out, small_png_b64);
        p = at + 5;
    }
    buf_append_str(&out, p);
    return buf_take(&out, NULL);
}

START_TEST(request_validation)
{
    const struct validation_row *r = &validation_rows[_i];
    char path[256], key_header[64];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    char *body = expand(r->body);
    struct buf raw;
    json_t *error;
    long status;

    if (r->key) {
        snprintf(key_header, sizeof(key_header), "x-goog-api-key: %s", r->key);
        headers[1] = key_header;
    }
    ck_assert(str_printf(path, sizeof(path), "/v1beta/models/%s", r->action));
    buf_init(&raw, 64 << 20);
    status = request("POST", path, headers, body, NULL, &raw, NULL, 0);
    ck_assert_msg(status == r->want, "%s: http %ld, want %ld: %.300s", r->name, status, r->want,
                  buf_str(&raw));
    if (r->status) {
        json_t *root = json_loads(buf_str(&raw), 0, NULL);

        error = json_object_get(root, "error");
        ck_assert_msg(json_is_object(error), "%s: no error envelope: %.300s", r->name,
                      buf_str(&raw));
        ck_assert_int_eq(json_int_or(error, "code", 0), r->want);
        ck_assert_str_eq(json_str_or(error, "status", ""), r->status);
        ck_assert_msg(strstr(json_str_or(error, "message", ""), r->says) != NULL,
                      "%s: message \"%s\" lacks \"%s\"", r->name, json_str_or(error, "message", ""),
                      r->says);
        json_decref(root);
    } else {
        ck_assert_msg(strstr(buf_str(&raw), r->says) != NULL, "%s: body lacks %s", r->name,
                      r->says);
    }
    buf_release(&raw);
    free(body);
}
END_TEST

START_TEST(wrong_key_has_error_info)
{
    static const char *const headers[] = {"x-goog-api-key: nope", NULL};
    json_t *root = NULL, *detail;
    char *body = expand(CONTENTS(GOOD_PARTS) "}");

    ck_assert_int_eq(request("POST", "/v1beta/models/gemini-3.1-flash-image:generateContent",
                             headers, body, &root, NULL, NULL, 0),
                     400);
    detail = json_array_get(json_object_get(json_object_get(root, "error"), "details"), 0);
    ck_assert_str_eq(json_str_or(detail, "reason", ""), "API_KEY_INVALID");
    json_decref(root);
    free(body);
}
END_TEST

/* ---- demo images, control, health ------------------------------------------------- */

START_TEST(demo_images)
{
    static const char *const cond[] = {"If-None-Match: \"demo-1-640x480\"", NULL};
    struct buf one, two, again;
    struct image img;
    char ctype[128];

    buf_init(&one, 16 << 20);
    buf_init(&two, 16 << 20);
    buf_init(&again, 16 << 20);
    ck_assert_int_eq(http_get("/demo/1.png", NULL, &one, ctype, sizeof(ctype)), 200);
    ck_assert_str_eq(ctype, "image/png");
    ck_assert(png_decode((const uint8_t *)one.data, one.len, &img));
    ck_assert_int_eq(img.width, 640);
    ck_assert_int_eq(img.height, 480);
    image_release(&img);
    ck_assert_int_eq(http_get("/demo/2.png", NULL, &two, NULL, 0), 200);
    ck_assert(one.len != two.len || memcmp(one.data, two.data, one.len) != 0);
    ck_assert_int_eq(http_get("/demo/1.png", NULL, &again, NULL, 0), 200);
    ck_assert_uint_eq(again.len, one.len);
    ck_assert_mem_eq(again.data, one.data, one.len);
    /* neighbours whose colours coincide still differ (the number is drawn in) */
    ck_assert_int_eq(http_get("/demo/1201.png", NULL, &two, NULL, 0), 200);
    ck_assert(one.len != two.len || memcmp(one.data, two.data, one.len) != 0);
    ck_assert_int_eq(request("GET", "/demo/1.png", cond, NULL, NULL, NULL, NULL, 0), 304);
    ck_assert_int_eq(http_get("/demo/1.jpg", NULL, NULL, NULL, 0), 404);
    ck_assert_int_eq(http_get("/demo/abc.png", NULL, NULL, NULL, 0), 404);
    ck_assert_int_eq(http_get("/demo/99999999.png", NULL, NULL, NULL, 0), 404);
    buf_release(&one);
    buf_release(&two);
    buf_release(&again);
}
END_TEST

START_TEST(control_and_health)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    json_t *j = NULL;

    ck_assert_int_eq(http_get("/healthz", NULL, NULL, NULL, 0), 200);
    ck_assert_int_eq(http_get("/control", &j, NULL, NULL, 0), 200);
    ck_assert_double_eq(json_real_value(json_object_get(j, "failRate")), 0);
    ck_assert_int_eq(json_int_or(j, "timeoutMs", -1), 3000);
    json_decref(j);
    ck_assert_int_eq(request("POST", "/control", hdrs, "{\"latencyMs\":5}", &j, NULL, NULL, 0),
                     200);
    ck_assert_int_eq(json_int_or(j, "latencyMs", -1), 5);
    json_decref(j);
    ck_assert_int_eq(request("POST", "/control", hdrs, "{\"failRate\":2}", NULL, NULL, NULL, 0),
                     400);
    ck_assert_int_eq(request("POST", "/control", hdrs, "{\"nope\":1}", NULL, NULL, NULL, 0), 400);
    control("{\"latencyMs\":0}");
    ck_assert_int_eq(http_get("/control", &j, NULL, NULL, 0), 200);
    ck_assert_int_eq(json_int_or(j, "latencyMs", -1), 0);
    json_decref(j);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("provider_sim");
    TCase *tc = tcase_create("sim");

    tcase_add_unchecked_fixture(tc, sim_start, sim_stop);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, control_and_health);
    tcase_add_test(tc, demo_images);
    tcase_add_test(tc, success_is_a_staged_png);
    tcase_add_loop_test(tc, prompt_keywords, 0, (int)ARRAY_SIZE(keyword_rows));
    tcase_add_test(tc, flaky_then_success_and_config_errors);
    tcase_add_test(tc, stats_count_calls_per_image);
    tcase_add_loop_test(tc, request_validation, 0, (int)ARRAY_SIZE(validation_rows));
    tcase_add_test(tc, wrong_key_has_error_info);
    tcase_add_test(tc, timeouts_are_transient);
    tcase_add_test(tc, random_faults);
    suite_add_tcase(s, tc);
    return s;
}
