/*
 * pixverse.h - the video-pixverse provider: PixVerse's platform API,
 * image-to-video, asynchronous (reference providers.md section 3,
 * classification policy section 4).
 *
 * submit() fetches the partner's image (providers/fetch.h, the same guards
 * as Gemini), uploads it (POST /openapi/v2/image/upload, multipart field
 * "image") for an img_id, then asks for a video (POST
 * /openapi/v2/video/img/generate) and answers PROVIDER_STARTED with the
 * video_id in decimal as the job id. poll() reads GET
 * /openapi/v2/video/result/{video_id}; on status 1 it downloads the video
 * into out->data and answers PROVIDER_DONE with "video/mp4".
 *
 * Ids are 64-bit integers above 2^53: they are read with
 * json_integer_value() (jansson's json_int_t is long long) and written back
 * as integers, never through a double. Ids up to 2^63-1 are supported.
 *
 * Every request carries the API-KEY header and a fresh UUIDv4 Ai-trace-id
 * (a retried request gets a new one too: PixVerse documents reused trace
 * ids as the usual cause of tasks stuck "generating"). The generate call's
 * trace id is logged, for support tickets. The key is never logged.
 *
 * The upload is not billed and is retried like a GET. The generate call is
 * billed and never retried here; an ambiguous failure (the request was sent
 * but no answer came) is "provider_submit_unknown", TRANSIENT by default
 * (the queue submits again, a possible second bill), PERMANENT with
 * fail_ambiguous_submit; see runway.h for the reasoning, which is the same.
 * A generate answered 400032 (invalid image id) is retried once with a new
 * upload, as providers.md 3.5 suggests, then final.
 *
 * cancel(): PixVerse has no cancel endpoint, so cancel() does nothing and
 * returns ST_OK: the job runs to its end (and is billed) and its result is
 * never fetched.
 */
#ifndef PROVIDERS_PIXVERSE_H
#define PROVIDERS_PIXVERSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"
#include "http/client.h"
#include "providers/provider.h"
#include "providers/video.h"

#define PIXVERSE_DEFAULT_BASE_URL "https://app-api.pixverse.ai"
#define PIXVERSE_DEFAULT_MODEL    "v5"
#define PIXVERSE_DEFAULT_QUALITY  "540p"
#define PIXVERSE_DEFAULT_DURATION 5
#define PIXVERSE_DEFAULT_PROMPT                                                                    \
    "Smooth, slow camera push-in through this room in soft natural light. Keep the room, its "     \
    "furniture and its layout exactly as they are. No people, no text."
#define PIXVERSE_PROMPT_MAX 2048 /* characters (code points) */
#define PIXVERSE_SEED_MAX   2147483647LL
#define PIXVERSE_IMAGE_MAX  ((size_t)20 << 20) /* upload limit */

#define PIXVERSE_DEFAULT_UPLOAD_TIMEOUT_MS 60000L
#define PIXVERSE_DEFAULT_SUBMIT_TIMEOUT_MS 30000L
#define PIXVERSE_DEFAULT_POLL_TIMEOUT_MS   15000L

/* ErrCode 500044 (concurrent generations) and 500069 (high load) wait at least this long. */
#define PIXVERSE_BUSY_RETRY_S 30

/* ---- construction --------------------------------------------------------- */

struct pixverse_options {
    const char *base_url;       /* NULL or "": PIXVERSE_DEFAULT_BASE_URL */
    const char *api_key;        /* required, sent as API-KEY */
    const char *model;          /* when the batch names none; NULL: PIXVERSE_DEFAULT_MODEL */
    const char *quality;        /* when the batch names none; NULL: PIXVERSE_DEFAULT_QUALITY */
    const char *default_prompt; /* NULL: PIXVERSE_DEFAULT_PROMPT */
    long upload_timeout_ms;     /* per upload attempt; 0: PIXVERSE_DEFAULT_UPLOAD_TIMEOUT_MS */
    int upload_max_attempts;    /* 0: the client's default */
    long submit_timeout_ms;     /* the generate call; 0: PIXVERSE_DEFAULT_SUBMIT_TIMEOUT_MS */
    long poll_timeout_ms;       /* each result attempt; 0: PIXVERSE_DEFAULT_POLL_TIMEOUT_MS */
    int poll_max_attempts;      /* 0: the client's default */
    /* the partner's image (providers/fetch.h) */
    size_t fetch_max_bytes; /* 0 or above PIXVERSE_IMAGE_MAX: PIXVERSE_IMAGE_MAX */
    long fetch_timeout_ms;  /* per attempt; 0: FETCH_DEFAULT_TIMEOUT_MS */
    int fetch_max_attempts; /* 0: the client's default */
    /* the finished video */
    long download_timeout_ms;   /* per attempt; 0: VIDEO_DEFAULT_TIMEOUT_MS */
    int download_max_attempts;  /* 0: the client's default */
    size_t max_download_bytes;  /* 0: VIDEO_DEFAULT_MAX_BYTES; out->data's bound applies too */
    bool allow_insecure;        /* local runtime only: http and non-public image and video hosts */
    bool fail_ambiguous_submit; /* see the top of this file */
};

/*
 * Creates the provider (name "pixverse", asynchronous). Strings in o are
 * copied; c is borrowed and must outlive the provider. Returns NULL, after
 * logging an error naming the option, when the API key is missing or
 * malformed, the base URL is not http(s), or the default model or quality
 * is not valid (see pixverse_validate_options).
 * New reference: free with provider_free().
 *
 * submit() reads in->image_url (or in->image_data, when the caller already
 * fetched the image: then nothing is fetched), the prompt (in->metadata "prompt", else
 * in->options "prompt", else the default prompt) and the batch options
 * "model", "quality", "duration", "motionMode" and "seed" (see
 * pixverse_validate_options). submit() and poll() always return ST_OK with
 * out->outcome set. Thread-safe.
 */
struct provider *provider_pixverse_new(const struct pixverse_options *o, struct http_client *c);

/* ---- options (pure) ---------------------------------------------------------- */

/* The request's knobs, resolved. Strings borrowed from the options or static. */
struct pixverse_params {
    const char *model;
    const char *quality;
    int duration;            /* seconds */
    const char *motion_mode; /* NULL: not sent */
    bool has_seed;
    long long seed;
};

/*
 * Validates a batch's options for video-pixverse (NULL or {} is valid), as
 * batch creation should (providers.md 3.3):
 *
 *   model       "v3.5", "v4", "v4.5", "v5" (default), "v5.5", "v5.6", "v6", "c1"
 *   quality     "360p", "540p" (default), "720p", "1080p"
 *   duration    integer seconds, default 5: v3.5 to v5: 5 or 8, and 1080p only
 *               5; v5.5 and v5.6: 5, 8 or 10; v6 and c1: 1 to 15
 *   motionMode  "normal" or "fast", v3.5 to v4.5 only (v5 and later take none);
 *               "fast" only for 5 s and not with 1080p
 *   seed        integer 0..2147483647, optional
 *   prompt      string of at most 2048 characters, optional
 *
 * Other fields are ignored. ST_OK, or ST_INVALID with code
 * "invalid_options" and a message naming the option and what is allowed.
 */
enum status pixverse_validate_options(const json_t *options, struct error *err);

/*
 * Validates and resolves options into p, with default_model and
 * default_quality (NULL: the PIXVERSE_DEFAULT_ ones) for what the options
 * do not name. p borrows from options.
 */
enum status pixverse_resolve(const json_t *options, const char *default_model,
                             const char *default_quality, struct pixverse_params *p,
                             struct error *err);

/* ---- ids (pure) ---------------------------------------------------------------- */

/*
 * Reads an id: a JSON integer > 0, or a string of decimal digits (some
 * gateways quote big ids). A real (a number with a fraction or exponent)
 * is refused: it may already have lost digits. False when not an id.
 */
bool pixverse_id_from_json(const json_t *v, int64_t *out);

/* The job id of a video_id (decimal) into out; false when it does not fit. */
bool pixverse_job_id_format(int64_t video_id, char *out, size_t cap);

/* Parses a job id back; false unless it is a decimal integer in 1..2^63-1. */
bool pixverse_job_id_parse(const char *job_id, int64_t *out);

/* ---- classification (pure, exposed for tests) ---------------------------- */

enum pixverse_call { PIXVERSE_UPLOAD, PIXVERSE_GENERATE, PIXVERSE_RESULT };

/*
 * Classifies one reply: the {"ErrCode","ErrMsg","Resp"} envelope is read
 * whatever the HTTP status (HTTP 200 does not mean success). Returns true
 * when the call succeeded:
 *   PIXVERSE_UPLOAD    *id = Resp.img_id, out RUNNING (a step, nothing final)
 *   PIXVERSE_GENERATE  *id = Resp.video_id, out STARTED with job_id set
 *   PIXVERSE_RESULT    out by Resp.status: 5 RUNNING; 1 DONE with output_url =
 *                      Resp.url (no bytes yet: poll() downloads them); 6 PERMANENT
 *                      provider_job_deleted; 7 PERMANENT provider_moderation
 *                      (PixVerse refunds it); 8 TRANSIENT provider_job_failed with
 *                      resubmit; any other status RUNNING (unknown states wait for
 *                      the caller's deadline)
 * Otherwise false, with the failure in out: an ErrCode != 0 per
 * pixverse_classify_errcode (Retry-After raises its retry_after_s), else by
 * HTTP status:
 *   2xx without a usable envelope or Resp
 *                           TRANSIENT provider_bad_response (GENERATE:
 *                           provider_submit_unknown, a video may exist)
 *   401, 403                PERMANENT provider_auth_failed
 *   404, 405                PERMANENT provider_config
 *   408, 504, timeout       TRANSIENT provider_timeout
 *   429                     TRANSIENT provider_rate_limited
 *   409, 5xx, transport     TRANSIENT provider_unavailable (GENERATE sent but
 *                           unanswered: provider_submit_unknown)
 *   other 4xx, 3xx          PERMANENT provider_invalid_request / provider_bad_response
 *   bad URL or scheme       PERMANENT provider_config
 * Messages are lowercase, start with "pixverse" and quote at most a short
 * piece of ErrMsg. out must be initialised; id may be NULL.
 */
bool pixverse_classify(const struct video_reply *r, enum pixverse_call call,
                       struct provider_output *out, int64_t *id);

/*
 * The class of an ErrCode != 0 (providers.md 3.5), msg is ErrMsg (may be NULL):
 *   ErrMsg "Invalid API-KEY" (any code), 400012
 *                               PERMANENT provider_auth_failed
 *   400032                      PERMANENT provider_invalid_image_id
 *   4000xx (400011, 400013, 400017, 400018, 400019, others), 500070, 500071
 *                               PERMANENT provider_invalid_request
 *   500008                      PERMANENT provider_job_not_found (RESULT),
 *                               provider_invalid_request (others)
 *   500020                      PERMANENT provider_not_permitted
 *   500030..500033, 500042, 701002, 701003
 *                               PERMANENT provider_invalid_image
 *   500041                      TRANSIENT provider_upload_failed
 *   500044                      TRANSIENT provider_concurrency_limit, retry after
 *                               >= PIXVERSE_BUSY_RETRY_S
 *   500054, 500063              PERMANENT provider_moderation
 *   500060                      PERMANENT provider_limit_reached
 *   500064                      PERMANENT provider_content_deleted
 *   500069                      TRANSIENT provider_overloaded, retry after
 *                               >= PIXVERSE_BUSY_RETRY_S
 *   500090                      PERMANENT provider_no_credits, pause_batch
 *   500100, 99999               TRANSIENT provider_unavailable
 *   other 400000..499999        PERMANENT provider_invalid_request
 *   other codes                 TRANSIENT provider_error
 */
void pixverse_classify_errcode(long long code, const char *msg, enum pixverse_call call,
                               struct provider_output *out);

#endif
