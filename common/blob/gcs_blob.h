/*
 * gcs_blob.h - the Cloud Storage blob adapter (gcp.md section 3): objects of
 * one bucket over the JSON API, handed to partners as V4 signed URLs.
 *
 *  - put: a media upload with ifGenerationMatch=0, so it only ever creates
 *    (412 becomes ST_ALREADY_EXISTS). The precondition makes a replayed
 *    upload harmless, so uploads are retried like reads (transport errors,
 *    429, 5xx). A retry whose first attempt did land answers 412: the caller
 *    sees ST_ALREADY_EXISTS, which blob.h already defines as "done".
 *  - get: GET .../o/{name}?alt=media, bounded by the caller's buffer.
 *  - url: a V4 signed GET URL (GOOG4-RSA-SHA256), cached per key and re-signed
 *    once half its lifetime has passed, because signing is an IAM signBlob
 *    network call on Cloud Run and the status endpoint lists up to 1000
 *    items at a time.
 *
 * Object names are percent-encoded as gcp.md 3.2 says: whole names (with '/'
 * as %2F) in JSON API path segments and in name=, segment by segment ('/'
 * kept) in signed URL paths. Only A-Za-z0-9-._~ stay as they are.
 *
 * Errors come from Google's JSON error body {"error": {"code", "message",
 * "errors": [{"reason"}]}}: 400 ST_INVALID, 401 ST_UNAUTHENTICATED (after one
 * token refresh), 403 ST_PERMISSION_DENIED (ST_RATE_LIMITED for the rate
 * limit reasons), 404 ST_NOT_FOUND, 409 ST_CONFLICT, 412 ST_ALREADY_EXISTS on
 * put, 429 ST_RATE_LIMITED, 504 ST_TIMEOUT, other 5xx ST_UNAVAILABLE. The
 * message names the operation, gs://bucket/key, the HTTP status and Google's
 * reason and message.
 */
#ifndef BLOB_GCS_BLOB_H
#define BLOB_GCS_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob/blob.h"
#include "core/buf.h"
#include "core/error.h"
#include "gcp/auth.h"
#include "http/client.h"

#define GCS_DEFAULT_BASE       "https://storage.googleapis.com"
#define GCS_URL_LIFETIME_MAX_S 604800 /* 7 days: Google refuses longer V4 signatures */
#define GCS_URL_CACHE_DEFAULT  4096   /* signed URLs kept by default */
#define GCS_EMAIL_MAX          256
#define GCS_BASE_MAX           256

/* ---- opening ------------------------------------------------------------- */

/*
 * Signs data with RSA-SHA256 (RSASSA-PKCS1-v1_5), the shape of
 * gcp_auth_sign(): on ST_OK *sig is malloc'd raw signature bytes the caller
 * frees with free(). Must be thread-safe.
 */
typedef enum status (*gcs_sign_fn)(void *ud, const void *data, size_t len, unsigned char **sig,
                                   size_t *sig_len, struct error *err);

/*
 * Zero fields take the defaults. Strings are copied; auth and client are
 * borrowed and must outlive the blob.
 */
struct gcs_options {
    const char *bucket;          /* required: [a-z0-9._-], 3 to 222 bytes */
    const char *api_base;        /* JSON API; default GCS_DEFAULT_BASE (a fake: its base URL) */
    const char *signed_url_base; /* scheme://host[:port] of signed URLs; default GCS_DEFAULT_BASE */
    int64_t url_lifetime_s;      /* X-Goog-Expires; default and maximum GCS_URL_LIFETIME_MAX_S */
    struct gcp_auth *auth;       /* tokens and signing; NULL: no Authorization (fakes, emulators) */
    struct http_client *client;  /* required */
    long timeout_ms;             /* per attempt; 0: the client's default */
    int max_attempts;            /* attempts per call (retries); 0: the client's default */
    size_t url_cache_max;        /* signed URLs cached; 0: GCS_URL_CACHE_DEFAULT */
    /*
     * Signing override (tests, or a signer other than auth): when sign is
     * set, signed URLs are signed by sign(sign_ud, ...) as signer_email
     * (required then). Otherwise gcp_auth_sign() and gcp_auth_email() of
     * auth; without either, url() fails with ST_FAILED_PRECONDITION.
     */
    gcs_sign_fn sign;
    void *sign_ud;
    const char *signer_email;
    int64_t (*clock_us)(void); /* wall clock for signing, µs since the epoch; NULL: time_now_us */
};

/*
 * Opens the adapter (no request is made). Returns a new blob (name "gcs"),
 * closed with blob_close(), or NULL with err (ST_INVALID) when an option is
 * missing or out of range: no bucket or client, a bad bucket name, a
 * lifetime over 7 days, a base that is not http(s)://host[:port], or sign
 * without signer_email.
 */
struct blob *blob_gcs_open(const struct gcs_options *o, struct error *err);

/* URL signatures made by b so far (each one a gcp_auth_sign call): for tests and metrics. */
uint64_t blob_gcs_sign_count(const struct blob *b);

/* ---- V4 signing, without I/O (gcp.md 3.3) -------------------------------- */

/*
 * Appends s percent-encoded to out: every byte except A-Za-z0-9-._~ (and
 * '/' when keep_slash) becomes %XX with uppercase hex. ST_TOO_LARGE past
 * out's bound.
 */
enum status gcs_percent_encode(struct buf *out, const char *s, bool keep_slash);

/* What a V4 signature covers. Strings are borrowed. */
struct gcs_v4_input {
    const char *method; /* "GET" */
    const char *host;   /* Host header value: "storage.googleapis.com", "127.0.0.1:4443" */
    const char *bucket;
    const char *object; /* the raw object name */
    const char *email;  /* the signing service account */
    int64_t now_us;     /* X-Goog-Date, µs since the epoch (the seconds are used) */
    int64_t expires_s;  /* X-Goog-Expires, in [1, GCS_URL_LIFETIME_MAX_S] */
    /* Extra query parameters, name and value pairs, NULL-terminated (may be NULL). */
    const char *const *extra_query;
};

/* The pieces of a V4 signature, each a bounded buffer (embedded; _init/_release). */
struct gcs_v4_parts {
    struct buf path;              /* "/bucket/seg%20ment/..." */
    struct buf query;             /* canonical query, without X-Goog-Signature */
    struct buf canonical_request; /* METHOD\nPATH\nQUERY\nhost:..\n\nhost\nUNSIGNED-PAYLOAD */
    struct buf string_to_sign;    /* GOOG4-RSA-SHA256\nSTAMP\nSCOPE\nHEX(SHA256(canonical)) */
};

void gcs_v4_parts_init(struct gcs_v4_parts *p);
void gcs_v4_parts_release(struct gcs_v4_parts *p);

/*
 * Builds the canonical request and the string to sign of in into p (which
 * is reset first). The query holds X-Goog-Algorithm=GOOG4-RSA-SHA256,
 * X-Goog-Credential=<email>/<YYYYMMDD>/auto/storage/goog4_request,
 * X-Goog-Date, X-Goog-Expires, X-Goog-SignedHeaders=host and the extras,
 * names and values percent-encoded (only unreserved bytes kept), sorted by
 * encoded name then encoded value, joined with '&'. ST_INVALID for a
 * missing field, an empty object name or an expiry outside [1, 7 days];
 * ST_TOO_LARGE when a piece exceeds its bound (16 KiB).
 */
enum status gcs_v4_build(const struct gcs_v4_input *in, struct gcs_v4_parts *p, struct error *err);

/*
 * The signed URL: base (scheme://host[:port]) + path + "?" + query +
 * "&X-Goog-Signature=" + lowercase hex of sig, into out (cap bytes).
 * ST_TOO_LARGE when it does not fit.
 */
enum status gcs_v4_url(const char *base, const struct gcs_v4_parts *p, const unsigned char *sig,
                       size_t sig_len, char *out, size_t cap, struct error *err);

#endif
