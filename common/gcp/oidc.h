/*
 * oidc.h - verification of OIDC ID tokens (Cloud Tasks -> worker pushes),
 * and a local issuer that mints the same kind of token for the local
 * runtime.
 *
 * The worker verifies every push with one oidc_verifier shared by all
 * request threads. In the cloud the keys are Google's, fetched from
 * OIDC_GOOGLE_JWKS_URL; in the local runtime the dispatcher signs with an
 * oidc_local_issuer and the verifier is built from that issuer's JWKS. The
 * verification code is the same in both cases.
 *
 * Status mapping (each failure is one status, with a stable code in
 * err->code):
 *   ST_UNAUTHENTICATED (401) - anything about the token itself: missing,
 *       malformed, over-long, wrong algorithm, unknown key id, bad
 *       signature, expired or not yet valid, lifetime too long, issuer not
 *       accepted, audience mismatch. Codes "missing_token", "invalid_token",
 *       "token_expired", "unknown_key".
 *   ST_PERMISSION_DENIED (403) - a valid token, signed by an accepted
 *       issuer for our audience, for the wrong identity: email absent,
 *       different from the configured invoker, or not verified. Code
 *       "wrong_identity".
 *   ST_UNAVAILABLE (503) - the signing keys could not be fetched (the
 *       caller, Cloud Tasks, retries). Code "keys_unavailable".
 * Messages are lowercase, name the check that failed and never contain the
 * token; strings taken from an unverified token are quoted and truncated.
 */
#ifndef GCP_OIDC_H
#define GCP_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/error.h"

#define OIDC_GOOGLE_JWKS_URL     "https://www.googleapis.com/oauth2/v3/certs"
#define OIDC_GOOGLE_PEM_URL      "https://www.googleapis.com/oauth2/v1/certs"
#define OIDC_TOKEN_MAX           8192   /* longer tokens are refused before any parsing */
#define OIDC_JWKS_MAX            262144 /* bound on a fetched or static key document */
#define OIDC_KEYS_MAX            32     /* keys kept from one document */
#define OIDC_ISSUERS_MAX         8
#define OIDC_DEFAULT_SKEW_S      300
#define OIDC_DEFAULT_MAX_LIFE_S  86400
#define OIDC_DEFAULT_MIN_CACHE_S 60
#define OIDC_DEFAULT_MAX_CACHE_S 86400
#define OIDC_DEFAULT_REFETCH_S   30
#define OIDC_DEFAULT_FAIL_WAIT_S 5
#define OIDC_DEFAULT_STALE_S     3600

/* ---- hooks ---------------------------------------------------------------- */

/*
 * Fetches url into body (initialised by the caller with bound
 * OIDC_JWKS_MAX; append only) and sets *max_age_s to the response's
 * Cache-Control max-age in seconds, or -1 when it has none. Must be
 * thread-safe. Any status other than ST_OK fails the fetch (the verifier
 * reports ST_UNAVAILABLE); non-2xx HTTP answers must be failures.
 */
typedef enum status (*oidc_fetch_fn)(void *ud, const char *url, struct buf *body, int *max_age_s,
                                     struct error *err);

/* Wall clock in whole seconds since the epoch. Must be thread-safe. */
typedef int64_t (*oidc_clock_fn)(void *ud);

/* ---- verifier --------------------------------------------------------------- */

/*
 * Verifier configuration. Strings are copied by oidc_verifier_new(); the
 * struct may be discarded afterwards. Zero/NULL fields take the defaults.
 *
 * Keys come from exactly one source:
 *   jwks_json - a static document, parsed once at construction and never
 *       refreshed (local runtime, tests); or
 *   jwks_url + fetch - fetched on first use and cached (see "key cache").
 * Either source may hold a JWKS ({"keys":[{"kty":"RSA","kid","n","e"}...]})
 * or Google's v1 format ({"<kid>":"-----BEGIN CERTIFICATE-----..."}).
 * Only RSA keys of JWT_RSA_MIN_BITS..JWT_RSA_MAX_BITS are kept; JWKS
 * entries that are not RSA, or whose "use"/"alg" say they are not RS256
 * signing keys, are skipped.
 *
 * Key cache (jwks_url): a fetched document is used until
 * max-age seconds after the fetch, with max-age clamped to
 * [min_cache_s, max_cache_s]. The reference implementation does not cache
 * without max-age; we cache for min_cache_s anyway, so that a server that
 * forgets the header does not cost a fetch per request. A token whose kid
 * is not in a fresh cache triggers one refetch (keys rotate), but at most
 * one every refetch_interval_s, so a flood of made-up kids costs one fetch
 * per interval. One fetch runs at a time: threads that need the keys
 * meanwhile wait for it, except that a thread whose kid is in the expired
 * document uses it. After a failed fetch, no fetch is tried for
 * fail_wait_s; during that time and whenever a fetch fails, an expired
 * document still serves the kids it has for up to stale_grace_s past its
 * expiry, and otherwise verification fails with ST_UNAVAILABLE.
 */
struct oidc_config {
    const char *const *issuers; /* NULL-terminated; NULL: "https://accounts.google.com" and
                                   "accounts.google.com"; at most OIDC_ISSUERS_MAX */
    const char *audience;       /* required; compared exactly with "aud" (a string, or an
                                   array that must contain it) */
    const char *email;          /* NULL: any identity; else "email" must equal it and
                                   "email_verified" must be true */
    int clock_skew_s;           /* <= 0: OIDC_DEFAULT_SKEW_S */
    int max_lifetime_s;         /* <= 0: OIDC_DEFAULT_MAX_LIFE_S; refuse exp >= now + this */

    const char *jwks_json; /* static key document */
    const char *jwks_url;  /* or: fetched key document */
    oidc_fetch_fn fetch;   /* required with jwks_url */
    void *fetch_ud;
    int min_cache_s;        /* <= 0: OIDC_DEFAULT_MIN_CACHE_S */
    int max_cache_s;        /* <= 0: OIDC_DEFAULT_MAX_CACHE_S */
    int refetch_interval_s; /* <= 0: OIDC_DEFAULT_REFETCH_S */
    int fail_wait_s;        /* <= 0: OIDC_DEFAULT_FAIL_WAIT_S */
    int stale_grace_s;      /* < 0: none; 0: OIDC_DEFAULT_STALE_S */

    oidc_clock_fn clock; /* NULL: the real wall clock */
    void *clock_ud;
};

struct oidc_verifier;

/*
 * Creates a verifier. Returns NULL with err set to ST_INVALID for a bad
 * configuration (no audience, no or two key sources, a static document
 * without usable keys...). Thread-safe once created; free it with
 * oidc_verifier_free() after every verifying thread is done.
 */
struct oidc_verifier *oidc_verifier_new(const struct oidc_config *cfg, struct error *err);
void oidc_verifier_free(struct oidc_verifier *v);

/*
 * Verifies a compact ID token (NUL-terminated, borrowed). On ST_OK, when
 * claims is non-NULL, *claims is the verified payload, a new reference the
 * caller frees with json_decref(); on failure *claims is NULL. Failure
 * statuses are listed at the top of this file. Safe to call from any
 * number of threads; may block while keys are fetched.
 */
enum status oidc_verify(struct oidc_verifier *v, const char *token, json_t **claims,
                        struct error *err);

/*
 * Same, from the value of an Authorization header (NULL when absent):
 * oidc_bearer_token() then oidc_verify().
 */
enum status oidc_verify_authorization(struct oidc_verifier *v, const char *authorization,
                                      json_t **claims, struct error *err);

/* Number of key fetches performed so far (successful or not); for metrics and tests. */
uint64_t oidc_verifier_fetch_count(struct oidc_verifier *v);

/* ---- helpers ------------------------------------------------------------------ */

/*
 * Extracts the token from an Authorization header value: the scheme
 * "Bearer" in any case, then spaces, then the token; surrounding spaces
 * and tabs are trimmed, and the token must be one run of non-space
 * characters. Copies it NUL-terminated into out (capacity cap).
 * ST_UNAUTHENTICATED when header is NULL or blank, of another scheme,
 * empty, or longer than cap - 1 bytes.
 */
enum status oidc_bearer_token(const char *header, char *out, size_t cap, struct error *err);

/*
 * The max-age of a Cache-Control header value ("public, max-age=19204,
 * must-revalidate"): the number of seconds (capped at INT32_MAX), 0 when
 * the value says no-cache or no-store, -1 when there is no usable max-age
 * (value NULL, directive absent or malformed).
 */
int oidc_cache_control_max_age(const char *value);

/* ---- HTTP fetch (oidc_http.c, on common/http/client.h) -------------------------- */

/*
 * An oidc_fetch_fn over the project's HTTP client: ud is a
 * struct http_client *. GETs url (idempotent, retried by the client),
 * requires a 200 answer and reads max-age from Cache-Control.
 */
enum status oidc_http_fetch(void *ud, const char *url, struct buf *body, int *max_age_s,
                            struct error *err);

/* ---- local issuer --------------------------------------------------------------- */

#define OIDC_LOCAL_LIFETIME_S    3600
#define OIDC_LOCAL_REFRESH_S     300 /* mint a new token this long before the cached one expires */
#define OIDC_LOCAL_AUDIENCES_MAX 64

struct oidc_local_issuer_config {
    const char *private_key_pem; /* RSA private key (jwt_rsa_generate()) */
    const char *issuer;          /* "iss" */
    const char *email;           /* "email", with "email_verified": true */
    const char *subject;         /* "sub"; NULL: the email */
    int lifetime_s;              /* <= 0: OIDC_LOCAL_LIFETIME_S */
    oidc_clock_fn clock;         /* NULL: the real wall clock */
    void *clock_ud;
};

struct oidc_local_issuer;

/*
 * Creates an issuer (strings copied). NULL with err set (ST_INVALID) for a
 * bad key or missing issuer/email. Thread-safe once created.
 */
struct oidc_local_issuer *oidc_local_issuer_new(const struct oidc_local_issuer_config *cfg,
                                                struct error *err);
void oidc_local_issuer_free(struct oidc_local_issuer *li);

/*
 * Returns an ID token for audience in *out (malloc'd, caller frees with
 * free()) with claims iss, aud, sub, email, email_verified, iat, exp and
 * header kid = the key's jwt_key_id(). A token is cached per audience and
 * reused until OIDC_LOCAL_REFRESH_S before its expiry; at most
 * OIDC_LOCAL_AUDIENCES_MAX audiences are cached (the one expiring first
 * is evicted). ST_INVALID for an empty audience.
 */
enum status oidc_local_issuer_token(struct oidc_local_issuer *li, const char *audience, char **out,
                                    struct error *err);

/*
 * The JWKS document publishing the issuer's public key, as compact JSON
 * (borrowed, valid until oidc_local_issuer_free()); suitable as
 * oidc_config.jwks_json.
 */
const char *oidc_local_issuer_jwks(const struct oidc_local_issuer *li);

#endif
