/*
 * auth.c - access tokens for Google APIs: the metadata server, a
 * service-account key with the JWT bearer grant, or nothing (emulators).
 * See auth.h for the contract and gcp.md section 4 for the protocols.
 *
 * Nothing here logs a token, an assertion or a key: messages name the
 * source and the reason only.
 */
#include "gcp/auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "gcp/jwt.h"

#define METADATA_DEFAULT  "http://metadata.google.internal/computeMetadata/v1"
#define IAM_DEFAULT       "https://iamcredentials.googleapis.com"
#define TOKEN_URI_DEFAULT "https://oauth2.googleapis.com/token"
#define JWT_GRANT_TYPE    "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"

/* Refresh when less than this remains (google-auth-library's eager threshold, gcp.md 4.1). */
#define REFRESH_MARGIN_S 300
/*
 * While another thread refreshes, a cached token with at least this much
 * life left is handed out instead of waiting: it is still good for the
 * request the caller is about to make.
 */
#define USABLE_MARGIN_S 30
/* After a failed refresh, a still-valid token is used this long before trying again. */
#define RETRY_AFTER_FAILURE_S 10
#define ASSERTION_LIFE        3600 /* exp - iat of the JWT bearer assertion: Google's maximum */

/*
 * The metadata server is local: a short connect timeout and three tries
 * (gcp.md 4.1), so that "not on Google Cloud" is found out quickly.
 */
#define METADATA_CONNECT_MS 1000
#define METADATA_TIMEOUT_MS 5000
#define METADATA_ATTEMPTS   3
#define TOKEN_TIMEOUT_MS    10000
#define TOKEN_ATTEMPTS      3
#define SIGN_TIMEOUT_MS     10000
#define RESPONSE_MAX        65536
#define KEY_FILE_MAX        65536
#define URL_MAX             2048
#define FIELD_MAX           512
#define SIGN_INPUT_MAX      (1 << 20)

struct gcp_auth {
    /* configuration, fixed at creation */
    struct http_client *client; /* borrowed */
    char *metadata_base;
    char *iam_base;
    char *scope;
    char *token_url; /* where the grant is POSTed: the override or the key's token_uri */
    bool none;
    int64_t (*clock)(void);

    /* the service-account key, when one was given */
    bool has_key;
    char *key_pem;
    char *key_id;
    char *key_email;
    char *key_token_uri; /* the assertion's aud */
    char *key_project;
    EVP_PKEY *pkey;

    /* the token cache */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char token[GCP_TOKEN_MAX];
    int64_t expiry;     /* seconds since the epoch; 0 when there is no token */
    bool refreshing;    /* one thread is fetching */
    uint64_t refreshes; /* completed refreshes, successful or not */
    int64_t retry_at;   /* no refresh before this after a failure, while the token is valid */
    struct error last_err;
    uint64_t fetches;

    /* discovered identity, cached once known */
    char project[FIELD_MAX];
    char email[FIELD_MAX];
};

static int64_t wall_clock(void)
{
    return (int64_t)time(NULL);
}

static int64_t auth_now(const struct gcp_auth *a)
{
    return a->clock ? a->clock() : wall_clock();
}

/* Trailing slashes off a base URL, so that paths join with exactly one. */
static char *base_dup(const char *s, const char *def)
{
    char *b = xstrdup(s && s[0] ? s : def);
    size_t n = strlen(b);

    while (n > 0 && b[n - 1] == '/')
        b[--n] = '\0';
    return b;
}

/* Changes the status of an error already set (keeping its message); returns st. */
static enum status retag(struct error *err, enum status st)
{
    if (err) {
        err->status = st;
        err->code[0] = '\0';
    }
    return st;
}

/* A token goes into an HTTP header: refuse anything that could break the line. */
static bool token_ok(const char *t)
{
    size_t n = strlen(t);
    size_t i;

    if (n == 0 || n + sizeof("Bearer ") > GCP_TOKEN_MAX)
        return false;
    for (i = 0; i < n; i++) {
        if (t[i] <= ' ' || t[i] == 0x7f)
            return false;
    }
    return true;
}

/* ---- the key file ------------------------------------------------------- */

static enum status read_file(const char *path, struct buf *out, struct error *err)
{
    char chunk[4096];
    enum status st = ST_OK;
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return error_set(err, ST_INVALID, "invalid_credentials", "cannot open key file %s: %s",
                         path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(out, chunk, n) != ST_OK) {
            st = error_set(err, ST_INVALID, "invalid_credentials",
                           "key file %s is larger than %d bytes", path, KEY_FILE_MAX);
            break;
        }
    }
    if (st == ST_OK && ferror(f))
        st = error_set(err, ST_INVALID, "invalid_credentials", "cannot read key file %s", path);
    fclose(f);
    return st;
}

static enum status key_field(const json_t *root, const char *field, enum json_need need, char **out,
                             const char *path, struct error *err)
{
    const char *s = NULL;

    if (json_get_string(root, field, need, &s, err) != ST_OK || (need == JSON_REQUIRED && !*s))
        return error_set(err, ST_INVALID, "invalid_credentials",
                         "key file %s: field \"%s\" must be a non-empty string", path, field);
    if (s && *s)
        *out = xstrdup(s);
    return ST_OK;
}

/*
 * Loads a service-account JSON key (gcp.md 4.2). The private key is checked
 * now (RSA, 2048 bits or more), so that a bad file fails at start-up rather
 * than at the first request.
 */
static enum status key_load(struct gcp_auth *a, const char *path, struct error *err)
{
    struct buf text;
    json_t *root = NULL;
    const char *type = NULL;
    enum status st;

    buf_init(&text, KEY_FILE_MAX);
    if ((st = read_file(path, &text, err)) != ST_OK)
        goto out;
    root = json_parse(buf_str(&text), text.len, err);
    if (!root || !json_is_object(root)) {
        st = error_set(err, ST_INVALID, "invalid_credentials", "key file %s is not a json object",
                       path);
        goto out;
    }
    type = json_str_or(root, "type", NULL);
    if (type && strcmp(type, "service_account") != 0) {
        st = error_set(err, ST_INVALID, "invalid_credentials",
                       "key file %s: type \"%.40s\" is not service_account", path, type);
        goto out;
    }
    if ((st = key_field(root, "client_email", JSON_REQUIRED, &a->key_email, path, err)) ||
        (st = key_field(root, "private_key", JSON_REQUIRED, &a->key_pem, path, err)) ||
        (st = key_field(root, "private_key_id", JSON_OPTIONAL, &a->key_id, path, err)) ||
        (st = key_field(root, "token_uri", JSON_OPTIONAL, &a->key_token_uri, path, err)) ||
        (st = key_field(root, "project_id", JSON_OPTIONAL, &a->key_project, path, err)))
        goto out;
    if (!a->key_token_uri)
        a->key_token_uri = xstrdup(TOKEN_URI_DEFAULT);
    if ((st = jwt_key_load_private(a->key_pem, &a->pkey, err)) != ST_OK) {
        /* The reason names the key's defect, never its bytes. */
        st = retag(err, ST_INVALID);
        error_prefix(err, "key file %s: private_key", path);
        goto out;
    }
    a->has_key = true;
out:
    json_decref(root);
    /* The file held the private key: do not leave a copy in freed memory. */
    if (text.data)
        OPENSSL_cleanse(text.data, text.len);
    buf_release(&text);
    return st;
}

/* ---- HTTP helpers ------------------------------------------------------- */

static void metadata_timeouts(CURL *easy, void *ud)
{
    UNUSED(ud);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)METADATA_CONNECT_MS);
}

/*
 * GETs path under the metadata base into out (the body, NUL-terminated).
 * The answer must carry Metadata-Flavor: Google, or it is not the metadata
 * server (gcp.md 4.1). ST_UNAVAILABLE when unreachable or failing,
 * ST_NOT_FOUND for 404, ST_PERMISSION_DENIED for other refusals.
 */
static enum status metadata_get(struct gcp_auth *a, const char *path, struct buf *out,
                                struct error *err)
{
    static const char *const headers[] = {"Metadata-Flavor: Google", NULL};
    struct http_result res;
    const char *flavor;
    char url[URL_MAX];
    enum status st;

    http_result_init(&res);
    if (!str_printf(url, sizeof(url), "%s/%s", a->metadata_base, path)) {
        st = error_set(err, ST_INVALID, NULL, "metadata url for %s is too long", path);
        goto out;
    }
    {
        struct http_call call = {
            .method = "GET",
            .url = url,
            .headers = headers,
            .timeout_ms = METADATA_TIMEOUT_MS,
            .max_response_bytes = RESPONSE_MAX,
            .idempotent = true,
            .max_attempts = METADATA_ATTEMPTS,
            .customize = metadata_timeouts,
        };

        st = http_client_do(a->client, &call, &res, err);
    }
    if (st != ST_OK) {
        if (st == ST_TIMEOUT)
            st = retag(err, ST_UNAVAILABLE);
        error_prefix(err, "metadata server");
        goto out;
    }
    flavor = http_result_header(&res, "Metadata-Flavor");
    if (!flavor || strcmp(flavor, "Google") != 0) {
        st = error_set(err, ST_UNAVAILABLE, NULL,
                       "metadata server: the answer to %s lacks Metadata-Flavor: Google", path);
        goto out;
    }
    if (res.status != 200) {
        if (res.status == 404)
            st = ST_NOT_FOUND;
        else if (res.status >= 500 || res.status == 429)
            st = ST_UNAVAILABLE;
        else
            st = ST_PERMISSION_DENIED;
        error_set(err, st, NULL, "metadata server: %s answered http %ld", path, res.status);
        goto out;
    }
    st = buf_append(out, res.body.data ? res.body.data : "", res.body.len);
    if (st != ST_OK)
        error_set(err, st, NULL, "metadata server: %s answer is too long", path);
out:
    http_result_release(&res);
    return st;
}

/* Reads {"access_token", "expires_in"} from a token response (metadata or OAuth). */
static enum status parse_token(const char *source, const char *text, size_t len, char *token,
                               size_t cap, int64_t *expires_in, struct error *err)
{
    json_t *root = json_parse(text, len, NULL);
    const char *t = root ? json_str_or(root, "access_token", NULL) : NULL;
    int64_t life = root ? json_int_or(root, "expires_in", -1) : -1;
    enum status st = ST_OK;

    if (!t || !token_ok(t) || !str_copy(token, cap, t)) {
        st = error_set(err, ST_UNAVAILABLE, NULL, "%s: answer has no usable access_token", source);
        goto out;
    }
    if (life <= 0) {
        st = error_set(err, ST_UNAVAILABLE, NULL, "%s: answer has no positive expires_in", source);
        goto out;
    }
    *expires_in = life;
out:
    json_decref(root);
    return st;
}

static enum status fetch_metadata(struct gcp_auth *a, char *token, size_t cap, int64_t *expires_in,
                                  struct error *err)
{
    char path[URL_MAX], *scope = NULL;
    struct buf body;
    enum status st;

    buf_init(&body, RESPONSE_MAX);
    scope = curl_easy_escape(NULL, a->scope, 0);
    if (!scope)
        BUG("out of memory escaping a scope");
    if (!str_printf(path, sizeof(path), "instance/service-accounts/default/token?scopes=%s",
                    scope)) {
        st = error_set(err, ST_INVALID, NULL, "metadata token url is too long");
        goto out;
    }
    st = metadata_get(a, path, &body, err);
    if (st == ST_NOT_FOUND || st == ST_PERMISSION_DENIED)
        st = retag(err, ST_UNAUTHENTICATED); /* no service account, or not allowed */
    if (st == ST_OK)
        st = parse_token("metadata server", buf_str(&body), body.len, token, cap, expires_in, err);
out:
    curl_free(scope);
    buf_release(&body);
    return st;
}

/*
 * The JWT bearer grant (RFC 7523, gcp.md 4.2): an assertion signed with
 * the key, exchanged at the token endpoint for an access token.
 */
static enum status fetch_with_key(struct gcp_auth *a, char *token, size_t cap, int64_t *expires_in,
                                  struct error *err)
{
    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    int64_t now = auth_now(a);
    json_t *claims = NULL, *answer = NULL;
    char *assertion = NULL;
    struct http_result res;
    struct buf form;
    enum status st;

    http_result_init(&res);
    buf_init(&form, JWT_TOKEN_MAX_LEN + 256);
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", a->key_email, "scope", a->scope, "aud",
                       a->key_token_uri, "iat", (json_int_t)now, "exp",
                       (json_int_t)(now + ASSERTION_LIFE));
    if (!claims)
        BUG("cannot build assertion claims");
    st = jwt_sign_rs256(a->key_pem, a->key_id, claims, &assertion, err);
    if (st != ST_OK) {
        error_prefix(err, "cannot sign the token assertion for %s", a->key_email);
        goto out;
    }
    /* An assertion is base64url and dots: nothing to escape in the form. */
    if (buf_printf(&form, "grant_type=%s&assertion=%s", JWT_GRANT_TYPE, assertion) != ST_OK)
        BUG("assertion longer than its bound");
    {
        struct http_call call = {
            .method = "POST",
            .url = a->token_url,
            .headers = headers,
            .body = form.data,
            .body_len = form.len,
            .timeout_ms = TOKEN_TIMEOUT_MS,
            .max_response_bytes = RESPONSE_MAX,
            .idempotent = true, /* each grant mints a new token; a repeat is harmless */
            .max_attempts = TOKEN_ATTEMPTS,
        };

        st = http_client_do(a->client, &call, &res, err);
    }
    if (st != ST_OK) {
        if (st == ST_TIMEOUT)
            st = retag(err, ST_UNAVAILABLE);
        error_prefix(err, "token endpoint");
        goto out;
    }
    if (res.status == 200) {
        st = parse_token("token endpoint", buf_str(&res.body), res.body.len, token, cap, expires_in,
                         err);
        goto out;
    }
    /* {"error": "invalid_grant", "error_description": "..."}: codes and reasons, no secrets. */
    answer = json_parse(buf_str(&res.body), res.body.len, NULL);
    st = res.status >= 500 || res.status == 429 ? ST_UNAVAILABLE : ST_UNAUTHENTICATED;
    error_set(err, st, st == ST_UNAUTHENTICATED ? "token_refused" : NULL,
              "token endpoint refused the grant for %s: http %ld %.40s%s%.120s", a->key_email,
              res.status, answer ? json_str_or(answer, "error", "") : "",
              answer && json_str_or(answer, "error_description", NULL) ? ": " : "",
              answer ? json_str_or(answer, "error_description", "") : "");
out:
    json_decref(answer);
    json_decref(claims);
    if (assertion) {
        OPENSSL_cleanse(assertion, strlen(assertion));
        free(assertion);
    }
    if (form.data)
        OPENSSL_cleanse(form.data, form.len);
    buf_release(&form);
    http_result_release(&res);
    return st;
}

/* ---- lifecycle ---------------------------------------------------------- */

struct gcp_auth *gcp_auth_new(const struct gcp_auth_options *o, struct http_client *client,
                              struct error *err)
{
    struct gcp_auth *a;

    if (!client) {
        error_set(err, ST_INVALID, NULL, "gcp auth needs an http client");
        return NULL;
    }
    a = xcalloc(1, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->client = client;
    a->metadata_base = base_dup(o ? o->metadata_base : NULL, METADATA_DEFAULT);
    a->iam_base = base_dup(o ? o->iam_base : NULL, IAM_DEFAULT);
    a->scope = xstrdup(o && o->scope && o->scope[0] ? o->scope : GCP_SCOPE_CLOUD);
    a->none = o && o->none;
    a->clock = o ? o->clock : NULL;
    if (o && o->credentials_file && o->credentials_file[0]) {
        if (key_load(a, o->credentials_file, err) != ST_OK) {
            gcp_auth_free(a);
            return NULL;
        }
        a->token_url = xstrdup(o->token_url && o->token_url[0] ? o->token_url : a->key_token_uri);
    }
    return a;
}

void gcp_auth_free(struct gcp_auth *a)
{
    if (!a)
        return;
    if (a->key_pem) {
        OPENSSL_cleanse(a->key_pem, strlen(a->key_pem));
        free(a->key_pem);
    }
    OPENSSL_cleanse(a->token, sizeof(a->token));
    EVP_PKEY_free(a->pkey);
    free(a->key_id);
    free(a->key_email);
    free(a->key_token_uri);
    free(a->key_project);
    free(a->token_url);
    free(a->metadata_base);
    free(a->iam_base);
    free(a->scope);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* ---- tokens ------------------------------------------------------------- */

static enum status write_header(const char *token, char *out, size_t cap, struct error *err)
{
    if (!str_printf(out, cap, "Bearer %s", token)) {
        out[0] = '\0';
        return error_set(err, ST_INVALID, NULL, "authorization header needs more than %zu bytes",
                         cap);
    }
    return ST_OK;
}

/*
 * One refresh at a time: the first thread that finds the token stale
 * fetches a new one with the lock released; the others wait on the
 * condition variable and take its result (a new token, the old one while
 * it is still valid, or the error) without starting a refresh of their
 * own. A waiter whose cached token still has USABLE_MARGIN_S left does not
 * wait. After a failed refresh, a still-valid token is used for
 * RETRY_AFTER_FAILURE_S before the next attempt, so that a slow or
 * unreachable source does not hold up every call.
 */
enum status gcp_auth_header(struct gcp_auth *a, char *out, size_t cap, struct error *err)
{
    char fresh[GCP_TOKEN_MAX];
    int64_t expires_in = 0, now;
    struct error e;
    enum status st;

    ASSERT(a && out && cap > 0);
    out[0] = '\0';
    if (a->none)
        return ST_OK;
    pthread_mutex_lock(&a->mu);
    now = auth_now(a);
    if (a->expiry - now > REFRESH_MARGIN_S ||
        (a->expiry - now > USABLE_MARGIN_S && (a->refreshing || now < a->retry_at))) {
        st = write_header(a->token, out, cap, err);
        goto unlock;
    }
    if (a->refreshing) {
        uint64_t seen = a->refreshes;

        while (a->refreshing && a->refreshes == seen)
            pthread_cond_wait(&a->cv, &a->mu);
        /* The refresh we waited for decides: its token, the old one if still valid, or its
         * error. */
        if (a->expiry > auth_now(a)) {
            st = write_header(a->token, out, cap, err);
        } else {
            st = a->last_err.status != ST_OK ? a->last_err.status : ST_UNAVAILABLE;
            if (err)
                *err = a->last_err;
        }
        goto unlock;
    }
    a->refreshing = true;
    pthread_mutex_unlock(&a->mu);

    error_clear(&e);
    if (a->has_key)
        st = fetch_with_key(a, fresh, sizeof(fresh), &expires_in, &e);
    else
        st = fetch_metadata(a, fresh, sizeof(fresh), &expires_in, &e);

    pthread_mutex_lock(&a->mu);
    now = auth_now(a);
    a->fetches++;
    a->refreshes++;
    a->refreshing = false;
    a->last_err = e;
    if (st == ST_OK) {
        str_copy(a->token, sizeof(a->token), fresh);
        a->expiry = now + expires_in; /* absolute, from the time of receipt */
        a->retry_at = 0;
    } else {
        a->retry_at = now + RETRY_AFTER_FAILURE_S;
    }
    pthread_cond_broadcast(&a->cv);
    if (st == ST_OK || a->expiry > now) {
        if (st != ST_OK)
            log_warn("gcp auth: cannot refresh the access token, using the cached one for %lld "
                     "more seconds: %s",
                     (long long)(a->expiry - now), e.message);
        st = write_header(a->token, out, cap, err);
    } else if (err) {
        *err = e;
    }
unlock:
    pthread_mutex_unlock(&a->mu);
    OPENSSL_cleanse(fresh, sizeof(fresh));
    return st;
}

enum status gcp_auth_header_line(struct gcp_auth *a, char *out, size_t cap, struct error *err)
{
    static const char name[] = "Authorization: ";
    enum status st;

    ASSERT(cap > sizeof(name));
    st = gcp_auth_header(a, out + sizeof(name) - 1, cap - (sizeof(name) - 1), err);
    if (st != ST_OK || !out[sizeof(name) - 1]) {
        out[0] = '\0';
        return st;
    }
    memcpy(out, name, sizeof(name) - 1);
    return ST_OK;
}

void gcp_auth_invalidate(struct gcp_auth *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    OPENSSL_cleanse(a->token, sizeof(a->token));
    a->expiry = 0;
    pthread_mutex_unlock(&a->mu);
}

uint64_t gcp_auth_fetch_count(struct gcp_auth *a)
{
    uint64_t n;

    pthread_mutex_lock(&a->mu);
    n = a->fetches;
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* ---- identity ----------------------------------------------------------- */

/*
 * A metadata text value, cached in slot (a->project or a->email) once
 * read. Concurrent first calls may both ask the server; the answer is the
 * same.
 */
static enum status metadata_value(struct gcp_auth *a, char *slot, const char *path, char *out,
                                  size_t cap, struct error *err)
{
    struct buf body;
    enum status st;
    size_t n;

    pthread_mutex_lock(&a->mu);
    if (slot[0]) {
        bool fits = str_copy(out, cap, slot);

        pthread_mutex_unlock(&a->mu);
        return fits ? ST_OK
                    : error_set(err, ST_INVALID, NULL, "%s does not fit in %zu bytes", path, cap);
    }
    pthread_mutex_unlock(&a->mu);

    buf_init(&body, FIELD_MAX - 1);
    st = metadata_get(a, path, &body, err);
    if (st != ST_OK)
        goto out;
    n = body.len;
    while (n > 0 &&
           (body.data[n - 1] == '\n' || body.data[n - 1] == '\r' || body.data[n - 1] == ' '))
        body.data[--n] = '\0';
    if (n == 0 || strlen(body.data) != n) {
        st = error_set(err, ST_UNAVAILABLE, NULL, "metadata server: %s is empty", path);
        goto out;
    }
    if (!str_copy(out, cap, body.data)) {
        st = error_set(err, ST_INVALID, NULL, "%s does not fit in %zu bytes", path, cap);
        goto out;
    }
    pthread_mutex_lock(&a->mu);
    str_copy(slot, FIELD_MAX, body.data);
    pthread_mutex_unlock(&a->mu);
out:
    buf_release(&body);
    return st;
}

static enum status copy_out(const char *what, const char *v, char *out, size_t cap,
                            struct error *err)
{
    if (!str_copy(out, cap, v ? v : ""))
        return error_set(err, ST_INVALID, NULL, "%s does not fit in %zu bytes", what, cap);
    return ST_OK;
}

enum status gcp_auth_project(struct gcp_auth *a, char *out, size_t cap, struct error *err)
{
    ASSERT(a && out && cap > 0);
    out[0] = '\0';
    if (a->has_key && a->key_project)
        return copy_out("project id", a->key_project, out, cap, err);
    if (a->none || a->has_key)
        return ST_OK; /* unknown: emulators need none, and a key without one names none */
    return metadata_value(a, a->project, "project/project-id", out, cap, err);
}

enum status gcp_auth_email(struct gcp_auth *a, char *out, size_t cap, struct error *err)
{
    ASSERT(a && out && cap > 0);
    out[0] = '\0';
    if (a->has_key)
        return copy_out("service account email", a->key_email, out, cap, err);
    if (a->none)
        return ST_OK;
    return metadata_value(a, a->email, "instance/service-accounts/default/email", out, cap, err);
}

/* ---- signing ------------------------------------------------------------ */

static enum status sign_with_key(struct gcp_auth *a, const void *data, size_t len,
                                 unsigned char **sig, size_t *sig_len, struct error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *s = NULL;
    enum status st = ST_OK;
    size_t n = 0;

    if (!ctx)
        BUG("out of memory in EVP_MD_CTX_new");
    /* RSA keys sign PKCS#1 v1.5 by default: RSASSA-PKCS1-v1_5 with SHA-256, as GOOG4-RSA-SHA256. */
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, a->pkey) != 1 ||
        EVP_DigestSignUpdate(ctx, data, len) != 1 || EVP_DigestSignFinal(ctx, NULL, &n) != 1) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot sign with the key of %s", a->key_email);
        goto out;
    }
    s = xmalloc(n);
    if (EVP_DigestSignFinal(ctx, s, &n) != 1) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot sign with the key of %s", a->key_email);
        goto out;
    }
    *sig = s;
    *sig_len = n;
    s = NULL;
out:
    ERR_clear_error();
    free(s);
    EVP_MD_CTX_free(ctx);
    return st;
}

/* An email goes into the URL path: only the characters service-account emails have. */
static bool email_ok(const char *e)
{
    return e[0] && strspn(e, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                             "@.-_+") == strlen(e);
}

/*
 * IAM Credentials signBlob (gcp.md 3.4): the service account signs for us.
 * A 401 drops the cached token and tries once more with a fresh one.
 */
static enum status sign_with_iam(struct gcp_auth *a, const void *data, size_t len,
                                 unsigned char **sig, size_t *sig_len, struct error *err)
{
    char email[FIELD_MAX], url[URL_MAX], auth[GCP_AUTH_LINE_MAX];
    const char *headers[] = {auth, NULL};
    json_t *body = NULL, *answer = NULL;
    struct buf b64, raw;
    const char *signed_blob;
    enum status st;
    long code = 0;
    int round;

    buf_init(&b64, base64_encoded_len(len, B64_STD) + 1);
    buf_init(&raw, 8192);
    if ((st = gcp_auth_email(a, email, sizeof(email), err)) != ST_OK) {
        error_prefix(err, "cannot sign: no service account email");
        goto out;
    }
    if (!email_ok(email)) {
        st = error_set(err, ST_INVALID, NULL, "cannot sign: bad service account email \"%.80s\"",
                       email);
        goto out;
    }
    if (!str_printf(url, sizeof(url), "%s/v1/projects/-/serviceAccounts/%s:signBlob", a->iam_base,
                    email)) {
        st = error_set(err, ST_INVALID, NULL, "signBlob url is too long");
        goto out;
    }
    if (base64_encode(&b64, data, len, B64_STD) != ST_OK)
        BUG("base64 of the blob exceeds its computed size");
    body = json_pack("{s:s}", "payload", buf_str(&b64));
    if (!body)
        BUG("cannot build signBlob body");
    for (round = 0; round < 2; round++) {
        struct http_call call = {
            .method = "POST",
            .url = url,
            .headers = headers,
            .timeout_ms = SIGN_TIMEOUT_MS,
            .max_response_bytes = RESPONSE_MAX,
            .idempotent = true,
        };

        if ((st = gcp_auth_header_line(a, auth, sizeof(auth), err)) != ST_OK)
            goto out;
        /* Without a token (emulator mode) the header list must not hold an empty line. */
        headers[0] = auth[0] ? auth : NULL;
        json_decref(answer);
        answer = NULL;
        st = http_client_json(a->client, &call, body, &code, &answer, err);
        if (st != ST_OK) {
            error_prefix(err, "cannot sign as %s", email);
            goto out;
        }
        if (code != 401)
            break;
        gcp_auth_invalidate(a);
    }
    if (code != 200) {
        json_t *e = answer ? json_object_get(answer, "error") : NULL;

        st = status_from_http(code);
        error_set(err, st, NULL, "cannot sign as %s: http %ld %.32s %.120s", email, code,
                  e ? json_str_or(e, "status", "") : "", e ? json_str_or(e, "message", "") : "");
        goto out;
    }
    signed_blob = answer ? json_str_or(answer, "signedBlob", NULL) : NULL;
    if (!signed_blob || base64_decode(&raw, signed_blob, strlen(signed_blob)) != ST_OK ||
        raw.len == 0) {
        st = error_set(err, ST_UNAVAILABLE, NULL, "cannot sign as %s: no usable signedBlob", email);
        goto out;
    }
    *sig_len = raw.len;
    *sig = (unsigned char *)buf_take(&raw, NULL);
out:
    json_decref(answer);
    json_decref(body);
    buf_release(&b64);
    buf_release(&raw);
    OPENSSL_cleanse(auth, sizeof(auth));
    return st;
}

enum status gcp_auth_sign(struct gcp_auth *a, const void *data, size_t len, unsigned char **sig,
                          size_t *sig_len, struct error *err)
{
    ASSERT(a && sig && sig_len);
    *sig = NULL;
    *sig_len = 0;
    if (len > SIGN_INPUT_MAX)
        return error_set(err, ST_TOO_LARGE, NULL, "cannot sign %zu bytes: more than %d", len,
                         SIGN_INPUT_MAX);
    if (a->has_key)
        return sign_with_key(a, data, len, sig, sig_len, err);
    if (a->none)
        return error_set(err, ST_FAILED_PRECONDITION, NULL,
                         "cannot sign: emulator mode has no service account key");
    return sign_with_iam(a, data, len, sig, sig_len, err);
}
