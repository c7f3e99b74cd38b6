/*
 * fetch.h - fetching a partner's image before handing it to a provider
 * (Gemini needs the bytes inline).
 *
 * Partner URLs are untrusted (DESIGN.md section 9): the fetch uses https
 * only, refuses private, loopback, link-local and metadata targets after
 * DNS resolution (at connect time, so DNS rebinding is caught too), follows
 * no redirects, caps the size and the time, and accepts only the image
 * types the providers take. The local runtime may relax the first two with
 * allow_insecure, for its own demo images and simulator on loopback.
 */
#ifndef PROVIDERS_FETCH_H
#define PROVIDERS_FETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/error.h"
#include "http/client.h"

#define FETCH_DEFAULT_MAX_BYTES  ((size_t)20 << 20)
#define FETCH_DEFAULT_TIMEOUT_MS 30000L
#define FETCH_CONTENT_TYPE_MAX   64

/* ---- limits --------------------------------------------------------------- */

struct fetch_limits {
    size_t max_bytes;    /* largest image accepted; 0: FETCH_DEFAULT_MAX_BYTES */
    long timeout_ms;     /* per attempt; 0: FETCH_DEFAULT_TIMEOUT_MS */
    int max_attempts;    /* GET is idempotent and retried; 0: the client's default */
    bool allow_insecure; /* local runtime only: allow http and non-public addresses */
};

/* ---- fetching ------------------------------------------------------------- */

/*
 * Downloads the image at url into out (an initialised buffer; its previous
 * content is dropped, and its own bound applies as well as lim's) and
 * writes its MIME type to content_type: one of image/png, image/jpeg,
 * image/webp, image/heic, image/heif. lim may be NULL for the defaults.
 *
 * The type comes from the magic bytes when they are recognised (servers
 * often label images wrongly); a Content-Type that is absent or generic
 * (application/octet-stream) is thus no obstacle, but a declared type that
 * is not one of the five, or bytes that are no known image, are refused.
 *
 * Returns ST_OK, or on failure (out then empty, content_type ""), with
 * err->code set:
 *   ST_PERMISSION_DENIED  "image_url_not_allowed": scheme or address refused
 *                         (after DNS), or "image_fetch_failed": HTTP 401/403
 *   ST_INVALID            "image_url_invalid": malformed URL, or
 *                         "image_fetch_failed": a redirect, another 4xx, an empty body
 *   ST_NOT_FOUND          "image_fetch_failed": HTTP 404 or 410
 *   ST_TOO_LARGE          "image_too_large"
 *   ST_UNSUPPORTED_MEDIA  "image_unsupported_type"
 *   ST_TIMEOUT            "image_fetch_failed": timed out, or HTTP 408/504
 *   ST_RATE_LIMITED       "image_fetch_failed": HTTP 429 (err->retry_after_s when given)
 *   ST_UNAVAILABLE        "image_fetch_failed": transport error or HTTP 5xx
 * The last three are transient (status_is_transient()); the others are not.
 * Messages name the URL without its query string (signed URLs carry secrets).
 */
enum status fetch_image(struct http_client *c, const char *url, const struct fetch_limits *lim,
                        struct buf *out, char content_type[FETCH_CONTENT_TYPE_MAX],
                        struct error *err);

/* ---- helpers (pure, exposed for tests) ----------------------------------- */

/*
 * The image type of data from its magic bytes: "image/png", "image/jpeg",
 * "image/webp", "image/heic", "image/heif", or NULL when none of them
 * (GIF, AVIF, HTML...). Static string.
 */
const char *image_sniff_type(const void *data, size_t len);

/*
 * Normalises a Content-Type header value into out (capacity cap): the
 * media type without parameters, trimmed and lowercased, with image/jpg
 * and image/pjpeg mapped to image/jpeg. "" for NULL or empty.
 */
void media_type_normalise(const char *header, char *out, size_t cap);

/* True for the five MIME types the providers accept. */
bool image_type_allowed(const char *media_type);

#endif
