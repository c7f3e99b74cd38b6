/*
 * auth.h - access tokens for Google APIs without an SDK (gcp.md section 4).
 *
 * Sources, chosen by gcp_auth_new() from its options in this order (the
 * caller's settings decide: emulator hosts, GOOGLE_APPLICATION_CREDENTIALS):
 *  - emulator mode (none): no token at all (FIRESTORE_EMULATOR_HOST and
 *    friends);
 *  - a service-account JSON key (credentials_file): the JWT bearer grant
 *    (RFC 7523) signed RS256 with header kid = private_key_id and claims
 *    iss = client_email, scope, aud = the key's token_uri, iat, exp = iat +
 *    3600, POSTed as a form to token_url (default: the key's token_uri);
 *    up to 3 tries;
 *  - the metadata server (Cloud Run): GET instance/service-accounts/default/
 *    token?scopes=... with Metadata-Flavor: Google; an answer without
 *    Metadata-Flavor: Google is refused (it is not the metadata server);
 *    1 s connect timeout, 3 tries.
 * Tokens are cached with an absolute expiry (receipt time + expires_in) and
 * refreshed when less than 5 minutes remain, one refresh at a time however
 * many threads ask: the others wait for it and share its result, token or
 * error, except that a caller whose cached token still has 30 s left takes
 * it without waiting. A failed refresh while the cached token is still
 * valid returns the cached token (and logs a warning), and the next try
 * waits 10 s while the token lasts. A 401 from an API
 * calls gcp_auth_invalidate() to force a refresh. All functions are
 * thread-safe. Tokens, assertions and keys are never logged.
 */
#ifndef GCP_AUTH_H
#define GCP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "http/client.h"

#define GCP_TOKEN_MAX   4096
#define GCP_SCOPE_CLOUD "https://www.googleapis.com/auth/cloud-platform"

struct gcp_auth;

struct gcp_auth_options {
    const char *metadata_base;    /* default http://metadata.google.internal/computeMetadata/v1 */
    const char *credentials_file; /* service-account JSON key; NULL: metadata server */
    const char *token_url;        /* override of the key's token_uri (tests, fakes) */
    const char *scope;            /* default GCP_SCOPE_CLOUD */
    const char *iam_base;         /* default https://iamcredentials.googleapis.com */
    bool none;                    /* emulator mode: no token */
    int64_t (*clock)(void);       /* seconds; NULL: the wall clock (tests inject) */
};

/*
 * Creates the token source; client is borrowed and must outlive it. Strings
 * in o are copied. A key file is read and checked now (RSA, 2048 bits or
 * more): NULL with err (ST_INVALID) when it is unreadable or invalid. No
 * request is made here.
 */
struct gcp_auth *gcp_auth_new(const struct gcp_auth_options *o, struct http_client *client,
                              struct error *err);
void gcp_auth_free(struct gcp_auth *a);

/*
 * Writes "Bearer <token>" (or "" in emulator mode) into out. Refreshes when
 * the cached token expires within 5 minutes. ST_UNAVAILABLE when the token
 * source cannot be reached (or answers 5xx, or is not the metadata server),
 * ST_UNAUTHENTICATED when it refuses us (invalid_grant, no service account).
 * out is "" on failure.
 */
enum status gcp_auth_header(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/*
 * Same, as a whole header line for struct http_call's header list:
 * "Authorization: Bearer <token>", or "" in emulator mode (leave it out of
 * the list then). out needs GCP_AUTH_LINE_MAX bytes. Added to the port
 * because every REST client (Cloud Tasks, Firestore, Storage) sends the
 * token this way and would otherwise format the line itself.
 */
#define GCP_AUTH_LINE_MAX (GCP_TOKEN_MAX + sizeof("Authorization: "))
enum status gcp_auth_header_line(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/* Drops the cached token so the next call fetches a new one (after a 401). */
void gcp_auth_invalidate(struct gcp_auth *a);

/*
 * The project id: from the key file, else the metadata server
 * (project/project-id, read once and cached); "" when unknown (emulator
 * mode, or a key file without project_id).
 */
enum status gcp_auth_project(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/*
 * The service account email: from the key file, else the metadata server
 * (instance/service-accounts/default/email, cached); "" in emulator mode.
 */
enum status gcp_auth_email(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/*
 * Signs bytes with the service account's key (RSA-SHA256, PKCS#1 v1.5):
 * locally with the key file's private key, else through IAM Credentials
 * POST {iam_base}/v1/projects/-/serviceAccounts/{email}:signBlob with the
 * access token (a 401 refreshes it once). For V4 signed URLs. On ST_OK
 * *sig is malloc'd (raw signature bytes, caller frees with free()).
 * ST_FAILED_PRECONDITION in emulator mode without a key file, ST_TOO_LARGE
 * past 1 MiB of data.
 */
enum status gcp_auth_sign(struct gcp_auth *a, const void *data, size_t len, unsigned char **sig,
                          size_t *sig_len, struct error *err);

/* Number of token fetches made (tests check refresh coalescing). */
uint64_t gcp_auth_fetch_count(struct gcp_auth *a);

#endif
