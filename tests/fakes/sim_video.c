/*
 * sim_video.c - Runway and PixVerse, simulated (see sim_video.h).
 *
 * A job's life is decided when it is created: it runs for job_ms (SIM_JOB_MS
 * or /control jobMs at that moment), PENDING for the first 20 % and then
 * RUNNING with a rising progress (Runway; PixVerse says status 5 all along),
 * and ends the way its prompt keywords chose. Runway queues jobs beyond its
 * concurrency as THROTTLED (first in, first out); PixVerse refuses them
 * with ErrCode 500044. Finished videos are served from /media as real MP4
 * files (mp4.h).
 */
#include "sim_video.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "mp4.h"
#include "providers/fetch.h"

#define JOBS_MAX         20000  /* the oldest tenth is forgotten past this */
#define UPLOADS_MAX      20000  /* likewise for PixVerse's uploaded images */
#define TRACE_IDS_MAX    200000 /* remembered trace ids; the set restarts past this */
#define BY_IMAGE_MAX     100000
#define IMAGE_KEY_MAX    256
#define SLEEP_SLICE_MS   20
#define MP4_W            96
#define MP4_H            64
#define PX_IMAGE_MAX     ((size_t)20 << 20)
#define PX_PROMPT_MAX    2048
#define PX_IMG_ID_BASE   627410861853514292LL /* real ids are this large, 3P saw this one */
#define PX_VIDEO_ID_BASE 9007199254740993LL   /* 2^53 + 1: a double cannot hold it */
#define STUCK_RELEASE_MS 600000 /* PixVerse frees a stuck job's slot after 10 minutes */
#define RUNWAY_VERSION   "2024-11-06"
#define RUNWAY_DOC_URL   "https://docs.dev.runwayml.com/api"

/* ---- state ------------------------------------------------------------------ */

enum fate {
    FATE_OK,
    FATE_MODERATION, /* Runway FAILED SAFETY.INPUT.IMAGE; PixVerse status 7 */
    FATE_INTERNAL,   /* Runway FAILED INTERNAL; PixVerse status 8 */
    FATE_BAD_OUTPUT, /* Runway FAILED INTERNAL.BAD_OUTPUT.CODE01 */
    FATE_STUCK,      /* PixVerse: a reused trace id, never finishes */
};

struct job {
    char provider; /* 'r' Runway, 'p' PixVerse */
    char id[40];   /* Runway: a UUID */
    int64_t px_id; /* PixVerse: the video_id */
    int64_t created_us;
    int64_t start_ms, end_ms; /* monotonic: out of THROTTLED, finished */
    int duration;
    int64_t seed;
    enum fate fate;
    bool deleted;
    char model[16];
    char quality[8];
    char ratio[12];
    char prompt[120]; /* the start, for result bodies */
};

struct upload {
    int64_t img_id;
    char hash[17];
};

struct counters {
    int64_t calls, submits, polls, cancels, delete_misses, uploads, trace_ids, trace_reuses;
    json_t *by_image;  /* {"<url or hash>": submits} */
    json_t *by_status; /* {"<http status>": n} */
    json_t *by_code;   /* PixVerse: {"<ErrCode>": n} */
};

struct sim_video {
    struct sim_video_config cfg;
    struct sim_env env;

    pthread_mutex_t lock; /* guards everything below */
    int64_t job_ms;
    bool runway_down, pixverse_down;
    struct job *jobs;
    size_t n_jobs, cap_jobs;
    struct upload *uploads;
    size_t n_uploads, cap_uploads;
    int64_t next_img, next_video;
    json_t *trace_ids; /* {"<uuid>": true} */
    struct counters runway, pixverse;
    struct buf mp4[MP4_SECONDS_MAX + 1]; /* one cached video per duration */
};

static void counters_init(struct counters *c)
{
    memset(c, 0, sizeof(*c));
    c->by_image = json_object();
    c->by_status = json_object();
    c->by_code = json_object();
}

static void counters_release(struct counters *c)
{
    json_decref(c->by_image);
    json_decref(c->by_status);
    json_decref(c->by_code);
}

static void counters_reset(struct counters *c)
{
    json_t *a = c->by_image, *b = c->by_status, *d = c->by_code;

    memset(c, 0, sizeof(*c));
    json_object_clear(a);
    json_object_clear(b);
    json_object_clear(d);
    c->by_image = a;
    c->by_status = b;
    c->by_code = d;
}

static void bump(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (!v && json_object_size(obj) >= BY_IMAGE_MAX)
        key = "other";
    v = json_object_get(obj, key);
    json_object_set_new(obj, key, json_integer((v ? json_integer_value(v) : 0) + 1));
}

static int64_t get_count(json_t *obj, const char *key)
{
    return json_int_or(obj, key, 0);
}

struct sim_video *sim_video_new(const struct sim_video_config *cfg, const struct sim_env *env)
{
    struct sim_video *v = xcalloc(1, sizeof(*v));
    size_t i;

    v->cfg = *cfg;
    v->env = *env;
    pthread_mutex_init(&v->lock, NULL);
    v->job_ms = cfg->job_ms;
    v->trace_ids = json_object();
    counters_init(&v->runway);
    counters_init(&v->pixverse);
    for (i = 0; i < ARRAY_SIZE(v->mp4); i++)
        buf_init(&v->mp4[i], (size_t)16 << 20);
    return v;
}

void sim_video_free(struct sim_video *v)
{
    size_t i;

    if (!v)
        return;
    for (i = 0; i < ARRAY_SIZE(v->mp4); i++)
        buf_release(&v->mp4[i]);
    counters_release(&v->runway);
    counters_release(&v->pixverse);
    json_decref(v->trace_ids);
    free(v->jobs);
    free(v->uploads);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

/* Adds a job (lock held); forgets the oldest tenth when full. */
static struct job *job_add(struct sim_video *v)
{
    if (v->n_jobs == JOBS_MAX) {
        size_t drop = JOBS_MAX / 10;

        memmove(v->jobs, v->jobs + drop, (v->n_jobs - drop) * sizeof(*v->jobs));
        v->n_jobs -= drop;
    }
    if (v->n_jobs == v->cap_jobs) {
        v->cap_jobs = v->cap_jobs ? v->cap_jobs * 2 : 64;
        v->jobs = xrealloc(v->jobs, v->cap_jobs * sizeof(*v->jobs));
    }
    memset(&v->jobs[v->n_jobs], 0, sizeof(*v->jobs));
    return &v->jobs[v->n_jobs++];
}

static struct job *job_find_runway(struct sim_video *v, const char *id)
{
    size_t i;

    for (i = v->n_jobs; i-- > 0;)
        if (v->jobs[i].provider == 'r' && strcmp(v->jobs[i].id, id) == 0)
            return &v->jobs[i];
    return NULL;
}

static struct job *job_find_pixverse(struct sim_video *v, int64_t id)
{
    size_t i;

    for (i = v->n_jobs; i-- > 0;)
        if (v->jobs[i].provider == 'p' && v->jobs[i].px_id == id)
            return &v->jobs[i];
    return NULL;
}

/* Jobs of a provider that have not finished at now (lock held). */
static int64_t active_jobs(const struct sim_video *v, char provider, int64_t now)
{
    int64_t n = 0;
    size_t i;

    for (i = 0; i < v->n_jobs; i++)
        if (v->jobs[i].provider == provider && !v->jobs[i].deleted &&
            (v->jobs[i].end_ms > now ||
             (v->jobs[i].fate == FATE_STUCK && now < v->jobs[i].start_ms + STUCK_RELEASE_MS)))
            n++;
    return n;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * When a new Runway task may start (lock held): first in, first out behind
 * the tasks that have not ended, at most runway_concurrency at a time.
 */
static int64_t runway_start_time(const struct sim_video *v, int64_t now)
{
    int64_t *ends, start = now;
    size_t i, n = 0;
    int64_t limit = v->cfg.runway_concurrency > 0 ? v->cfg.runway_concurrency : 1;

    ends = xcalloc(v->n_jobs + 1, sizeof(*ends));
    for (i = 0; i < v->n_jobs; i++)
        if (v->jobs[i].provider == 'r' && !v->jobs[i].deleted && v->jobs[i].end_ms > now)
            ends[n++] = v->jobs[i].end_ms;
    if ((int64_t)n >= limit) {
        qsort(ends, n, sizeof(*ends), cmp_i64);
        start = ends[n - (size_t)limit];
    }
    free(ends);
    return start;
}

/* The cached MP4 of a duration (lock held); NULL when it cannot be built. */
static const struct buf *video_bytes(struct sim_video *v, int seconds)
{
    struct buf *b;

    if (seconds < 1)
        seconds = 1;
    if (seconds > MP4_SECONDS_MAX)
        seconds = MP4_SECONDS_MAX;
    b = &v->mp4[seconds];
    if (b->len == 0 && mp4_build(b, MP4_W, MP4_H, seconds, (unsigned)seconds) != ST_OK)
        return NULL;
    return b;
}

/* ---- helpers ---------------------------------------------------------------- */

static bool sleep_ms(struct http_request *req, int64_t ms)
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

static bool has(const char *prompt, const char *keyword)
{
    return prompt && strstr(prompt, keyword) != NULL;
}

/* "http://<Host>" of the request: where the media of this simulator are. */
static void base_url(struct http_request *req, char *out, size_t cap)
{
    const char *host = http_request_header(req, "Host");

    if (!host || !host[0] || strlen(host) > 200 || strpbrk(host, " /?#@"))
        host = "127.0.0.1";
    snprintf(out, cap, "http://%s", host);
}

/* Length in UTF-16 code units (Runway's unit) or code points (PixVerse's). */
static size_t text_length(const char *s, bool utf16)
{
    size_t n = 0;

    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c & 0xc0) != 0x80)
            n += utf16 && c >= 0xf0 ? 2 : 1;
    }
    return n;
}

static bool uuid_valid(const char *s)
{
    size_t i;

    if (!s || strlen(s) != 36)
        return false;
    for (i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;

        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

static void copy_prompt(char *dst, size_t cap, const char *prompt)
{
    str_copy(dst, cap, prompt ? prompt : "");
    /* Never end in the middle of a UTF-8 sequence (the result goes into JSON). */
    if (prompt && strlen(prompt) >= cap) {
        size_t n = cap - 1;

        while (n > 0 && ((unsigned char)dst[n] & 0xc0) == 0x80)
            n--;
        if (n > 0 && ((unsigned char)dst[n] & 0x80))
            dst[n] = '\0';
    }
}

/* ---- Runway's answers ---------------------------------------------------------- */

static void runway_answer(struct sim_video *v, struct http_response *resp, int status, json_t *body)
{
    char key[8];

    snprintf(key, sizeof(key), "%d", status);
    pthread_mutex_lock(&v->lock);
    bump(v->runway.by_status, key);
    pthread_mutex_unlock(&v->lock);
    if (body)
        http_respond_json(resp, status, body);
    else
        http_respond_bytes(resp, status, NULL, "", 0);
}

static void runway_error(struct sim_video *v, struct http_response *resp, int status,
                         const char *message)
{
    runway_answer(v, resp, status, json_pack("{s:s}", "error", message));
}

/* Authorization and X-Runway-Version on every call; false when answered. */
static bool runway_gate(struct sim_video *v, struct http_request *req, struct http_response *resp)
{
    const char *auth = http_request_header(req, "Authorization");
    const char *version = http_request_header(req, "X-Runway-Version");
    const char *token = auth && str_starts_with(auth, "Bearer ") ? auth + 7 : NULL;
    bool ok;

    ok = token && (v->cfg.runway_key ? strcmp(token, v->cfg.runway_key) == 0
                                     : str_starts_with(token, "key_") && token[4]);
    if (!ok) {
        runway_error(v, resp, 401,
                     "Unauthorized: the API key is missing, invalid or disabled, or the account "
                     "is suspended.");
        return false;
    }
    if (!version || !version[0]) {
        runway_error(v, resp, 400,
                     "The X-Runway-Version header is required. Set it to \"" RUNWAY_VERSION "\".");
        return false;
    }
    if (strcmp(version, RUNWAY_VERSION) != 0) {
        runway_error(v, resp, 400, "Invalid X-Runway-Version header: no such API version.");
        return false;
    }
    return true;
}

static void issue(json_t *issues, const char *code, const char *path, const char *message)
{
    json_array_append_new(
        issues, json_pack("{s:s, s:[s], s:s}", "code", code, "path", path, "message", message));
}

/* Validates an image_to_video body (providers.md 2.2); issues are appended. */
static void runway_validate(const json_t *b, json_t *issues)
{
    static const char *const known[] = {"model",    "promptImage", "promptText",        "ratio",
                                        "duration", "seed",        "contentModeration", NULL};
    static const char *const gen4[] = {"1280:720", "720:1280", "1104:832", "832:1104",
                                       "960:960",  "1584:672", NULL};
    static const char *const gen3a[] = {"1280:768", "768:1280", NULL};
    const char *model = json_str_or(b, "model", NULL), *key;
    const json_t *image = json_object_get(b, "promptImage"),
                 *text = json_object_get(b, "promptText"), *ratio = json_object_get(b, "ratio"),
                 *duration = json_object_get(b, "duration"), *seed = json_object_get(b, "seed"),
                 *val;
    const char *const *ratios;
    bool legacy, gen45;
    size_t i;

    json_object_foreach((json_t *)b, key, val)
    {
        for (i = 0; known[i] && strcmp(known[i], key) != 0; i++)
            ;
        if (!known[i])
            issue(issues, "unrecognized_keys", key, "Unrecognized key in object");
    }
    if (!model || (strcmp(model, "gen4_turbo") != 0 && strcmp(model, "gen4.5") != 0 &&
                   strcmp(model, "gen3a_turbo") != 0)) {
        issue(issues, "invalid_union", "model",
              "No matching discriminator: expected \"gen4_turbo\" | \"gen4.5\" | "
              "\"gen3a_turbo\"");
        return;
    }
    legacy = strcmp(model, "gen3a_turbo") == 0;
    gen45 = strcmp(model, "gen4.5") == 0;
    ratios = legacy ? gen3a : gen4;
    if (!json_is_string(image) || json_string_length(image) == 0) {
        issue(issues, "invalid_type", "promptImage", "Expected string, received undefined");
    } else {
        const char *u = json_string_value(image);

        if (str_starts_with(u, "data:")) {
            if (!str_starts_with(u, "data:image/") || !strstr(u, ";base64,"))
                issue(issues, "invalid_string", "promptImage",
                      "Invalid data URI: it must include the media type and be base64");
            else if (json_string_length(image) > 5 * 1024 * 1024)
                issue(issues, "too_big", "promptImage", "Data URIs must be at most 5 MB");
        } else if (!str_starts_with(u, "https://") && !str_starts_with(u, "http://")) {
            issue(issues, "invalid_string", "promptImage", "Only HTTPS URLs are allowed");
        } else if (json_string_length(image) > 2048) {
            issue(issues, "too_big", "promptImage", "URLs must be at most 2048 characters");
        }
    }
    if (text && (!json_is_string(text) || json_string_length(text) == 0))
        issue(issues, "invalid_type", "promptText", "Expected a non-empty string");
    else if (text && text_length(json_string_value(text), true) > 1000)
        issue(issues, "too_big", "promptText", "String must contain at most 1000 character(s)");
    else if (!text && (legacy || gen45))
        issue(issues, "invalid_type", "promptText", "Required");
    if (!json_is_string(ratio)) {
        issue(issues, "invalid_type", "ratio", "Required");
    } else {
        for (i = 0; ratios[i] && strcmp(ratios[i], json_string_value(ratio)) != 0; i++)
            ;
        if (!ratios[i])
            issue(issues, "invalid_value", "ratio",
                  legacy ? "Invalid option: expected one of \"1280:768\"|\"768:1280\""
                         : "Invalid option: expected one of \"1280:720\"|\"720:1280\"|"
                           "\"1104:832\"|\"832:1104\"|\"960:960\"|\"1584:672\"");
    }
    if (duration) {
        json_int_t d = json_is_integer(duration) ? json_integer_value(duration) : -1;

        if (legacy ? d != 5 && d != 10 : d < 2 || d > 10)
            issue(issues, "invalid_value", "duration",
                  legacy ? "Invalid option: expected 5 | 10"
                         : "Number must be an integer between 2 and 10");
    } else if (gen45) {
        issue(issues, "invalid_type", "duration", "Required");
    }
    if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0 ||
                 json_integer_value(seed) > 4294967295LL))
        issue(issues, "too_big", "seed", "Number must be an integer between 0 and 4294967295");
}

/* Random faults of SIM_FAIL_RATE on create: 502, 503 or 504, equally likely. */
static void runway_random_failure(struct sim_video *v, struct http_response *resp)
{
    double pick = v->env.random(v->env.ud);

    http_response_header(resp, "Retry-After", "1");
    if (pick < 1.0 / 3)
        runway_error(v, resp, 502, "Bad gateway.");
    else if (pick < 2.0 / 3)
        runway_error(v, resp, 503, "The service is temporarily overloaded. Please retry.");
    else
        runway_error(v, resp, 504, "The service could not satisfy the request in time.");
}

static void handle_runway_create(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    struct sim_faults f = v->env.faults(v->env.ud);
    const char *body, *prompt, *image;
    char key[IMAGE_KEY_MAX], id[37];
    json_t *root = NULL, *issues = NULL;
    struct job *j;
    int64_t now, n_image;
    bool down, throttled;
    size_t len;

    pthread_mutex_lock(&v->lock);
    v->runway.calls++;
    down = v->runway_down;
    pthread_mutex_unlock(&v->lock);
    if (f.latency_ms > 0 && !sleep_ms(req, f.latency_ms)) {
        runway_error(v, resp, 503, "The service is shutting down.");
        return;
    }
    if (!runway_gate(v, req, resp))
        return;
    if (down) {
        runway_error(v, resp, 503, "The service is temporarily unavailable.");
        return;
    }
    body = http_request_body(req, &len);
    root = len ? json_loadb(body, len, 0, NULL) : NULL;
    if (!json_is_object(root)) {
        runway_answer(
            v, resp, 400,
            json_pack("{s:s, s:s}", "error", "Invalid JSON body.", "docUrl", RUNWAY_DOC_URL));
        goto out;
    }
    issues = json_array();
    runway_validate(root, issues);
    if (json_array_size(issues) > 0) {
        runway_answer(v, resp, 400,
                      json_pack("{s:s, s:O, s:s}", "error", "Validation of body failed", "issues",
                                issues, "docUrl", RUNWAY_DOC_URL));
        goto out;
    }
    if (f.fail_rate > 0 && v->env.random(v->env.ud) < f.fail_rate) {
        runway_random_failure(v, resp);
        goto out;
    }
    prompt = json_str_or(root, "promptText", "");
    if (has(prompt, "[nocredit]")) {
        runway_error(v, resp, 400, "You do not have enough credits to run this task.");
        goto out;
    }
    if (has(prompt, "[daily]")) {
        runway_error(v, resp, 429,
                     "You have reached the maximum number of generations for this model in the "
                     "last 24 hours.");
        goto out;
    }

    image = json_str_or(root, "promptImage", "");
    if (str_starts_with(image, "data:")) {
        char hex[65];

        sha256_hex(image, strlen(image), hex);
        snprintf(key, sizeof(key), "data:%.16s", hex);
    } else {
        str_copy(key, sizeof(key), image);
    }
    id_uuid4(id);
    now = time_mono_ms();
    pthread_mutex_lock(&v->lock);
    bump(v->runway.by_image, key);
    n_image = get_count(v->runway.by_image, key);
    v->runway.submits++;
    j = job_add(v);
    j->provider = 'r';
    str_copy(j->id, sizeof(j->id), id);
    j->created_us = time_now_us();
    j->start_ms = runway_start_time(v, now);
    j->end_ms = j->start_ms + v->job_ms;
    throttled = j->start_ms > now;
    j->duration = (int)json_int_or(root, "duration", 10);
    j->seed = json_int_or(root, "seed", 0);
    str_copy(j->model, sizeof(j->model), json_str_or(root, "model", ""));
    str_copy(j->ratio, sizeof(j->ratio), json_str_or(root, "ratio", ""));
    copy_prompt(j->prompt, sizeof(j->prompt), prompt);
    if (has(prompt, "[moderation]"))
        j->fate = FATE_MODERATION;
    else if (has(prompt, "[internal]") && n_image == 1)
        j->fate = FATE_INTERNAL;
    else if (has(prompt, "[badoutput]"))
        j->fate = FATE_BAD_OUTPUT;
    pthread_mutex_unlock(&v->lock);
    log_write(
        LOG_INFO,
        json_pack("{s:s, s:s, s:b}", "provider", "runway", "taskId", id, "throttled", throttled),
        "runway task %s created", id);
    /* An injected timeout comes after the task exists: the answer is what gets lost. */
    if (f.timeout_rate > 0 && v->env.random(v->env.ud) < f.timeout_rate &&
        !sleep_ms(req, f.timeout_ms)) {
        runway_error(v, resp, 503, "The service is shutting down.");
        goto out;
    }
    runway_answer(v, resp, 200, json_pack("{s:s}", "id", id));
out:
    json_decref(issues);
    json_decref(root);
}

/* The task object of providers.md 2.3 (lock held). */
static json_t *runway_task_json(struct sim_video *v, const struct job *j, int64_t now,
                                const char *base)
{
    char created[RFC3339_MAX], url[320], jwt[24];
    json_t *t;
    double p;

    time_format_rfc3339(j->created_us, created, sizeof(created));
    t = json_pack("{s:s, s:s}", "id", j->id, "createdAt", created);
    if (now < j->start_ms) {
        json_object_set_new(t, "status", json_string("THROTTLED"));
    } else if (now < j->start_ms + (j->end_ms - j->start_ms) / 5) {
        json_object_set_new(t, "status", json_string("PENDING"));
    } else if (now < j->end_ms) {
        p = (double)(now - j->start_ms) / (double)(j->end_ms - j->start_ms);
        p = (p - 0.2) / 0.8;
        json_object_set_new(t, "status", json_string("RUNNING"));
        json_object_set_new(t, "progress", json_real((double)(int)(p * 100) / 100));
    } else {
        switch (j->fate) {
        case FATE_MODERATION:
            json_object_set_new(t, "status", json_string("FAILED"));
            json_object_set_new(t, "failure",
                                json_string("Your input image did not pass content moderation."));
            json_object_set_new(t, "failureCode", json_string("SAFETY.INPUT.IMAGE"));
            break;
        case FATE_INTERNAL:
            json_object_set_new(t, "status", json_string("FAILED"));
            json_object_set_new(t, "failure",
                                json_string("An unexpected error occurred. Please try again."));
            json_object_set_new(t, "failureCode", json_string("INTERNAL"));
            break;
        case FATE_BAD_OUTPUT:
            json_object_set_new(t, "status", json_string("FAILED"));
            json_object_set_new(t, "failure",
                                json_string("The output did not pass our quality checks."));
            json_object_set_new(t, "failureCode", json_string("INTERNAL.BAD_OUTPUT.CODE01"));
            break;
        default:
            id_random(jwt, sizeof(jwt), "", 20);
            snprintf(url, sizeof(url), "%s/media/%s.mp4?_jwt=%s", base, j->id, jwt);
            json_object_set_new(t, "status", json_string("SUCCEEDED"));
            json_object_set_new(t, "output", json_pack("[s]", url));
            break;
        }
    }
    UNUSED(v);
    return t;
}

static void handle_runway_task(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    const char *id = http_request_param(req, "id");
    char base[240];
    struct job *j;
    json_t *t = NULL;

    if (!runway_gate(v, req, resp))
        return;
    base_url(req, base, sizeof(base));
    pthread_mutex_lock(&v->lock);
    v->runway.polls++;
    j = id ? job_find_runway(v, id) : NULL;
    if (j && !j->deleted)
        t = runway_task_json(v, j, time_mono_ms(), base);
    pthread_mutex_unlock(&v->lock);
    if (!t) {
        runway_error(v, resp, 404, "Task not found.");
        return;
    }
    runway_answer(v, resp, 200, t);
}

static void handle_runway_delete(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    const char *id = http_request_param(req, "id");
    struct job *j;
    bool found;

    if (!runway_gate(v, req, resp))
        return;
    pthread_mutex_lock(&v->lock);
    j = id ? job_find_runway(v, id) : NULL;
    found = j && !j->deleted;
    if (found) {
        j->deleted = true; /* cancels it if it runs, deletes its output if it finished */
        v->runway.cancels++;
    } else {
        v->runway.delete_misses++;
    }
    pthread_mutex_unlock(&v->lock);
    if (!found) {
        runway_error(v, resp, 404, "Task not found.");
        return;
    }
    runway_answer(v, resp, 204, NULL);
}

/* ---- PixVerse's answers -------------------------------------------------------- */

static void px_answer(struct sim_video *v, struct http_response *resp, int status, long long code,
                      const char *msg, json_t *data)
{
    char key[24];

    pthread_mutex_lock(&v->lock);
    snprintf(key, sizeof(key), "%d", status);
    bump(v->pixverse.by_status, key);
    snprintf(key, sizeof(key), "%lld", code);
    bump(v->pixverse.by_code, key);
    pthread_mutex_unlock(&v->lock);
    http_respond_json(resp, status,
                      json_pack("{s:I, s:s, s:o}", "ErrCode", (json_int_t)code, "ErrMsg", msg,
                                "Resp", data ? data : json_null()));
}

static void px_html(struct sim_video *v, struct http_response *resp, int status)
{
    static const char html[] = "<html><head><title>%d</title></head><body><center><h1>%d %s"
                               "</h1></center><hr><center>nginx</center></body></html>";
    char body[256], key[8];

    snprintf(body, sizeof(body), html, status, status,
             status == 503 ? "Service Temporarily Unavailable" : "Internal Server Error");
    snprintf(key, sizeof(key), "%d", status);
    pthread_mutex_lock(&v->lock);
    bump(v->pixverse.by_status, key);
    pthread_mutex_unlock(&v->lock);
    http_respond_bytes(resp, status, "text/html", body, strlen(body));
}

/*
 * API-KEY and a UUID Ai-trace-id on every call (providers.md 3.1); false
 * when answered. *reused tells whether the trace id was seen before.
 */
static bool px_gate(struct sim_video *v, struct http_request *req, struct http_response *resp,
                    bool *reused)
{
    const char *key = http_request_header(req, "API-KEY");
    const char *trace = http_request_header(req, "Ai-trace-id");

    *reused = false;
    pthread_mutex_lock(&v->lock);
    v->pixverse.calls++;
    pthread_mutex_unlock(&v->lock);
    if (!key || !key[0] || (v->cfg.pixverse_key && strcmp(key, v->cfg.pixverse_key) != 0)) {
        px_answer(v, resp, 401, 10005, "Invalid API-KEY", NULL);
        return false;
    }
    if (!uuid_valid(trace)) {
        px_answer(v, resp, 400, 400017,
                  "Invalid parameter: the Ai-trace-id header must be a UUID, unique per request",
                  NULL);
        return false;
    }
    pthread_mutex_lock(&v->lock);
    if (json_object_get(v->trace_ids, trace)) {
        *reused = true;
        v->pixverse.trace_reuses++;
    } else {
        if (json_object_size(v->trace_ids) >= TRACE_IDS_MAX)
            json_object_clear(v->trace_ids);
        json_object_set_new(v->trace_ids, trace, json_true());
        v->pixverse.trace_ids++;
    }
    pthread_mutex_unlock(&v->lock);
    if (*reused)
        log_warn("pixverse trace id %s was used before", trace);
    return true;
}

/* The bytes of the multipart part named name; false when there is none. */
static bool multipart_part(struct http_request *req, const char *name, const char **data,
                           size_t *len)
{
    const char *ct = http_request_header(req, "Content-Type"), *b, *body, *end, *p;
    char boundary[128], delim[140], want[160];
    size_t blen, n;

    if (!ct || !str_starts_with(ct, "multipart/form-data"))
        return false;
    b = strstr(ct, "boundary=");
    if (!b)
        return false;
    b += 9;
    if (*b == '"')
        b++;
    blen = strcspn(b, "\";");
    if (blen == 0 || blen >= sizeof(boundary))
        return false;
    memcpy(boundary, b, blen);
    boundary[blen] = '\0';
    snprintf(delim, sizeof(delim), "--%s", boundary);
    snprintf(want, sizeof(want), "name=\"%s\"", name);
    body = http_request_body(req, &n);
    end = body + n;
    p = memmem(body, n, delim, strlen(delim));
    while (p) {
        const char *headers = p + strlen(delim), *payload, *next;

        if (end - headers >= 2 && headers[0] == '-' && headers[1] == '-')
            return false; /* the closing delimiter */
        payload = memmem(headers, (size_t)(end - headers), "\r\n\r\n", 4);
        if (!payload)
            return false;
        payload += 4;
        next = memmem(payload, (size_t)(end - payload), delim, strlen(delim));
        if (!next || next - payload < 2)
            return false;
        if (memmem(headers, (size_t)(payload - headers), want, strlen(want))) {
            *data = payload;
            *len = (size_t)(next - payload - 2); /* the CRLF before the delimiter */
            return true;
        }
        p = next;
    }
    return false;
}

static void handle_px_upload(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    struct sim_faults f = v->env.faults(v->env.ud);
    const char *data = NULL;
    char hash[65], url[160];
    struct upload *u;
    int64_t id;
    size_t len = 0;
    bool reused, down;

    if (f.latency_ms > 0 && !sleep_ms(req, f.latency_ms)) {
        px_html(v, resp, 503);
        return;
    }
    if (!px_gate(v, req, resp, &reused))
        return;
    pthread_mutex_lock(&v->lock);
    down = v->pixverse_down;
    pthread_mutex_unlock(&v->lock);
    if (down) {
        px_html(v, resp, 503);
        return;
    }
    if (!multipart_part(req, "image", &data, &len)) {
        px_answer(v, resp, 200, 400011,
                  multipart_part(req, "image_url", &data, &len)
                      ? "Invalid parameter: this simulator takes the image file, not image_url"
                      : "Empty parameter: image",
                  NULL);
        return;
    }
    if (len > PX_IMAGE_MAX) {
        px_answer(v, resp, 200, 500030, "Image size exceeds the limit of 20MB or 4000x4000", NULL);
        return;
    }
    {
        const char *type = image_sniff_type(data, len);

        if (!type || (strcmp(type, "image/png") != 0 && strcmp(type, "image/jpeg") != 0 &&
                      strcmp(type, "image/webp") != 0)) {
            px_answer(v, resp, 200, 500032, "Invalid image format", NULL);
            return;
        }
    }
    if (f.fail_rate > 0 && v->env.random(v->env.ud) < f.fail_rate) {
        px_html(v, resp, 500);
        return;
    }
    sha256_hex(data, len, hash);
    hash[16] = '\0';
    pthread_mutex_lock(&v->lock);
    v->pixverse.uploads++;
    if (v->n_uploads == UPLOADS_MAX) {
        memmove(v->uploads, v->uploads + UPLOADS_MAX / 10,
                (UPLOADS_MAX - UPLOADS_MAX / 10) * sizeof(*v->uploads));
        v->n_uploads -= UPLOADS_MAX / 10;
    }
    if (v->n_uploads == v->cap_uploads) {
        v->cap_uploads = v->cap_uploads ? v->cap_uploads * 2 : 64;
        v->uploads = xrealloc(v->uploads, v->cap_uploads * sizeof(*v->uploads));
    }
    u = &v->uploads[v->n_uploads++];
    id = PX_IMG_ID_BASE + v->next_img++;
    u->img_id = id;
    str_copy(u->hash, sizeof(u->hash), hash);
    pthread_mutex_unlock(&v->lock);
    snprintf(url, sizeof(url), "https://media.pixverse.ai/openapi/sim/%s.png", hash);
    px_answer(v, resp, 200, 0, "success",
              json_pack("{s:I, s:s}", "img_id", (json_int_t)id, "img_url", url));
}

static const struct {
    const char *name;
    int min_d, max_d; /* durations: {5, 8} when max_d is 8 and min_d 5, {5, 8, 10}, or a range */
    bool motion, short_1080;
} px_models[] = {
    {"v3.5", 5, 8, true, true},  {"v4", 5, 8, true, true},      {"v4.5", 5, 8, true, true},
    {"v5", 5, 8, false, true},   {"v5.5", 5, 10, false, false}, {"v5.6", 5, 10, false, false},
    {"v6", 1, 15, false, false}, {"c1", 1, 15, false, false},
};

static bool px_duration_ok(size_t m, json_int_t d)
{
    if (px_models[m].max_d == 8)
        return d == 5 || d == 8;
    if (px_models[m].max_d == 10)
        return d == 5 || d == 8 || d == 10;
    return d >= px_models[m].min_d && d <= px_models[m].max_d;
}

/* Validates a generate body (providers.md 3.3); 0 or the ErrCode, with msg. */
static long long px_validate(const json_t *b, const char **msg, size_t *model_index)
{
    static const char *const qualities[] = {"360p", "540p", "720p", "1080p", NULL};
    const json_t *img = json_object_get(b, "img_id"), *model = json_object_get(b, "model"),
                 *prompt = json_object_get(b, "prompt"), *dur = json_object_get(b, "duration"),
                 *quality = json_object_get(b, "quality"),
                 *motion = json_object_get(b, "motion_mode"), *seed = json_object_get(b, "seed"),
                 *neg = json_object_get(b, "negative_prompt");
    const char *q;
    size_t m, i;

    if (!img || !model || !prompt || !dur || !quality) {
        *msg = "Empty parameter: img_id, model, prompt, duration and quality are required";
        return 400011;
    }
    if (!json_is_integer(img) || !json_is_string(model) || !json_is_string(prompt) ||
        !json_is_integer(dur) || !json_is_string(quality) || (motion && !json_is_string(motion)) ||
        (seed && !json_is_integer(seed)) || (neg && !json_is_string(neg))) {
        *msg = "Invalid binding: a parameter has the wrong type";
        return 400013;
    }
    for (m = 0; m < ARRAY_SIZE(px_models) && strcmp(px_models[m].name, json_string_value(model));
         m++)
        ;
    if (m == ARRAY_SIZE(px_models)) {
        *msg = "Invalid parameter: model";
        return 400017;
    }
    *model_index = m;
    if (json_string_length(prompt) == 0) {
        *msg = "Empty parameter: prompt";
        return 400011;
    }
    if (text_length(json_string_value(prompt), false) > PX_PROMPT_MAX) {
        *msg = "Prompt exceeds 2048 characters";
        return 400018;
    }
    if (neg && text_length(json_string_value(neg), false) > PX_PROMPT_MAX) {
        *msg = "Negative prompt exceeds 2048 characters";
        return 400019;
    }
    q = json_string_value(quality);
    for (i = 0; qualities[i] && strcmp(qualities[i], q) != 0; i++)
        ;
    if (!qualities[i]) {
        *msg = "Invalid parameter: quality";
        return 400017;
    }
    if (!px_duration_ok(m, json_integer_value(dur)) ||
        (px_models[m].short_1080 && strcmp(q, "1080p") == 0 && json_integer_value(dur) != 5)) {
        *msg = "Invalid parameter: duration is not supported for this model and quality";
        return 400017;
    }
    if (motion) {
        const char *mm = json_string_value(motion);

        if ((strcmp(mm, "normal") != 0 && strcmp(mm, "fast") != 0) || !px_models[m].motion ||
            (strcmp(mm, "fast") == 0 &&
             (json_integer_value(dur) != 5 || strcmp(q, "1080p") == 0))) {
            *msg = "Invalid parameter: motion_mode";
            return 400017;
        }
    }
    if (seed && (json_integer_value(seed) < 0 || json_integer_value(seed) > 2147483647LL)) {
        *msg = "Invalid parameter: seed";
        return 400017;
    }
    return 0;
}

static int px_credits(const char *quality, int duration, const char *motion)
{
    int c = strcmp(quality, "720p") == 0 ? 60 : strcmp(quality, "1080p") == 0 ? 120 : 45;

    c = c * duration / 5;
    return motion && strcmp(motion, "fast") == 0 ? c * 2 : c;
}

static void handle_px_generate(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    struct sim_faults f = v->env.faults(v->env.ud);
    const char *body, *msg = NULL, *prompt, *hash = NULL;
    json_t *root = NULL;
    struct job *j;
    long long code;
    int64_t img_id, now, video_id = 0, n_image = 0, active;
    size_t len, i, model = 0;
    bool reused, down;

    if (f.latency_ms > 0 && !sleep_ms(req, f.latency_ms)) {
        px_html(v, resp, 503);
        return;
    }
    if (!px_gate(v, req, resp, &reused))
        return;
    pthread_mutex_lock(&v->lock);
    down = v->pixverse_down;
    pthread_mutex_unlock(&v->lock);
    if (down) {
        px_html(v, resp, 503);
        return;
    }
    body = http_request_body(req, &len);
    root = len ? json_loadb(body, len, 0, NULL) : NULL;
    if (!json_is_object(root)) {
        px_answer(v, resp, 200, 400013, "Invalid binding: the body is not a JSON object", NULL);
        goto out;
    }
    code = px_validate(root, &msg, &model);
    if (code) {
        px_answer(v, resp, 200, code, msg, NULL);
        goto out;
    }
    if (f.fail_rate > 0 && v->env.random(v->env.ud) < f.fail_rate) {
        px_html(v, resp, 500);
        goto out;
    }
    prompt = json_str_or(root, "prompt", "");
    if (has(prompt, "[nobalance]")) {
        px_answer(v, resp, 200, 500090, "Insufficient balance", NULL);
        goto out;
    }
    if (has(prompt, "[imagemod]")) {
        px_answer(v, resp, 200, 500054, "The image is inappropriate", NULL);
        goto out;
    }
    if (has(prompt, "[highload]")) {
        px_answer(v, resp, 200, 500069, "The system is under high load, please try again later",
                  NULL);
        goto out;
    }
    img_id = json_integer_value(json_object_get(root, "img_id"));
    now = time_mono_ms();
    pthread_mutex_lock(&v->lock);
    for (i = v->n_uploads; i-- > 0;)
        if (v->uploads[i].img_id == img_id) {
            hash = v->uploads[i].hash;
            break;
        }
    active = active_jobs(v, 'p', now);
    if (hash && !has(prompt, "[busy]") && active < v->cfg.pixverse_concurrency) {
        bump(v->pixverse.by_image, hash);
        n_image = get_count(v->pixverse.by_image, hash);
        v->pixverse.submits++;
        j = job_add(v);
        j->provider = 'p';
        video_id = PX_VIDEO_ID_BASE + v->next_video++;
        j->px_id = video_id;
        j->created_us = time_now_us();
        j->start_ms = now;
        j->end_ms = now + v->job_ms;
        j->duration = (int)json_integer_value(json_object_get(root, "duration"));
        j->seed = json_int_or(root, "seed", 0);
        str_copy(j->model, sizeof(j->model), px_models[model].name);
        str_copy(j->quality, sizeof(j->quality), json_str_or(root, "quality", ""));
        copy_prompt(j->prompt, sizeof(j->prompt), prompt);
        if (reused)
            j->fate = FATE_STUCK; /* what PixVerse documents for a reused trace id */
        else if (has(prompt, "[moderation]"))
            j->fate = FATE_MODERATION;
        else if (has(prompt, "[failed]") && n_image == 1)
            j->fate = FATE_INTERNAL;
    }
    pthread_mutex_unlock(&v->lock);
    if (!hash) {
        px_answer(v, resp, 200, 400032, "Invalid image id", NULL);
        goto out;
    }
    if (!video_id) {
        px_answer(v, resp, 200, 500044,
                  "The number of concurrent generations has reached the limit of your plan", NULL);
        goto out;
    }
    log_write(LOG_INFO,
              json_pack("{s:s, s:I}", "provider", "pixverse", "videoId", (json_int_t)video_id),
              "pixverse video %lld started", (long long)video_id);
    if (f.timeout_rate > 0 && v->env.random(v->env.ud) < f.timeout_rate &&
        !sleep_ms(req, f.timeout_ms)) {
        px_html(v, resp, 503);
        goto out;
    }
    px_answer(v, resp, 200, 0, "success",
              json_pack("{s:I, s:i}", "video_id", (json_int_t)video_id, "credit",
                        px_credits(json_str_or(root, "quality", ""),
                                   (int)json_int_or(root, "duration", 5),
                                   json_str_or(root, "motion_mode", NULL))));
out:
    json_decref(root);
}

static void quality_size(const char *q, int *w, int *h)
{
    *h = strcmp(q, "360p") == 0    ? 360
         : strcmp(q, "720p") == 0  ? 720
         : strcmp(q, "1080p") == 0 ? 1080
                                   : 540;
    *w = *h * 16 / 9;
}

static void handle_px_result(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    const char *idtext = http_request_param(req, "id");
    char base[240], url[320], created[RFC3339_MAX];
    struct job *j;
    json_t *r = NULL;
    int64_t id = 0, now = time_mono_ms();
    bool reused;
    int status, w, h;

    if (!px_gate(v, req, resp, &reused))
        return;
    if (!idtext || strspn(idtext, "0123456789") != strlen(idtext) ||
        !str_to_i64(idtext, 1, INT64_MAX, &id)) {
        px_answer(v, resp, 200, 400017, "Invalid parameter: video id", NULL);
        return;
    }
    base_url(req, base, sizeof(base));
    pthread_mutex_lock(&v->lock);
    v->pixverse.polls++;
    j = job_find_pixverse(v, id);
    if (j) {
        const struct buf *mp4 = NULL;

        if (j->fate == FATE_STUCK || now < j->end_ms)
            status = 5;
        else if (j->fate == FATE_MODERATION)
            status = 7;
        else if (j->fate == FATE_INTERNAL)
            status = 8;
        else
            status = 1;
        if (status == 1)
            mp4 = video_bytes(v, j->duration);
        quality_size(j->quality, &w, &h);
        snprintf(url, sizeof(url), "%s/media/px-%lld.mp4", base, (long long)j->px_id);
        time_format_rfc3339(j->created_us, created, sizeof(created));
        r = json_pack("{s:I, s:i, s:s, s:s, s:s, s:I, s:i, s:i, s:I, s:i, s:s, s:s, s:s}", "id",
                      (json_int_t)j->px_id, "status", status, "url", status == 1 ? url : "",
                      "prompt", j->prompt, "negative_prompt", "", "seed", (json_int_t)j->seed,
                      "outputWidth", w, "outputHeight", h, "size", (json_int_t)(mp4 ? mp4->len : 0),
                      "resolution_ratio", h, "style", "", "create_time", created, "modify_time",
                      created);
    }
    pthread_mutex_unlock(&v->lock);
    if (!r) {
        px_answer(v, resp, 200, 500008, "Requested data not found", NULL);
        return;
    }
    px_answer(v, resp, 200, 0, "success", r);
}

/* ---- media ------------------------------------------------------------------------ */

static void handle_media(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sim_video *v = ud;
    const char *name = http_request_param(req, "name");
    const char *dot = name ? strrchr(name, '.') : NULL;
    char id[48];
    const struct buf *mp4 = NULL;
    struct buf copy;
    struct error err;
    struct job *j = NULL;
    int64_t px = 0, now = time_mono_ms();

    if (!dot || strcmp(dot, ".mp4") != 0 || (size_t)(dot - name) >= sizeof(id)) {
        error_set(&err, ST_NOT_FOUND, NULL, "no such media");
        http_respond_error(resp, &err);
        return;
    }
    memcpy(id, name, (size_t)(dot - name));
    id[dot - name] = '\0';
    buf_init(&copy, (size_t)16 << 20);
    pthread_mutex_lock(&v->lock);
    if (str_starts_with(id, "px-") && str_to_i64(id + 3, 1, INT64_MAX, &px))
        j = job_find_pixverse(v, px);
    else
        j = job_find_runway(v, id);
    if (j && !j->deleted && j->fate == FATE_OK && now >= j->end_ms)
        mp4 = video_bytes(v, j->duration);
    if (mp4)
        buf_append(&copy, mp4->data, mp4->len);
    pthread_mutex_unlock(&v->lock);
    if (!mp4) {
        error_set(&err, ST_NOT_FOUND, NULL, "no such media %.48s", name);
        http_respond_error(resp, &err);
    } else {
        http_respond_bytes(resp, 200, "video/mp4", copy.data, copy.len);
    }
    buf_release(&copy);
}

/* ---- stats and control -------------------------------------------------------------- */

void sim_video_stats(struct sim_video *v, json_t *out)
{
    int64_t now = time_mono_ms(), throttled = 0;
    size_t i;

    pthread_mutex_lock(&v->lock);
    for (i = 0; i < v->n_jobs; i++)
        if (v->jobs[i].provider == 'r' && !v->jobs[i].deleted && v->jobs[i].start_ms > now)
            throttled++;
    json_object_set_new(
        out, "runway",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "calls",
                  (json_int_t)v->runway.calls, "submits", (json_int_t)v->runway.submits, "polls",
                  (json_int_t)v->runway.polls, "cancels", (json_int_t)v->runway.cancels,
                  "deleteMisses", (json_int_t)v->runway.delete_misses, "active",
                  (json_int_t)active_jobs(v, 'r', now), "throttled", (json_int_t)throttled,
                  "byImage", json_deep_copy(v->runway.by_image), "byStatus",
                  json_deep_copy(v->runway.by_status)));
    json_object_set_new(
        out, "pixverse",
        json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "calls",
            (json_int_t)v->pixverse.calls, "uploads", (json_int_t)v->pixverse.uploads, "submits",
            (json_int_t)v->pixverse.submits, "polls", (json_int_t)v->pixverse.polls, "active",
            (json_int_t)active_jobs(v, 'p', now), "traceIds", (json_int_t)v->pixverse.trace_ids,
            "traceIdReuses", (json_int_t)v->pixverse.trace_reuses, "byImage",
            json_deep_copy(v->pixverse.by_image), "byStatus", json_deep_copy(v->pixverse.by_status),
            "byErrCode", json_deep_copy(v->pixverse.by_code)));
    pthread_mutex_unlock(&v->lock);
}

void sim_video_stats_reset(struct sim_video *v)
{
    pthread_mutex_lock(&v->lock);
    counters_reset(&v->runway);
    counters_reset(&v->pixverse);
    pthread_mutex_unlock(&v->lock);
}

void sim_video_control_get(struct sim_video *v, json_t *out)
{
    pthread_mutex_lock(&v->lock);
    json_object_set_new(out, "runwayDown", json_boolean(v->runway_down));
    json_object_set_new(out, "pixverseDown", json_boolean(v->pixverse_down));
    json_object_set_new(out, "jobMs", json_integer((json_int_t)v->job_ms));
    pthread_mutex_unlock(&v->lock);
}

enum status sim_video_control_set(struct sim_video *v, const json_t *body, struct error *err)
{
    bool rdown, pdown;
    int64_t job_ms;

    pthread_mutex_lock(&v->lock);
    rdown = v->runway_down;
    pdown = v->pixverse_down;
    job_ms = v->job_ms;
    pthread_mutex_unlock(&v->lock);
    if (json_get_bool(body, "runwayDown", JSON_OPTIONAL, &rdown, err) != ST_OK ||
        json_get_bool(body, "pixverseDown", JSON_OPTIONAL, &pdown, err) != ST_OK ||
        json_get_int(body, "jobMs", JSON_OPTIONAL, 0, 3600000, &job_ms, err) != ST_OK)
        return ST_INVALID;
    pthread_mutex_lock(&v->lock);
    v->runway_down = rdown;
    v->pixverse_down = pdown;
    v->job_ms = job_ms;
    pthread_mutex_unlock(&v->lock);
    return ST_OK;
}

void sim_video_routes(struct sim_video *v, struct http_server *srv)
{
    http_server_route(srv, "POST", "/v1/image_to_video", 0, handle_runway_create, v);
    http_server_route(srv, "GET", "/v1/tasks/{id}", 0, handle_runway_task, v);
    http_server_route(srv, "DELETE", "/v1/tasks/{id}", 0, handle_runway_delete, v);
    http_server_route(srv, "POST", "/openapi/v2/image/upload", 0, handle_px_upload, v);
    http_server_route(srv, "POST", "/openapi/v2/video/img/generate", 0, handle_px_generate, v);
    http_server_route(srv, "GET", "/openapi/v2/video/result/{id}", 0, handle_px_result, v);
    http_server_route(srv, "GET", "/media/{name}", 0, handle_media, v);
}
