/*
 * video.h - what the asynchronous video providers (providers/runway.h,
 * providers/pixverse.h) share: the reply of one HTTP call, the download of
 * a finished video, MP4 sniffing, message hygiene, and one metrics/log line
 * per provider call.
 */
#ifndef PROVIDERS_VIDEO_H
#define PROVIDERS_VIDEO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "core/buf.h"
#include "core/error.h"
#include "http/client.h"
#include "providers/provider.h"

#define VIDEO_DEFAULT_MAX_BYTES  ((size_t)256 << 20)
#define VIDEO_DEFAULT_TIMEOUT_MS 120000L
#define VIDEO_QUOTE_MAX          120 /* bytes of a provider's own text quoted in messages */
#define VIDEO_URL_MSG_MAX        160

/* ---- one call ------------------------------------------------------------- */

/* What came back from one HTTP call to a provider (all borrowed). */
struct video_reply {
    enum status transport;       /* http_client_do()'s status: ST_OK when an answer arrived */
    const char *transport_error; /* its message when not ST_OK, may be NULL */
    /*
     * The request may have reached the provider: curl opened (or reused) a
     * connection and was about to send it. False means nothing was sent
     * (DNS or connect failure), so a non-idempotent POST is safe to repeat.
     */
    bool request_sent;
    long http_status;
    const char *body; /* may be NULL */
    size_t body_len;
    int retry_after_s; /* from the Retry-After header, 0 when absent */
};

/*
 * Makes curl set *sent once the request is about to go on the wire
 * (CURLOPT_PREREQFUNCTION). Call it from an http_call customize hook; sent
 * must outlive the call. Never clears *sent.
 */
void video_track_sent(CURL *easy, bool *sent);

/* The customize hook of a call that only tracks sending: ud is a bool *. */
void video_customize_track_sent(CURL *easy, void *ud);

/* ---- the finished video ----------------------------------------------------- */

struct video_limits {
    size_t max_bytes;    /* 0: VIDEO_DEFAULT_MAX_BYTES; the output buffer's bound applies too */
    long timeout_ms;     /* per attempt; 0: VIDEO_DEFAULT_TIMEOUT_MS */
    int max_attempts;    /* GET is retried; 0: the client's default */
    bool allow_insecure; /* local simulator only: http and non-public hosts */
};

/*
 * True when data starts like an ISO base media (MP4) video: a first box of
 * type "ftyp" whose major brand is not an image one (HEIF, AVIF), or of a
 * type an MP4 may start with (moov, mdat, free, skip, wide, styp), with a
 * plausible size.
 */
bool video_sniff_mp4(const void *data, size_t len);

/*
 * Downloads the video at url into out (initialised; emptied first; its
 * bound applies as well as lim's). The URL is the provider's and untrusted
 * like a partner's: https only and public addresses only (after DNS)
 * unless lim->allow_insecure, no redirects. The body must sniff as MP4
 * (video_sniff_mp4) and its declared type must be video/mp4, a generic
 * octet-stream, or absent. Returns ST_OK, or, with err->code set:
 *   ST_TOO_LARGE          "provider_output_too_large"
 *   ST_UNSUPPORTED_MEDIA  "provider_output_invalid": not an MP4 video
 *   ST_INVALID, ST_PERMISSION_DENIED
 *                         "provider_output_url_invalid": malformed or refused URL
 *   ST_UNAVAILABLE, ST_TIMEOUT, ST_RATE_LIMITED, ST_NOT_FOUND
 *                         "provider_download_failed": transport error or an HTTP
 *                         error status (an expired URL too: polling again gets a fresh one)
 * Messages name the URL without its query (signed URLs carry secrets).
 */
enum status video_download(struct http_client *c, const char *url, const struct video_limits *lim,
                           struct buf *out, struct error *err);

/* ---- messages ----------------------------------------------------------------- */

/* url without its query, fragment and user:password@, for messages and logs. */
void video_url_for_message(const char *url, char *out, size_t cap);

/*
 * A piece of a provider's text for a message: at most VIDEO_QUOTE_MAX bytes
 * (cut on a UTF-8 boundary, then "..."), control characters as spaces.
 */
void video_quote(const char *s, char *out, size_t cap);

/* Replaces every occurrence of secret (4 bytes or longer) in s with "***". */
void video_scrub(char *s, const char *secret);

/*
 * Sets a failure outcome: code, formatted message, and clears the output
 * bytes, the content type, progress and retry_after_s.
 */
void video_fail(struct provider_output *out, enum provider_outcome o, const char *code,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- metrics and logs ------------------------------------------------------- */

/*
 * Counts one provider call in provider_calls_total{provider,outcome,code}
 * and, when call_s >= 0, its latency in provider_latency_seconds{provider},
 * then logs one line: INFO for started/done, DEBUG for running, WARNING
 * for transient, NOTICE for permanent. op is "submit", "poll" or "cancel";
 * subject the item or job id. fields (stolen, may be NULL) are added.
 */
void video_record(const char *provider, const char *op, const char *subject,
                  const struct provider_output *out, long http_status, double call_s,
                  double total_s, json_t *fields);

#endif
