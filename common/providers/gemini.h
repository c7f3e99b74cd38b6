/*
 * gemini.h - the virtual-staging provider: Google Gemini image editing
 * (generateContent: the partner's photo and a prompt in, an image out).
 * Reference: providers.md section 1, classification policy section 4.
 *
 * Synchronous: submit() fetches the partner's image (providers/fetch.h),
 * sends it inline with the prompt, and answers PROVIDER_DONE with the
 * decoded output image, or a classified failure (see gemini_classify). The generateContent call
 * is never retried here: every attempt is billed, so retries are left to the
 * queue, which counts them (provider_input.attempt).
 *
 * The API key travels in the x-goog-api-key header only; it is never logged
 * and never appears in an error message.
 */
#ifndef PROVIDERS_GEMINI_H
#define PROVIDERS_GEMINI_H

#include <stdbool.h>
#include <stddef.h>

#include "http/client.h"
#include "providers/fetch.h"
#include "providers/provider.h"

#define GEMINI_DEFAULT_BASE_URL   "https://generativelanguage.googleapis.com"
#define GEMINI_DEFAULT_MODEL      "gemini-3.1-flash-image"
#define GEMINI_DEFAULT_TIMEOUT_MS 120000L
#define GEMINI_DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define GEMINI_DEFAULT_PROMPT                                                                      \
    "Virtually stage this empty room with tasteful, modern furniture and decor suited to the "     \
    "space (for example a sofa, a rug, a coffee table, lamps and plants). Keep the walls, "        \
    "windows, doors, floor, ceiling, lighting and camera angle exactly as they are. "              \
    "Photorealistic, natural light, no text or watermarks."
#define GEMINI_PROMPT_MAX 8192 /* longer prompts are refused as invalid */

/*
 * Model answers without an image (NO_IMAGE, IMAGE_OTHER, OTHER, text only,
 * a garbled body) are retried while the item's attempt is below this, then
 * final: the model is non-deterministic, but each try is billed.
 */
#define GEMINI_NO_IMAGE_ATTEMPTS 3

/* A 429 on a per-day quota waits at least this long (the quota resets at midnight Pacific). */
#define GEMINI_DAILY_QUOTA_RETRY_S 3600

/* ---- construction --------------------------------------------------------- */

struct gemini_options {
    const char *base_url; /* NULL or "": GEMINI_DEFAULT_BASE_URL; no trailing slash needed */
    const char *api_key;  /* required */
    const char *model;    /* NULL or "": GEMINI_DEFAULT_MODEL */
    long timeout_ms;      /* the generateContent call; 0: GEMINI_DEFAULT_TIMEOUT_MS */
    /* the partner's image (providers/fetch.h) */
    size_t fetch_max_bytes;     /* 0: FETCH_DEFAULT_MAX_BYTES */
    long fetch_timeout_ms;      /* per attempt; 0: FETCH_DEFAULT_TIMEOUT_MS */
    int fetch_max_attempts;     /* 0: the client's default */
    bool allow_insecure;        /* local runtime only: http and non-public image hosts */
    size_t max_output_bytes;    /* largest decoded output image; 0: GEMINI_DEFAULT_MAX_OUTPUT.
                                   The response body is capped at 4/3 of it plus 1 MiB. */
    const char *image_size;     /* imageConfig.imageSize ("512", "1K", "2K", "4K"), sent to 3.x
                                   models only; NULL: the model's default. Batch options
                                   "imageSize" override it. */
    bool image_only;            /* responseModalities ["IMAGE"] instead of ["TEXT","IMAGE"]
                                   (TEXT lets the model explain a refusal in the logs) */
    const char *default_prompt; /* NULL: GEMINI_DEFAULT_PROMPT */
};

/*
 * Creates the provider (name "gemini", synchronous, no poll or cancel).
 * Strings in o are copied; c is borrowed and must outlive the provider.
 * Returns NULL, after logging an error naming the option, when the API key
 * is missing, the base URL is not http(s), the model id is not a plain name
 * or image_size is not one of the four (configuration is validated at
 * start-up, so this is a wiring bug).
 * New reference: free with provider_free().
 *
 * submit() reads in->image_url, in->attempt, the prompt (in->metadata
 * "prompt", else in->options "prompt", else the default prompt) and the
 * optional in->options "aspectRatio" ("1:1", "4:3", "16:9"...) and
 * "imageSize". It always returns ST_OK with out->outcome set; out->data
 * (bounded by the caller's provider_output_init) gets the image on DONE.
 * Thread-safe.
 */
struct provider *provider_gemini_new(const struct gemini_options *o, struct http_client *c);

/* ---- classification (pure, exposed for tests) ---------------------------- */

/* What came back from one generateContent call. */
struct gemini_reply {
    enum status transport;       /* http_client_do()'s status: ST_OK when an answer arrived */
    const char *transport_error; /* its message when not ST_OK, may be NULL */
    long http_status;
    const char *body; /* may be NULL */
    size_t body_len;
    int retry_after_s; /* from the Retry-After header, 0 when absent */
};

/*
 * Classifies a reply (providers.md 1.4, 1.5, 1.7 and section 4) into out:
 *
 *   200 with an image part      DONE: the last non-thought inlineData part whose
 *                               mimeType starts with "image/", decoded
 *                               into out->data, its MIME type in out->content_type
 *   promptFeedback.blockReason  PERMANENT provider_blocked
 *   finishReason *SAFETY, *PROHIBITED_CONTENT, BLOCKLIST, SPII
 *                               PERMANENT provider_moderation
 *   RECITATION, IMAGE_RECITATION
 *                               PERMANENT provider_recitation
 *   MAX_TOKENS, MALFORMED_FUNCTION_CALL, LANGUAGE, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS
 *                               PERMANENT provider_finish_reason
 *   NO_IMAGE, IMAGE_OTHER, OTHER, STOP with text only, no candidates
 *                               TRANSIENT provider_no_image while attempt < 3, then PERMANENT
 *   200 not JSON, bad base64    TRANSIENT provider_bad_response while attempt < 3, then PERMANENT
 *   output over out's bound     PERMANENT provider_output_too_large
 *   400 (API_KEY_INVALID)       PERMANENT provider_auth_failed
 *   400 FAILED_PRECONDITION     PERMANENT provider_failed_precondition
 *   400 other, 413, other 4xx   PERMANENT provider_invalid_request
 *   401, 403                    PERMANENT provider_auth_failed
 *   402                         PERMANENT provider_no_credits, pause_batch
 *   404                         PERMANENT provider_model_not_found
 *   3xx                         PERMANENT provider_bad_response (no redirects are followed)
 *   408, 504, client timeout    TRANSIENT provider_timeout
 *   409, 499, 500, 502, 503, other 5xx, transport error
 *                               TRANSIENT provider_unavailable
 *   429                         TRANSIENT provider_rate_limited; a QuotaFailure quotaId with
 *                               "PerDay": provider_quota_exhausted, retry after >= 3600 s
 *   response over the client's cap
 *                               PERMANENT provider_output_too_large
 *   bad base URL (client)       PERMANENT provider_config
 *
 * TRANSIENT outcomes carry retry_after_s: the larger of Retry-After and a
 * google.rpc.RetryInfo retryDelay ("37s", "0.5s") in error.details.
 * Messages are lowercase, start with "gemini" and quote at most a short,
 * truncated piece of Google's own message. out must be initialised.
 */
void gemini_classify(const struct gemini_reply *r, int attempt, struct provider_output *out);

/*
 * Parses a google.protobuf.Duration in JSON form ("37s", "1.5s") into whole
 * seconds, rounded up. Returns -1 when s is not one.
 */
int gemini_parse_duration(const char *s);

#endif
