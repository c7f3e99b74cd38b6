/*
 * runway.h - the video-runway provider: Runway's image-to-video API, an
 * asynchronous task (reference providers.md section 2, classification
 * policy section 4).
 *
 * submit() sends POST /v1/image_to_video with the partner's image URL as
 * promptImage (Runway fetches it) and answers PROVIDER_STARTED with the
 * task id. poll() reads GET /v1/tasks/{id}; when the task SUCCEEDED it
 * downloads output[0] (signed URLs that expire) into out->data and answers
 * PROVIDER_DONE with "video/mp4". cancel() sends DELETE /v1/tasks/{id}.
 *
 * Runway has no idempotency key: a repeated POST is a second task and a
 * second bill, so the POST is never retried here. When it fails without an
 * answer, what happened decides (see runway_classify): nothing sent (DNS,
 * connect) is a plain TRANSIENT; sent but unanswered (timeout, reset) is
 * ambiguous, "provider_submit_unknown": a task may exist that nobody will
 * poll. It is TRANSIENT by default, so the queue submits again: the item
 * gets its video at the price of a possible second bill (rare: it takes a
 * lost answer), logged at WARNING with the item so it can be reconciled.
 * Set fail_ambiguous_submit to make it PERMANENT instead (never a second
 * bill, but the item fails and must be retried by hand).
 *
 * The API key travels in the Authorization header only; it is never logged
 * and is scrubbed from any message.
 */
#ifndef PROVIDERS_RUNWAY_H
#define PROVIDERS_RUNWAY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/error.h"
#include "http/client.h"
#include "providers/provider.h"
#include "providers/video.h"

#define RUNWAY_DEFAULT_BASE_URL "https://api.dev.runwayml.com"
#define RUNWAY_API_VERSION      "2024-11-06"
#define RUNWAY_DEFAULT_MODEL    "gen4_turbo"
#define RUNWAY_DEFAULT_DURATION 5
#define RUNWAY_DEFAULT_PROMPT                                                                      \
    "Slow, smooth cinematic camera move through this room in soft natural light. Keep the "        \
    "room, its furniture and its layout exactly as they are. No people, no text."
#define RUNWAY_PROMPT_MAX    1000 /* UTF-16 code units, as Runway counts them */
#define RUNWAY_IMAGE_URL_MAX 2048
#define RUNWAY_SEED_MAX      4294967295LL
#define RUNWAY_JOB_ID_MAX    64

#define RUNWAY_DEFAULT_SUBMIT_TIMEOUT_MS 30000L
#define RUNWAY_DEFAULT_POLL_TIMEOUT_MS   15000L

/* A 429 on create is the daily generation cap (there is no per-minute cap): wait long. */
#define RUNWAY_DAILY_LIMIT_RETRY_S 900
/* THIRD_PARTY.UNAVAILABLE: the upstream model is busy; resubmit after a while. */
#define RUNWAY_BUSY_RETRY_S 30

/* ---- construction --------------------------------------------------------- */

struct runway_options {
    const char *base_url;       /* NULL or "": RUNWAY_DEFAULT_BASE_URL */
    const char *api_key;        /* required ("key_..."), sent as Authorization: Bearer */
    const char *model;          /* when the batch names none; NULL or "": RUNWAY_DEFAULT_MODEL */
    const char *default_prompt; /* NULL: RUNWAY_DEFAULT_PROMPT */
    long submit_timeout_ms;     /* the POST; 0: RUNWAY_DEFAULT_SUBMIT_TIMEOUT_MS */
    long poll_timeout_ms;       /* each GET or DELETE attempt; 0: RUNWAY_DEFAULT_POLL_TIMEOUT_MS */
    int poll_max_attempts;      /* GET and DELETE are retried; 0: the client's default */
    long download_timeout_ms;   /* per attempt; 0: VIDEO_DEFAULT_TIMEOUT_MS */
    int download_max_attempts;  /* 0: the client's default */
    size_t max_download_bytes;  /* 0: VIDEO_DEFAULT_MAX_BYTES; out->data's bound applies too */
    bool allow_insecure;        /* local runtime only: outputs over http and from loopback, and
                                   http partner image URLs */
    bool allow_legacy_models;   /* accept gen3a_turbo (removed from Runway's schema in 2026-06) */
    bool fail_ambiguous_submit; /* see the top of this file */
};

/*
 * Creates the provider (name "runway", asynchronous). Strings in o are
 * copied; c is borrowed and must outlive the provider. Returns NULL, after
 * logging an error naming the option, when the API key is missing or
 * malformed, the base URL is not http(s), or the model is not one this
 * service supports (see runway_validate_options).
 * New reference: free with provider_free().
 *
 * submit() reads in->image_url (Runway fetches it; in->image_data is not
 * used), in->item_id, the prompt (in->metadata
 * "prompt", else in->options "prompt", else the default prompt) and the
 * batch options "model", "ratio", "duration" and "seed" (see
 * runway_validate_options; defaults per model). poll() and cancel() take
 * the task id submit() returned. All of them are thread-safe; submit() and
 * poll() always return ST_OK with out->outcome set.
 *
 * cancel(): DELETE /v1/tasks/{id}. 2xx and 404 (already gone) are ST_OK;
 * otherwise a status with err set (ST_UNAUTHENTICATED for 401/403,
 * transient statuses for 429, 5xx and transport errors, ST_INVALID for a
 * malformed id or another 4xx).
 */
struct provider *provider_runway_new(const struct runway_options *o, struct http_client *c);

/* ---- options (pure) ---------------------------------------------------------- */

enum runway_validate_flags {
    RUNWAY_ALLOW_LEGACY = 1 << 0, /* accept gen3a_turbo */
};

/*
 * The request's knobs, resolved from a batch's options and the defaults.
 * model and ratio are borrowed: from the options, or static strings.
 */
struct runway_params {
    const char *model;
    const char *ratio;
    int duration; /* seconds */
    bool has_seed;
    long long seed;
};

/*
 * Validates a batch's options for video-runway (NULL or {} is valid: every
 * field has a default), as batch creation should before accepting a batch:
 *
 *   model     "gen4_turbo" (default), "gen4.5"; "gen3a_turbo" only with
 *             RUNWAY_ALLOW_LEGACY
 *   ratio     gen4_turbo and gen4.5: "1280:720" (default), "720:1280",
 *             "1104:832", "832:1104", "960:960", "1584:672";
 *             gen3a_turbo: "1280:768" (default), "768:1280"
 *   duration  integer seconds; gen4_turbo and gen4.5: 2..10; gen3a_turbo:
 *             5 or 10; default 5
 *   seed      integer 0..4294967295, optional (random when absent)
 *   prompt    string of 1..1000 UTF-16 code units, optional (gen4.5 and
 *             gen3a_turbo require promptText: the default prompt is sent)
 *
 * Other fields are ignored. Returns ST_OK, or ST_INVALID with code
 * "invalid_options" and a message naming the option and what is allowed.
 * runway_validate_options() is runway_validate_options_flags(o, 0, err).
 */
enum status runway_validate_options(const json_t *options, struct error *err);
enum status runway_validate_options_flags(const json_t *options, unsigned flags, struct error *err);

/*
 * Validates options like runway_validate_options_flags and resolves them
 * into p, using default_model (NULL: RUNWAY_DEFAULT_MODEL) when the options
 * name no model. p borrows from options.
 */
enum status runway_resolve(const json_t *options, const char *default_model, unsigned flags,
                           struct runway_params *p, struct error *err);

/* The default ratio of a model ("1280:720"; "1280:768" for gen3a_turbo); NULL when unknown. */
const char *runway_default_ratio(const char *model);

/* Length of UTF-8 text in UTF-16 code units (what Runway's 1000-unit limit counts). */
size_t runway_utf16_length(const char *s);

/* ---- classification (pure, exposed for tests) ---------------------------- */

enum runway_call { RUNWAY_SUBMIT, RUNWAY_POLL };

/*
 * Classifies one reply into out (providers.md 2.3, 2.5 and section 4).
 *
 * RUNWAY_SUBMIT (POST /v1/image_to_video):
 *   2xx {"id": "..."}           STARTED, job_id = id
 *   2xx without a usable id     TRANSIENT provider_submit_unknown (a task may exist)
 *   400 "...not have enough credits..."
 *                               PERMANENT provider_no_credits, pause_batch
 *   400 naming promptImage or an asset
 *                               PERMANENT provider_asset_invalid
 *   400 other (validation, issues[]), 413, other 4xx
 *                               PERMANENT provider_invalid_request
 *   401, 403                    PERMANENT provider_auth_failed
 *   404, 405                    PERMANENT provider_config (wrong base URL or endpoint)
 *   429                         TRANSIENT provider_rate_limited, retry after
 *                               >= RUNWAY_DAILY_LIMIT_RETRY_S (the daily cap)
 *   408, 504                    TRANSIENT provider_timeout
 *   409, 500, 502, 503, other 5xx
 *                               TRANSIENT provider_unavailable
 *   3xx                         PERMANENT provider_bad_response
 *   no answer, nothing sent     TRANSIENT provider_unavailable (provider_timeout for a
 *                               connect timeout)
 *   no answer, request sent     TRANSIENT provider_submit_unknown (see the top)
 *   bad URL or scheme           PERMANENT provider_config
 *
 * RUNWAY_POLL (GET /v1/tasks/{id}):
 *   PENDING, THROTTLED          RUNNING, progress 0
 *   RUNNING                     RUNNING, progress from the task (clamped to 0..1)
 *   another status string       RUNNING (unknown states wait for the caller's deadline)
 *   SUCCEEDED                   DONE with output_url = output[0], no bytes yet (poll()
 *                               downloads them); without an output URL TRANSIENT
 *                               provider_bad_response
 *   FAILED                      runway_classify_failure(failureCode)
 *   CANCELLED, CANCELED         PERMANENT provider_cancelled
 *   no status, not JSON         TRANSIENT provider_bad_response
 *   400, other 4xx              PERMANENT provider_invalid_request
 *   401, 403                    PERMANENT provider_auth_failed
 *   404                         PERMANENT provider_job_not_found (the task is gone)
 *   408, 504, timeout           TRANSIENT provider_timeout
 *   429                         TRANSIENT provider_rate_limited
 *   409, 5xx, transport         TRANSIENT provider_unavailable
 *   3xx                         PERMANENT provider_bad_response
 *   response over the cap       TRANSIENT provider_bad_response
 *
 * A TRANSIENT from RUNWAY_POLL without resubmit means "poll again later".
 * TRANSIENT outcomes carry Retry-After in retry_after_s (at least the
 * minimums above). Messages are lowercase, start with "runway" and quote at
 * most a short piece of Runway's text. out must be initialised.
 */
void runway_classify(const struct video_reply *r, enum runway_call call,
                     struct provider_output *out);

/*
 * Classifies a FAILED task by its failureCode (NULL when null or absent)
 * and failure text (may be NULL):
 *
 *   SAFETY.INPUT.*, SAFETY.OUTPUT.*, other SAFETY.*, INPUT_PREPROCESSING.SAFETY.*
 *                               PERMANENT provider_moderation
 *   ASSET.INVALID, other ASSET.*
 *                               PERMANENT provider_asset_invalid
 *   INTERNAL.BAD_OUTPUT.*       TRANSIENT provider_bad_output, resubmit: Runway allows a
 *                               retry but calls it unlikely to succeed (the input often has
 *                               overlaid text or graphics): providers.md says once. poll()
 *                               cannot know how often the item was submitted, so the cap is
 *                               the caller's, which can tell this code from the others.
 *   INTERNAL, null, INTERNAL.* (other), INPUT_PREPROCESSING.INTERNAL
 *                               TRANSIENT provider_job_failed, resubmit
 *   THIRD_PARTY.UNAVAILABLE     TRANSIENT provider_job_failed, resubmit, retry after
 *                               >= RUNWAY_BUSY_RETRY_S
 *   anything else               TRANSIENT provider_job_failed, resubmit (providers.md: a
 *                               small cap, which is the caller's)
 */
void runway_classify_failure(const char *failure_code, const char *failure,
                             struct provider_output *out);

#endif
