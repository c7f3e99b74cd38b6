/*
 * auth.h - access tokens for Google APIs without an SDK (gcp.md section 4).
 *
 * Sources, in the order gcp_auth_new_default() tries them:
 *  - emulator mode: no token at all (FIRESTORE_EMULATOR_HOST and friends);
 *  - a service-account JSON key (GOOGLE_APPLICATION_CREDENTIALS): the JWT
 *    bearer grant (RFC 7523) signed RS256, exchanged at the key's token_uri;
 *  - the metadata server (Cloud Run): instance/service-accounts/default/token
 *    with Metadata-Flavor: Google.
 * Tokens are cached and refreshed 5 minutes before expiry, one refresh at a
 * time however many threads ask (the others wait for it); a 401 from an API
 * can force a refresh. All functions are thread-safe.
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

/* NULL with err when a key file is given but unreadable or invalid. */
struct gcp_auth *gcp_auth_new(const struct gcp_auth_options *o, struct http_client *client,
                              struct error *err);
void gcp_auth_free(struct gcp_auth *a);

/*
 * Writes "Bearer <token>" (or "" in emulator mode) into out. Refreshes when
 * the cached token expires within 5 minutes. ST_UNAVAILABLE when the token
 * source cannot be reached, ST_UNAUTHENTICATED when it refuses us.
 */
enum status gcp_auth_header(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/* Drops the cached token so the next call fetches a new one (after a 401). */
void gcp_auth_invalidate(struct gcp_auth *a);

/* The project id: from the key file, else the metadata server; "" when unknown. */
enum status gcp_auth_project(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/* The service account email: from the key file, else the metadata server. */
enum status gcp_auth_email(struct gcp_auth *a, char *out, size_t cap, struct error *err);

/*
 * Signs bytes with the service account's key (RSA-SHA256): locally with the
 * key file's private key, else through IAM Credentials signBlob. For V4
 * signed URLs. *sig is malloc'd (raw signature bytes).
 */
enum status gcp_auth_sign(struct gcp_auth *a, const void *data, size_t len, unsigned char **sig,
                          size_t *sig_len, struct error *err);

/* Number of token fetches made (tests check refresh coalescing). */
uint64_t gcp_auth_fetch_count(struct gcp_auth *a);

#endif
