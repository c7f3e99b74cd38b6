/*
 * fake-metadata - the Google endpoints behind gcp/auth.h, on loopback:
 * the metadata server (gcp.md 4.1), an OAuth token endpoint for the JWT
 * bearer grant (4.2), IAM Credentials signBlob (3.4) and a fake Google
 * issuer's JWKS.
 *
 * Metadata server (every request needs Metadata-Flavor: Google, else 403;
 * requests with X-Forwarded-For are refused as the real one does; every
 * answer carries Metadata-Flavor: Google); {sa} is "default" or $FAKE_EMAIL:
 *   GET /computeMetadata/v1/instance/service-accounts/{sa}/token[?scopes=]
 *       {"access_token": "ya29.fake-metadata-<n>", "expires_in", "token_type"}
 *   GET /computeMetadata/v1/instance/service-accounts/{sa}/email
 *   GET /computeMetadata/v1/instance/service-accounts/{sa}/identity?audience=A
 *       a raw ID token signed by the fake Google issuer (JWKS below)
 *   GET /computeMetadata/v1/project/project-id, .../project/numeric-project-id
 * OAuth token endpoint (needs FAKE_SA_KEY):
 *   POST /token  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT
 *       The assertion must be RS256, signed by the key file's key, with kid =
 *       private_key_id, iss = client_email, aud = $FAKE_TOKEN_AUDIENCE (default
 *       "http://<Host>/token"), a non-empty scope, exp - iat <= 3600 and exp in the
 *       future; else 400 {"error": "invalid_grant", "error_description"}.
 * IAM Credentials (needs FAKE_SA_KEY):
 *   POST /iam/v1/projects/-/serviceAccounts/{email}:signBlob  {"payload": b64}
 *       -> {"keyId", "signedBlob"}: RSA-SHA256 with the key file's key; needs a
 *       bearer token; {email} is the key's client_email or $FAKE_EMAIL.
 * Keys:
 *   GET /oauth2/v3/certs  the fake Google issuer's JWKS
 * Control:
 *   GET  /fake/stats           tokenRequests, identityRequests, emailRequests,
 *                              projectRequests, tokenGrants, tokenRefusals,
 *                              signBlobRequests, flavorRefusals
 *   GET  /fake/last-assertion  {"assertion": the last JWT posted to /token}
 *   POST /fake/config          {"tokenLifetime", "latencyMs"}
 *
 * Environment: PORT, FAKE_PROJECT ("test-project"), FAKE_EMAIL
 * ("worker@test-project.iam.gserviceaccount.com"), FAKE_TOKEN_LIFETIME
 * (3599 s), FAKE_TOKEN_LATENCY_MS (0: added to each token answer, to make
 * concurrent refreshes overlap), FAKE_SA_KEY (service-account JSON key
 * file), FAKE_TOKEN_AUDIENCE, FAKE_ISSUER_KEY (PEM; default generated).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "fake_common.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"
#include "http/server.h"

#define NAME       "fake-metadata"
#define GRANT_TYPE "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define FORM_MAX   (64 * 1024)
#define FIELD_MAX  512

struct sa_key {
    char *email;
    char *key_id;
    char *pem;
    EVP_PKEY *pkey;
    char *jwks; /* the public key under kid = private_key_id */
};

struct fake {
    char project[128];
    char numeric_project[32];
    char email[FIELD_MAX];
    const char *token_audience; /* NULL: from Host */
    struct fake_google *google;
    struct sa_key sa;
    bool has_sa;

    pthread_mutex_t mu;
    int64_t lifetime_s;
    int64_t latency_ms;
    int64_t token_requests, identity_requests, email_requests, project_requests;
    int64_t token_grants, token_refusals, sign_requests, flavor_refusals;
    char *last_assertion;
};

static void count(struct fake *f, int64_t *counter)
{
    pthread_mutex_lock(&f->mu);
    (*counter)++;
    pthread_mutex_unlock(&f->mu);
}

/* ---- the service-account key ------------------------------------------- */

static void sa_load(struct sa_key *sa, const char *path)
{
    json_t *root, *jwk = NULL, *jwks = NULL;
    json_error_t je;
    struct error err;

    root = json_load_file(path, 0, &je);
    if (!root || !json_is_string(json_object_get(root, "client_email")) ||
        !json_is_string(json_object_get(root, "private_key"))) {
        fprintf(stderr, NAME ": FAKE_SA_KEY %s is not a service-account key\n", path);
        exit(2);
    }
    sa->email = xstrdup(json_str_or(root, "client_email", ""));
    sa->pem = xstrdup(json_str_or(root, "private_key", ""));
    sa->key_id = xstrdup(json_str_or(root, "private_key_id", ""));
    if (jwt_key_load_private(sa->pem, &sa->pkey, &err) != ST_OK ||
        jwt_key_jwk(sa->pkey, &jwk, &err) != ST_OK) {
        fprintf(stderr, NAME ": FAKE_SA_KEY %s: %s\n", path, err.message);
        exit(2);
    }
    /* Google publishes a service account's keys under their private_key_id. */
    if (sa->key_id[0])
        json_object_set_new(jwk, "kid", json_string(sa->key_id));
    jwks = json_pack("{s:[o]}", "keys", jwk);
    sa->jwks = json_dump_compact(jwks);
    json_decref(jwks);
    json_decref(root);
}

static void sa_release(struct sa_key *sa)
{
    EVP_PKEY_free(sa->pkey);
    free(sa->email);
    free(sa->key_id);
    free(sa->pem);
    free(sa->jwks);
}

/* ---- metadata server ----------------------------------------------------- */

/* Every metadata answer says Metadata-Flavor: Google; requests must too. */
static bool flavor_ok(struct fake *f, struct http_request *req, struct http_response *resp)
{
    const char *flavor = http_request_header(req, "Metadata-Flavor");
    static const char missing[] = "Missing required header: Metadata-Flavor: Google\n";
    static const char forwarded[] = "Request with X-Forwarded-For refused\n";

    http_response_header(resp, "Metadata-Flavor", "Google");
    if (http_request_header(req, "X-Forwarded-For")) {
        count(f, &f->flavor_refusals);
        http_respond_bytes(resp, 403, "text/plain", forwarded, sizeof(forwarded) - 1);
        return false;
    }
    if (!flavor || strcmp(flavor, "Google") != 0) {
        count(f, &f->flavor_refusals);
        http_respond_bytes(resp, 403, "text/plain", missing, sizeof(missing) - 1);
        return false;
    }
    return true;
}

static void respond_text(struct http_response *resp, int code, const char *text)
{
    http_respond_bytes(resp, code, "application/text", text, strlen(text));
}

/* The {sa} segment: "default" or the account's email. */
static bool account_ok(struct fake *f, struct http_request *req, struct http_response *resp)
{
    const char *sa = http_request_param(req, "sa");

    if (sa && (strcmp(sa, "default") == 0 || strcmp(sa, f->email) == 0))
        return true;
    respond_text(resp, 404, "Not Found\n");
    return false;
}

static void md_token(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    int64_t n, life, latency;
    char token[64];

    if (!flavor_ok(f, req, resp) || !account_ok(f, req, resp))
        return;
    pthread_mutex_lock(&f->mu);
    n = ++f->token_requests;
    life = f->lifetime_s;
    latency = f->latency_ms;
    pthread_mutex_unlock(&f->mu);
    fake_sleep_ms(latency);
    str_printf(token, sizeof(token), "ya29.fake-metadata-%lld", (long long)n);
    http_respond_json(resp, 200,
                      json_pack("{s:s, s:I, s:s}", "access_token", token, "expires_in",
                                (json_int_t)life, "token_type", "Bearer"));
}

static void md_email(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    if (!flavor_ok(f, req, resp) || !account_ok(f, req, resp))
        return;
    count(f, &f->email_requests);
    respond_text(resp, 200, f->email);
}

static void md_identity(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    const char *aud = http_request_query(req, "audience");
    char *token = NULL;
    struct error err;

    if (!flavor_ok(f, req, resp) || !account_ok(f, req, resp))
        return;
    count(f, &f->identity_requests);
    if (!aud || !aud[0]) {
        respond_text(resp, 400, "non-empty audience parameter required\n");
        return;
    }
    if (fake_google_token(f->google, aud, f->email, &token, &err) != ST_OK) {
        respond_text(resp, 500, err.message);
        return;
    }
    respond_text(resp, 200, token);
    free(token);
}

static void md_project(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    if (!flavor_ok(f, req, resp))
        return;
    count(f, &f->project_requests);
    respond_text(resp, 200, f->project);
}

static void md_numeric_project(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    if (!flavor_ok(f, req, resp))
        return;
    respond_text(resp, 200, f->numeric_project);
}

/* ---- OAuth token endpoint ------------------------------------------------ */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * The decoded value of field in an application/x-www-form-urlencoded body
 * (malloc'd), or NULL when absent or badly encoded.
 */
static char *form_value(const char *body, size_t len, const char *field)
{
    size_t flen = strlen(field), i = 0;

    while (i < len) {
        size_t end = i;

        while (end < len && body[end] != '&')
            end++;
        if (end - i > flen && strncmp(body + i, field, flen) == 0 && body[i + flen] == '=') {
            struct buf out;
            size_t k;

            buf_init(&out, FORM_MAX);
            for (k = i + flen + 1; k < end; k++) {
                char c = body[k];

                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    int hi = k + 2 < end ? hex_value(body[k + 1]) : -1;
                    int lo = k + 2 < end ? hex_value(body[k + 2]) : -1;

                    if (hi < 0 || lo < 0) {
                        buf_release(&out);
                        return NULL;
                    }
                    c = (char)(hi * 16 + lo);
                    k += 2;
                }
                buf_append(&out, &c, 1);
            }
            return buf_take(&out, NULL);
        }
        i = end + 1;
    }
    return NULL;
}

static void grant_error(struct fake *f, struct http_response *resp, const char *error,
                        const char *description)
{
    count(f, &f->token_refusals);
    http_respond_json(resp, 400,
                      json_pack("{s:s, s:s}", "error", error, "error_description", description));
}

/* Verifies a JWT bearer assertion as Google's token endpoint would (gcp.md 4.2). */
static bool assertion_ok(struct fake *f, struct http_request *req, const char *assertion, char *why,
                         size_t cap)
{
    struct oidc_verifier *v = NULL;
    const char *issuers[] = {f->sa.email, NULL};
    struct oidc_config cfg;
    json_t *claims = NULL;
    char aud[FIELD_MAX];
    struct error err;
    const char *scope;
    bool ok = false;

    if (f->token_audience)
        str_copy(aud, sizeof(aud), f->token_audience);
    else
        str_printf(aud, sizeof(aud), "http://%s/token",
                   http_request_header(req, "Host") ? http_request_header(req, "Host") : "");
    memset(&cfg, 0, sizeof(cfg));
    cfg.issuers = issuers;
    cfg.audience = aud;
    cfg.jwks_json = f->sa.jwks;
    cfg.clock_skew_s = 60;
    v = oidc_verifier_new(&cfg, &err);
    if (!v) {
        str_printf(why, cap, "fake: %s", err.message);
        goto out;
    }
    /* RS256 only, kid known, signature, iat/exp, iss and aud: the verifier's checks. */
    if (oidc_verify(v, assertion, &claims, &err) != ST_OK) {
        str_printf(why, cap, "Invalid JWT: %s", err.message);
        goto out;
    }
    scope = json_str_or(claims, "scope", NULL);
    if (!scope || !scope[0]) {
        str_copy(why, cap, "Invalid JWT: no scope claim");
        goto out;
    }
    if (json_int_or(claims, "exp", 0) - json_int_or(claims, "iat", 0) > 3600) {
        str_copy(why, cap,
                 "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                 "reasonable timeframe. Check your iat and exp values in the JWT claim.");
        goto out;
    }
    ok = true;
out:
    json_decref(claims);
    oidc_verifier_free(v);
    return ok;
}

static void oauth_token(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    char *grant = NULL, *assertion = NULL, why[ERROR_MSG_MAX + 32], token[64];
    const char *body;
    int64_t n, life, latency;
    size_t len;

    body = http_request_body(req, &len);
    grant = form_value(body, len, "grant_type");
    assertion = form_value(body, len, "assertion");
    pthread_mutex_lock(&f->mu);
    if (assertion) {
        free(f->last_assertion);
        f->last_assertion = xstrdup(assertion);
    }
    latency = f->latency_ms;
    pthread_mutex_unlock(&f->mu);
    fake_sleep_ms(latency);
    if (!grant || strcmp(grant, GRANT_TYPE) != 0) {
        str_printf(why, sizeof(why), "Invalid grant_type: %.64s", grant ? grant : "");
        grant_error(f, resp, "unsupported_grant_type", why);
        goto out;
    }
    if (!assertion) {
        grant_error(f, resp, "invalid_request", "Missing required parameter: assertion");
        goto out;
    }
    if (!f->has_sa) {
        grant_error(f, resp, "invalid_grant", "fake: no FAKE_SA_KEY configured");
        goto out;
    }
    if (!assertion_ok(f, req, assertion, why, sizeof(why))) {
        grant_error(f, resp, "invalid_grant", why);
        goto out;
    }
    pthread_mutex_lock(&f->mu);
    n = ++f->token_grants;
    life = f->lifetime_s;
    pthread_mutex_unlock(&f->mu);
    str_printf(token, sizeof(token), "ya29.fake-sa-%lld", (long long)n);
    http_respond_json(resp, 200,
                      json_pack("{s:s, s:I, s:s}", "access_token", token, "expires_in",
                                (json_int_t)life, "token_type", "Bearer"));
out:
    free(grant);
    free(assertion);
}

/* ---- IAM Credentials signBlob --------------------------------------------- */

static void sign_blob(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    const char *project = http_request_param(req, "project");
    const char *target = http_request_param(req, "target");
    const char *auth = http_request_header(req, "Authorization");
    json_t *body = http_request_json(req);
    const char *payload = json_str_or(body, "payload", NULL), *key;
    char email[FIELD_MAX];
    unsigned char *sig = NULL;
    EVP_MD_CTX *md = NULL;
    struct buf raw, b64;
    size_t n = 0, tlen;
    json_t *v;

    buf_init(&raw, 1 << 20);
    buf_init(&b64, 1 << 21);
    count(f, &f->sign_requests);
    if (!auth || !str_starts_with(auth, "Bearer ") || !auth[7]) {
        fake_respond_rpc_error(resp, 401, "UNAUTHENTICATED",
                               "Request is missing required authentication credential.");
        goto out;
    }
    tlen = target ? strlen(target) : 0;
    if (tlen <= 9 || strcmp(target + tlen - 9, ":signBlob") != 0) {
        fake_respond_rpc_error(resp, 404, "NOT_FOUND", "Method not found.");
        goto out;
    }
    if (!project || strcmp(project, "-") != 0) {
        fake_respond_rpc_error(resp, 400, "INVALID_ARGUMENT",
                               "The project must be the wildcard \"-\".");
        goto out;
    }
    str_printf(email, sizeof(email), "%.*s", (int)(tlen - 9), target);
    if (!f->has_sa || (strcmp(email, f->sa.email) != 0 && strcmp(email, f->email) != 0)) {
        fake_respond_rpc_error(resp, 404, "NOT_FOUND", "Service account %s not found.", email);
        goto out;
    }
    json_object_foreach(body, key, v)
    {
        UNUSED(v);
        if (strcmp(key, "payload") != 0 && strcmp(key, "delegates") != 0) {
            fake_respond_rpc_error(resp, 400, "INVALID_ARGUMENT",
                                   "Invalid JSON payload received. Unknown name \"%.64s\": Cannot "
                                   "find field.",
                                   key);
            goto out;
        }
    }
    if (!payload || base64_decode(&raw, payload, strlen(payload)) != ST_OK) {
        fake_respond_rpc_error(resp, 400, "INVALID_ARGUMENT", "payload must be base64 bytes.");
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, f->sa.pkey) != 1 ||
        EVP_DigestSign(md, NULL, &n, (const unsigned char *)buf_str(&raw), raw.len) != 1) {
        fake_respond_rpc_error(resp, 500, "INTERNAL", "cannot sign");
        goto out;
    }
    sig = xmalloc(n);
    if (EVP_DigestSign(md, sig, &n, (const unsigned char *)buf_str(&raw), raw.len) != 1) {
        fake_respond_rpc_error(resp, 500, "INTERNAL", "cannot sign");
        goto out;
    }
    base64_encode(&b64, sig, n, B64_STD);
    http_respond_json(resp, 200,
                      json_pack("{s:s, s:s}", "keyId", f->sa.key_id, "signedBlob", buf_str(&b64)));
out:
    EVP_MD_CTX_free(md);
    free(sig);
    buf_release(&raw);
    buf_release(&b64);
}

/* ---- control ------------------------------------------------------------- */

static void handle_stats(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    UNUSED(req);
    pthread_mutex_lock(&f->mu);
    http_respond_json(
        resp, 200,
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "tokenRequests",
                  (json_int_t)f->token_requests, "identityRequests",
                  (json_int_t)f->identity_requests, "emailRequests", (json_int_t)f->email_requests,
                  "projectRequests", (json_int_t)f->project_requests, "tokenGrants",
                  (json_int_t)f->token_grants, "tokenRefusals", (json_int_t)f->token_refusals,
                  "signBlobRequests", (json_int_t)f->sign_requests, "flavorRefusals",
                  (json_int_t)f->flavor_refusals));
    pthread_mutex_unlock(&f->mu);
}

static void handle_last_assertion(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    UNUSED(req);
    pthread_mutex_lock(&f->mu);
    http_respond_json(
        resp, 200, json_pack("{s:s?}", "assertion", f->last_assertion ? f->last_assertion : NULL));
    pthread_mutex_unlock(&f->mu);
}

static void handle_config(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    json_t *body = http_request_json(req), *v;

    pthread_mutex_lock(&f->mu);
    if ((v = json_object_get(body, "tokenLifetime")) && json_is_integer(v))
        f->lifetime_s = json_integer_value(v);
    if ((v = json_object_get(body, "latencyMs")) && json_is_integer(v))
        f->latency_ms = json_integer_value(v);
    http_respond_json(resp, 200,
                      json_pack("{s:I, s:I}", "tokenLifetime", (json_int_t)f->lifetime_s,
                                "latencyMs", (json_int_t)f->latency_ms));
    pthread_mutex_unlock(&f->mu);
}

/* ---- main ------------------------------------------------------------------- */

int main(void)
{
    static struct fake f;
    struct http_server *srv;
    const char *key;
    int rc;

    fake_signals_block();
    log_init(NAME, NULL, LOG_WARNING, 2);
    pthread_mutex_init(&f.mu, NULL);
    str_copy(f.project, sizeof(f.project), fake_env_str("FAKE_PROJECT", "test-project"));
    str_copy(f.numeric_project, sizeof(f.numeric_project),
             fake_env_str("FAKE_NUMERIC_PROJECT", "123456789012"));
    str_copy(f.email, sizeof(f.email),
             fake_env_str("FAKE_EMAIL", "worker@test-project.iam.gserviceaccount.com"));
    f.token_audience = fake_env_str("FAKE_TOKEN_AUDIENCE", NULL);
    f.lifetime_s = fake_env_int("FAKE_TOKEN_LIFETIME", 3599, 1, 86400);
    f.latency_ms = fake_env_int("FAKE_TOKEN_LATENCY_MS", 0, 0, 60000);
    key = fake_env_str("FAKE_SA_KEY", NULL);
    if (key) {
        sa_load(&f.sa, key);
        f.has_sa = true;
    }
    f.google = fake_google_new(fake_env_str("FAKE_ISSUER_KEY", NULL));

    srv = fake_server_new(NAME, FORM_MAX);
    http_server_route(srv, "GET", "/computeMetadata/v1/instance/service-accounts/{sa}/token", 0,
                      md_token, &f);
    http_server_route(srv, "GET", "/computeMetadata/v1/instance/service-accounts/{sa}/email", 0,
                      md_email, &f);
    http_server_route(srv, "GET", "/computeMetadata/v1/instance/service-accounts/{sa}/identity", 0,
                      md_identity, &f);
    http_server_route(srv, "GET", "/computeMetadata/v1/project/project-id", 0, md_project, &f);
    http_server_route(srv, "GET", "/computeMetadata/v1/project/numeric-project-id", 0,
                      md_numeric_project, &f);
    http_server_route(srv, "POST", "/token", 0, oauth_token, &f);
    http_server_route(srv, "POST", "/iam/v1/projects/{project}/serviceAccounts/{target}",
                      HTTP_ROUTE_JSON, sign_blob, &f);
    http_server_route(srv, "GET", "/fake/stats", 0, handle_stats, &f);
    http_server_route(srv, "GET", "/fake/last-assertion", 0, handle_last_assertion, &f);
    http_server_route(srv, "POST", "/fake/config", HTTP_ROUTE_JSON, handle_config, &f);
    fake_google_routes(f.google, srv);
    rc = fake_serve(srv, NAME);
    fake_google_free(f.google);
    if (f.has_sa)
        sa_release(&f.sa);
    free(f.last_assertion);
    pthread_mutex_destroy(&f.mu);
    return rc;
}
