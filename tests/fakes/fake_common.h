/*
 * fake_common.h - what the fake Google endpoints share: environment
 * settings, the serve-until-SIGTERM loop, Google's JSON error envelope and
 * a fake Google ID-token issuer.
 *
 * A fake prints one line "PORT=<n>" on stdout once it listens (PORT=0 in
 * the environment picks a free port) and logs to stderr. fake_proc.h
 * starts fakes from tests and reads that line.
 */
#ifndef TESTS_FAKES_FAKE_COMMON_H
#define TESTS_FAKES_FAKE_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"
#include "http/server.h"

#define FAKE_GOOGLE_ISSUER "https://accounts.google.com"
#define FAKE_JWKS_PATH     "/oauth2/v3/certs"
#define FAKE_JWKS_MAX_AGE  3600

/* ---- environment ---------------------------------------------------------- */

/* The value of name, or def when unset or empty. Borrowed. */
const char *fake_env_str(const char *name, const char *def);

/* A number from the environment in [min, max]; exits with a message when malformed. */
int64_t fake_env_int(const char *name, int64_t def, int64_t min, int64_t max);
double fake_env_double(const char *name, double def, double min, double max);

/* ---- serving ---------------------------------------------------------------- */

/*
 * Blocks SIGTERM and SIGINT in the calling thread and every thread it
 * creates afterwards; call first in main(), before any thread exists.
 */
void fake_signals_block(void);

/*
 * A server on 127.0.0.1:$PORT with the fakes' settings (bodies up to
 * max_body, no access log unless FAKE_ACCESS_LOG=1). Exits on failure.
 */
struct http_server *fake_server_new(const char *name, size_t max_body);

/*
 * Starts srv, prints "PORT=<n>", waits for SIGTERM or SIGINT, then shuts
 * the server down (grace 1 s) and frees it. Returns the exit code.
 */
int fake_serve(struct http_server *srv, const char *name);

/* ---- answers ------------------------------------------------------------------ */

/*
 * Google's error envelope {"error": {"code", "message", "status"}} with
 * the HTTP code of the RPC status (gcp.md 0).
 */
void fake_respond_rpc_error(struct http_response *resp, int code, const char *rpc_status,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Sleeps ms milliseconds (0: not at all). */
void fake_sleep_ms(int64_t ms);

/* A uniform random number in [0, 1), thread-safe. */
double fake_random(void);

/* ---- the fake Google ID-token issuer ----------------------------------------- */

/*
 * Signs ID tokens as Google would for a service account: iss
 * "https://accounts.google.com", aud, sub, email, email_verified true, iat,
 * exp (1 h), RS256 with header kid. One RSA key for every email.
 */
struct fake_google;

/*
 * Uses the PEM private key in key_path (read now), or generates one on
 * first use when key_path is NULL or empty (RSA generation takes a good
 * part of a second: a fake that never signs never pays it). Exits on
 * failure.
 */
struct fake_google *fake_google_new(const char *key_path);
void fake_google_free(struct fake_google *g);

/* An ID token for (audience, email): malloc'd, the caller frees it. */
enum status fake_google_token(struct fake_google *g, const char *audience, const char *email,
                              char **out, struct error *err);

/*
 * Registers GET /oauth2/v3/certs: the issuer's JWKS with
 * "Cache-Control: public, max-age=3600", as Google serves its keys.
 */
void fake_google_routes(struct fake_google *g, struct http_server *srv);

#endif
