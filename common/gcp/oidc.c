#include "gcp/oidc.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/jwt.h"

#define KID_MAX      128                    /* longer key ids are refused */
#define SIG_MAX      (JWT_RSA_MAX_BITS / 8) /* an RSA signature is as long as the modulus */
#define TIME_MAX_S   253402300799LL         /* 9999-12-31T23:59:59Z */
#define QUOTE_MAX    64                     /* bytes of an untrusted string put in a message */
#define CERT_PREFIX  "-----BEGIN CERTIFICATE-----"
#define RSA_E_MAX_BY 8

static const char *const google_issuers[] = {"https://accounts.google.com", "accounts.google.com",
                                             NULL};

/* ---- errors --------------------------------------------------------------- */

static enum status failv(struct error *err, enum status st, const char *code, const char *fmt,
                         va_list ap) __attribute__((format(printf, 4, 0)));

static enum status failv(struct error *err, enum status st, const char *code, const char *fmt,
                         va_list ap)
{
    char msg[ERROR_MSG_MAX];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    return error_set(err, st, code, "%s", msg);
}

/* A token that is missing, malformed, forged, or not meant for us: 401. */
static enum status bad_token(struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum status bad_token(struct error *err, const char *fmt, ...)
{
    va_list ap;
    enum status st;

    va_start(ap, fmt);
    st = failv(err, ST_UNAUTHENTICATED, "invalid_token", fmt, ap);
    va_end(ap);
    return st;
}

/* A valid token of the wrong identity: 403. */
static enum status wrong_identity(struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum status wrong_identity(struct error *err, const char *fmt, ...)
{
    va_list ap;
    enum status st;

    va_start(ap, fmt);
    st = failv(err, ST_PERMISSION_DENIED, "wrong_identity", fmt, ap);
    va_end(ap);
    return st;
}

static const char *openssl_reason(char *out, size_t cap)
{
    unsigned long e = ERR_get_error();

    if (e)
        ERR_error_string_n(e, out, cap);
    else
        str_copy(out, cap, "no reason given");
    ERR_clear_error();
    return out;
}

/* Formats seconds since the epoch for a message. */
static const char *fmt_time(int64_t t, char out[RFC3339_MAX])
{
    if (!time_format_rfc3339(t * 1000000, out, RFC3339_MAX))
        snprintf(out, RFC3339_MAX, "%lld", (long long)t);
    return out;
}

static int64_t wall_clock(void *ud)
{
    UNUSED(ud);
    return time_now_us() / 1000000;
}

/* ---- key sets ------------------------------------------------------------------ */

struct oidc_key {
    char kid[KID_MAX + 1];
    EVP_PKEY *pkey;
};

/*
 * An immutable set of keys, shared by reference: verifying threads hold a
 * reference while they use a key, so a refresh can replace the set
 * without waiting for them.
 */
struct keyset {
    atomic_int refs;
    size_t n;
    struct oidc_key keys[OIDC_KEYS_MAX];
};

static struct keyset *keyset_new(void)
{
    struct keyset *ks = xcalloc(1, sizeof(*ks));

    atomic_init(&ks->refs, 1);
    return ks;
}

static void keyset_unref(struct keyset *ks)
{
    size_t i;

    if (!ks || atomic_fetch_sub(&ks->refs, 1) != 1)
        return;
    for (i = 0; i < ks->n; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    free(ks);
}

static EVP_PKEY *keyset_find(const struct keyset *ks, const char *kid)
{
    size_t i;

    for (i = 0; ks && i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return ks->keys[i].pkey;
    return NULL;
}

/* A key id we are willing to look up and print: 1..KID_MAX printable ASCII, no space. */
static bool kid_ok(const char *kid)
{
    size_t i;

    for (i = 0; kid[i]; i++)
        if (i >= KID_MAX || kid[i] <= 0x20 || kid[i] >= 0x7f)
            return false;
    return i > 0;
}

/* Adds key under kid (taking the key) unless the set is full or has kid already. */
static void keyset_add(struct keyset *ks, const char *kid, EVP_PKEY *pkey)
{
    if (ks->n >= OIDC_KEYS_MAX || keyset_find(ks, kid)) {
        EVP_PKEY_free(pkey);
        return;
    }
    str_copy(ks->keys[ks->n].kid, sizeof(ks->keys[ks->n].kid), kid);
    ks->keys[ks->n].pkey = pkey;
    ks->n++;
}

static enum status check_public_key(const EVP_PKEY *pkey, struct error *err)
{
    int bits;

    if (!EVP_PKEY_is_a(pkey, "RSA"))
        return error_set(err, ST_INVALID, NULL, "not an rsa key");
    bits = EVP_PKEY_get_bits(pkey);
    if (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS)
        return error_set(err, ST_INVALID, NULL, "rsa key of %d bits outside [%d, %d]", bits,
                         JWT_RSA_MIN_BITS, JWT_RSA_MAX_BITS);
    return ST_OK;
}

/* Decodes a base64url JWK member into b. */
static enum status jwk_bytes(const json_t *jwk, const char *field, struct buf *b, struct error *err)
{
    const char *s = json_str_or(jwk, field, NULL);

    if (!s || !*s)
        return error_set(err, ST_INVALID, NULL, "jwk has no \"%s\"", field);
    if (base64_decode(b, s, strlen(s)) != ST_OK)
        return error_set(err, ST_INVALID, NULL, "jwk \"%s\" is not base64url", field);
    return ST_OK;
}

/* Builds an RSA public key from a JWK's n and e. */
static enum status jwk_to_pkey(const json_t *jwk, EVP_PKEY **out, struct error *err)
{
    struct buf nb, eb;
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    char why[160];
    enum status st;

    *out = NULL;
    buf_init(&nb, JWT_RSA_MAX_BITS / 8 + 1);
    buf_init(&eb, RSA_E_MAX_BY);
    if ((st = jwk_bytes(jwk, "n", &nb, err)) != ST_OK)
        goto out;
    if ((st = jwk_bytes(jwk, "e", &eb, err)) != ST_OK)
        goto out;
    n = BN_bin2bn((const unsigned char *)nb.data, (int)nb.len, NULL);
    e = BN_bin2bn((const unsigned char *)eb.data, (int)eb.len, NULL);
    if (!n || !e) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot decode rsa numbers");
        goto out;
    }
    /* A public exponent must be odd and greater than 1 (RFC 8017 3.1). */
    if (!BN_is_odd(e) || BN_is_one(e)) {
        st = error_set(err, ST_INVALID, NULL, "jwk has a bad rsa exponent");
        goto out;
    }
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld))) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot build rsa parameters: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        st = error_set(err, ST_INVALID, NULL, "cannot build rsa key: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    if ((st = check_public_key(pkey, err)) != ST_OK)
        goto out;
    *out = pkey;
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(e);
    BN_free(n);
    buf_release(&eb);
    buf_release(&nb);
    return st;
}

/* Reads the public key of a PEM X.509 certificate (Google's v1 certs format). */
static enum status cert_to_pkey(const char *pem, EVP_PKEY **out, struct error *err)
{
    BIO *bio = NULL;
    X509 *cert = NULL;
    EVP_PKEY *pkey = NULL;
    char why[160];
    enum status st;

    *out = NULL;
    bio = BIO_new_mem_buf(pem, (int)strnlen(pem, OIDC_JWKS_MAX));
    if (!bio || !(cert = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        st = error_set(err, ST_INVALID, NULL, "bad pem certificate: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    pkey = X509_get_pubkey(cert);
    if (!pkey) {
        st = error_set(err, ST_INVALID, NULL, "certificate has no usable public key: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    if ((st = check_public_key(pkey, err)) != ST_OK)
        goto out;
    *out = pkey;
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    X509_free(cert);
    BIO_free(bio);
    return st;
}

/* Adds the usable keys of a JWKS "keys" array; remembers why the first unusable RSA key failed. */
static void load_jwks(struct keyset *ks, const json_t *keys, struct error *why)
{
    const json_t *jwk;
    size_t i;

    json_array_foreach(keys, i, jwk)
    {
        const char *kid = json_str_or(jwk, "kid", NULL);
        const char *use = json_str_or(jwk, "use", "sig");
        const char *alg = json_str_or(jwk, "alg", "RS256");
        struct error kerr;
        EVP_PKEY *pkey = NULL;

        /* Other key types and purposes are legitimate members of a JWKS: skip them quietly. */
        if (!json_is_object(jwk) || strcmp(json_str_or(jwk, "kty", ""), "RSA") != 0 ||
            strcmp(use, "sig") != 0 || strcmp(alg, "RS256") != 0)
            continue;
        if (!kid || !kid_ok(kid)) {
            if (why->status == ST_OK)
                error_set(why, ST_INVALID, NULL, "key %zu has a missing or bad kid", i);
            continue;
        }
        error_clear(&kerr);
        if (jwk_to_pkey(jwk, &pkey, &kerr) != ST_OK) {
            if (why->status == ST_OK)
                error_set(why, ST_INVALID, NULL, "key \"%.*s\": %s", QUOTE_MAX, kid, kerr.message);
            continue;
        }
        keyset_add(ks, kid, pkey);
    }
}

/* Adds the keys of a v1 document {"<kid>": "-----BEGIN CERTIFICATE-----..."}. */
static void load_pem_certs(struct keyset *ks, const json_t *doc, struct error *why)
{
    const char *kid;
    const json_t *value;

    json_object_foreach((json_t *)doc, kid, value)
    {
        const char *pem = json_string_value(value);
        struct error kerr;
        EVP_PKEY *pkey = NULL;

        if (!pem || !str_starts_with(pem, CERT_PREFIX) || !kid_ok(kid)) {
            if (why->status == ST_OK)
                error_set(why, ST_INVALID, NULL, "member \"%.*s\" is not a pem certificate",
                          QUOTE_MAX, kid);
            continue;
        }
        error_clear(&kerr);
        if (cert_to_pkey(pem, &pkey, &kerr) != ST_OK) {
            if (why->status == ST_OK)
                error_set(why, ST_INVALID, NULL, "key \"%.*s\": %s", QUOTE_MAX, kid, kerr.message);
            continue;
        }
        keyset_add(ks, kid, pkey);
    }
}

/*
 * Parses a key document, JWKS or v1 PEM certificates. Unusable entries are
 * skipped; a document without a single usable RSA key is an error, named
 * by the first entry that failed.
 */
static enum status keyset_parse(const char *data, size_t len, struct keyset **out,
                                struct error *err)
{
    struct keyset *ks = NULL;
    json_t *doc = NULL;
    json_t *keys;
    struct error why;
    enum status st = ST_OK;

    *out = NULL;
    error_clear(&why);
    if (len > OIDC_JWKS_MAX) {
        st = error_set(err, ST_INVALID, NULL, "key document longer than %d bytes", OIDC_JWKS_MAX);
        goto out;
    }
    doc = json_parse(data, len, err);
    if (!doc) {
        st = ST_INVALID;
        error_prefix(err, "key document");
        goto out;
    }
    if (!json_is_object(doc)) {
        st = error_set(err, ST_INVALID, NULL, "key document is not a json object");
        goto out;
    }
    ks = keyset_new();
    keys = json_object_get(doc, "keys");
    if (json_is_array(keys))
        load_jwks(ks, keys, &why);
    else
        load_pem_certs(ks, doc, &why);
    if (ks->n == 0) {
        st = error_set(err, ST_INVALID, NULL, "key document has no usable rsa key%s%s",
                       why.status != ST_OK ? ": " : "", why.message);
        goto out;
    }
    *out = ks;
    ks = NULL;
out:
    keyset_unref(ks);
    json_decref(doc);
    return st;
}

/* ---- verifier -------------------------------------------------------------------- */

struct oidc_verifier {
    /* Configuration, immutable after oidc_verifier_new(). */
    char *issuers[OIDC_ISSUERS_MAX];
    size_t n_issuers;
    char *audience;
    char *email;
    int skew_s, max_life_s;
    int min_cache_s, max_cache_s, refetch_s, fail_wait_s, stale_s;
    bool is_static;
    char *jwks_url;
    oidc_fetch_fn fetch;
    void *fetch_ud;
    oidc_clock_fn clock;
    void *clock_ud;

    /* Key cache, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t fetch_done;
    struct keyset *keys;   /* NULL before the first successful fetch */
    int64_t expires_at;    /* keys are fresh before this */
    int64_t last_fetch_at; /* time of the last successful fetch */
    int64_t fail_until;    /* no fetch before this, after a failure */
    bool fetching;         /* a thread is fetching, lock released */
    bool last_failed;      /* the last completed fetch failed */
    uint64_t generation;   /* completed fetches, to tell waiters one finished */
    uint64_t fetch_count;
    struct error last_error; /* why the last fetch failed */
};

static int positive_or(int v, int def)
{
    return v > 0 ? v : def;
}

struct oidc_verifier *oidc_verifier_new(const struct oidc_config *cfg, struct error *err)
{
    struct oidc_verifier *v = NULL;
    const char *const *issuers;
    struct error perr;
    size_t i;
    enum status st;

    if (!cfg || !cfg->audience || !*cfg->audience) {
        error_set(err, ST_INVALID, NULL, "cannot create token verifier: no audience configured");
        goto fail;
    }
    if (!cfg->jwks_json == !cfg->jwks_url) {
        error_set(err, ST_INVALID, NULL,
                  "cannot create token verifier: configure exactly one of jwks_json, jwks_url");
        goto fail;
    }
    if (cfg->jwks_url && (!*cfg->jwks_url || !cfg->fetch)) {
        error_set(err, ST_INVALID, NULL,
                  "cannot create token verifier: jwks_url needs a url and a fetch function");
        goto fail;
    }
    if (cfg->email && !*cfg->email) {
        error_set(err, ST_INVALID, NULL, "cannot create token verifier: empty email configured");
        goto fail;
    }
    v = xcalloc(1, sizeof(*v));
    issuers = cfg->issuers ? cfg->issuers : google_issuers;
    for (i = 0; issuers[i]; i++) {
        if (i >= OIDC_ISSUERS_MAX || !*issuers[i]) {
            error_set(err, ST_INVALID, NULL,
                      "cannot create token verifier: issuer %zu is empty or beyond the limit of %d",
                      i, OIDC_ISSUERS_MAX);
            goto fail;
        }
        v->issuers[v->n_issuers++] = xstrdup(issuers[i]);
    }
    if (v->n_issuers == 0) {
        error_set(err, ST_INVALID, NULL, "cannot create token verifier: empty issuer list");
        goto fail;
    }
    v->audience = xstrdup(cfg->audience);
    v->email = xstrdup(cfg->email);
    v->skew_s = positive_or(cfg->clock_skew_s, OIDC_DEFAULT_SKEW_S);
    v->max_life_s = positive_or(cfg->max_lifetime_s, OIDC_DEFAULT_MAX_LIFE_S);
    v->min_cache_s = positive_or(cfg->min_cache_s, OIDC_DEFAULT_MIN_CACHE_S);
    v->max_cache_s = positive_or(cfg->max_cache_s, OIDC_DEFAULT_MAX_CACHE_S);
    if (v->max_cache_s < v->min_cache_s)
        v->max_cache_s = v->min_cache_s;
    v->refetch_s = positive_or(cfg->refetch_interval_s, OIDC_DEFAULT_REFETCH_S);
    v->fail_wait_s = positive_or(cfg->fail_wait_s, OIDC_DEFAULT_FAIL_WAIT_S);
    v->stale_s = cfg->stale_grace_s < 0    ? 0
                 : cfg->stale_grace_s == 0 ? OIDC_DEFAULT_STALE_S
                                           : cfg->stale_grace_s;
    v->clock = cfg->clock ? cfg->clock : wall_clock;
    v->clock_ud = cfg->clock_ud;
    v->fetch = cfg->fetch;
    v->fetch_ud = cfg->fetch_ud;
    v->jwks_url = xstrdup(cfg->jwks_url);
    if (pthread_mutex_init(&v->lock, NULL) != 0 || pthread_cond_init(&v->fetch_done, NULL) != 0)
        BUG("cannot initialise verifier lock");
    if (cfg->jwks_json) {
        v->is_static = true;
        error_clear(&perr);
        st = keyset_parse(cfg->jwks_json, strnlen(cfg->jwks_json, OIDC_JWKS_MAX + 1), &v->keys,
                          &perr);
        if (st != ST_OK) {
            error_set(err, ST_INVALID, NULL, "cannot create token verifier: static jwks: %s",
                      perr.message);
            oidc_verifier_free(v);
            return NULL;
        }
    }
    return v;
fail:
    if (v) {
        for (i = 0; i < v->n_issuers; i++)
            free(v->issuers[i]);
        free(v);
    }
    return NULL;
}

void oidc_verifier_free(struct oidc_verifier *v)
{
    size_t i;

    if (!v)
        return;
    keyset_unref(v->keys);
    pthread_cond_destroy(&v->fetch_done);
    pthread_mutex_destroy(&v->lock);
    for (i = 0; i < v->n_issuers; i++)
        free(v->issuers[i]);
    free(v->audience);
    free(v->email);
    free(v->jwks_url);
    free(v);
}

uint64_t oidc_verifier_fetch_count(struct oidc_verifier *v)
{
    uint64_t n;

    pthread_mutex_lock(&v->lock);
    n = v->fetch_count;
    pthread_mutex_unlock(&v->lock);
    return n;
}

/*
 * Fetches and installs the key document. Called and returns with v->lock
 * held, but releases it during the fetch; v->fetching keeps other threads
 * from starting a second fetch meanwhile.
 */
static void fetch_locked(struct oidc_verifier *v, int64_t now)
{
    struct keyset *fresh = NULL;
    struct buf body;
    struct error ferr;
    int max_age = -1;
    int64_t ttl;
    enum status st;

    v->fetching = true;
    v->fetch_count++;
    pthread_mutex_unlock(&v->lock);

    error_clear(&ferr);
    buf_init(&body, OIDC_JWKS_MAX);
    st = v->fetch(v->fetch_ud, v->jwks_url, &body, &max_age, &ferr);
    if (st == ST_OK)
        st = keyset_parse(buf_str(&body), body.len, &fresh, &ferr);
    buf_release(&body);

    pthread_mutex_lock(&v->lock);
    v->fetching = false;
    v->generation++;
    if (st == ST_OK) {
        ttl = max_age < v->min_cache_s   ? v->min_cache_s
              : max_age > v->max_cache_s ? v->max_cache_s
                                         : max_age;
        keyset_unref(v->keys);
        v->keys = fresh;
        v->expires_at = now + ttl;
        v->last_fetch_at = now;
        v->last_failed = false;
        v->fail_until = 0;
        log_debug("fetched %zu token signing keys from %s, cached for %lld s", fresh->n,
                  v->jwks_url, (long long)ttl);
    } else {
        v->last_failed = true;
        v->fail_until = now + v->fail_wait_s;
        error_set(&v->last_error, ST_UNAVAILABLE, "keys_unavailable",
                  "cannot fetch token signing keys from %s: %s", v->jwks_url, ferr.message);
        log_warn("%s", v->last_error.message);
    }
    pthread_cond_broadcast(&v->fetch_done);
}

/*
 * Returns (in *out, with a reference the caller drops with keyset_unref())
 * the key set to look kid up in, fetching it when the cache policy in
 * oidc.h says so. *out may lack kid: the caller reports the unknown key.
 */
static enum status keys_get(struct oidc_verifier *v, const char *kid, int64_t now,
                            struct keyset **out, struct error *err)
{
    struct keyset *ks;
    bool fetched = false; /* this call fetched, or waited for another thread's fetch */
    bool has, fresh, stale_ok;
    uint64_t gen;
    enum status st = ST_OK;

    *out = NULL;
    pthread_mutex_lock(&v->lock);
    for (;;) {
        ks = v->keys;
        if (v->is_static)
            break;
        has = keyset_find(ks, kid) != NULL;
        fresh = ks && now < v->expires_at;
        if (fresh && (has || now - v->last_fetch_at < v->refetch_s || (fetched && !v->last_failed)))
            break;
        stale_ok = has && now < v->expires_at + v->stale_s;
        if (fetched) {
            /* One fetch per call: take what there is rather than loop. */
            if (stale_ok || (ks && !v->last_failed))
                break;
            goto unavailable;
        }
        if (v->fetching) {
            if (stale_ok)
                break;
            gen = v->generation;
            while (v->fetching && v->generation == gen)
                pthread_cond_wait(&v->fetch_done, &v->lock);
            fetched = true;
            continue;
        }
        if (now < v->fail_until) {
            if (stale_ok)
                break;
            goto unavailable;
        }
        fetch_locked(v, now);
        fetched = true;
    }
    if (ks)
        atomic_fetch_add(&ks->refs, 1);
    *out = ks;
    goto out;
unavailable:
    st = error_set(err, ST_UNAVAILABLE, "keys_unavailable", "%s", v->last_error.message);
out:
    pthread_mutex_unlock(&v->lock);
    return st;
}

/* True when the n bytes at s are all base64url characters (no padding, no '+' or '/'). */
static bool b64url_chars(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* Decodes one base64url segment into out; what names it in the message. */
static enum status decode_segment(const char *s, size_t n, struct buf *out, const char *what,
                                  struct error *err)
{
    enum status st;

    if (n == 0)
        return bad_token(err, "malformed token: empty %s", what);
    if (!b64url_chars(s, n))
        return bad_token(err, "malformed token: %s is not base64url", what);
    st = base64_decode(out, s, n);
    if (st == ST_TOO_LARGE)
        return bad_token(err, "malformed token: %s too long", what);
    if (st != ST_OK)
        return bad_token(err, "malformed token: %s is not base64url", what);
    return ST_OK;
}

/* Parses a decoded segment as a JSON object. Returns a new reference or NULL with err set. */
static json_t *parse_object(const struct buf *b, const char *what, struct error *err)
{
    json_t *obj = json_loadb(b->data ? b->data : "", b->len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(obj)) {
        json_decref(obj);
        bad_token(err, "malformed token: %s is not a json object", what);
        return NULL;
    }
    return obj;
}

/* Reads a required numeric time claim (seconds; fractions truncated). */
static enum status time_claim(const json_t *claims, const char *name, int64_t *out,
                              struct error *err)
{
    const json_t *v = json_object_get(claims, name);
    double d;

    if (!v || json_is_null(v))
        return bad_token(err, "token has no %s claim", name);
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        if (i < 0 || i > TIME_MAX_S)
            return bad_token(err, "token claim %s is out of range", name);
        *out = i;
        return ST_OK;
    }
    if (json_is_real(v)) {
        d = json_real_value(v);
        if (!(d >= 0 && d <= (double)TIME_MAX_S))
            return bad_token(err, "token claim %s is out of range", name);
        *out = (int64_t)d;
        return ST_OK;
    }
    return bad_token(err, "token claim %s is not a number", name);
}

static bool audience_matches(const json_t *aud, const char *want)
{
    const json_t *item;
    size_t i;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    json_array_foreach(aud, i, item)
    {
        if (json_is_string(item) && strcmp(json_string_value(item), want) == 0)
            return true;
    }
    return false;
}

/* The claim checks of reference section 4.3, steps 4 to 7, on a payload whose signature holds. */
static enum status check_claims(const struct oidc_verifier *v, const json_t *claims, int64_t now,
                                struct error *err)
{
    const char *iss, *email;
    const json_t *aud, *verified;
    int64_t iat, exp;
    char when[RFC3339_MAX];
    size_t i;
    enum status st;

    if ((st = time_claim(claims, "iat", &iat, err)) != ST_OK)
        return st;
    if ((st = time_claim(claims, "exp", &exp, err)) != ST_OK)
        return st;
    if (now < iat - v->skew_s)
        return bad_token(err, "token not yet valid: issued at %s", fmt_time(iat, when));
    if (now > exp + v->skew_s)
        return error_set(err, ST_UNAUTHENTICATED, "token_expired", "token expired at %s",
                         fmt_time(exp, when));
    if (exp >= now + v->max_life_s)
        return bad_token(err, "token lifetime too long: expires at %s", fmt_time(exp, when));

    iss = json_str_or(claims, "iss", NULL);
    if (!iss)
        return bad_token(err, "token has no issuer");
    for (i = 0; i < v->n_issuers; i++)
        if (strcmp(iss, v->issuers[i]) == 0)
            break;
    if (i == v->n_issuers)
        return bad_token(err, "token issuer \"%.*s\" is not accepted", QUOTE_MAX, iss);

    aud = json_object_get(claims, "aud");
    if (!audience_matches(aud, v->audience)) {
        if (json_is_string(aud))
            return bad_token(err, "audience mismatch: token is for \"%.*s\"", QUOTE_MAX,
                             json_string_value(aud));
        return bad_token(err, "audience mismatch");
    }

    if (!v->email)
        return ST_OK;
    email = json_str_or(claims, "email", NULL);
    if (!email)
        return wrong_identity(err, "token has no email claim");
    if (strcmp(email, v->email) != 0)
        return wrong_identity(err, "token email \"%.*s\" is not the expected invoker", QUOTE_MAX,
                              email);
    verified = json_object_get(claims, "email_verified");
    if (!json_is_true(verified))
        return wrong_identity(err, "token email \"%.*s\" is not verified", QUOTE_MAX, email);
    return ST_OK;
}

/* RS256: RSASSA-PKCS1-v1_5 with SHA-256 over "header_b64.payload_b64". */
static bool signature_ok(EVP_PKEY *key, const char *input, size_t input_len, const struct buf *sig)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = false;

    if (md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1)
        ok = EVP_DigestVerify(md, (const unsigned char *)sig->data, sig->len,
                              (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error(); /* a bad signature queues an error we do not want to leak */
    return ok;
}

enum status oidc_verify(struct oidc_verifier *v, const char *token, json_t **claims,
                        struct error *err)
{
    json_t *header = NULL, *payload = NULL;
    struct keyset *ks = NULL;
    struct buf hb, pb, sig;
    const char *dot1, *dot2, *alg, *kid;
    EVP_PKEY *key;
    size_t len, segments, i;
    int64_t now;
    enum status st;

    ASSERT(v != NULL);
    if (claims)
        *claims = NULL;
    buf_init(&hb, OIDC_TOKEN_MAX);
    buf_init(&pb, OIDC_TOKEN_MAX);
    buf_init(&sig, SIG_MAX);
    if (!token || !*token) {
        st = error_set(err, ST_UNAUTHENTICATED, "missing_token", "missing token");
        goto out;
    }
    len = strnlen(token, OIDC_TOKEN_MAX + 1);
    if (len > OIDC_TOKEN_MAX) {
        st = bad_token(err, "token longer than %d bytes", OIDC_TOKEN_MAX);
        goto out;
    }
    for (i = 0, segments = 1; i < len; i++)
        segments += token[i] == '.';
    if (segments != 3) {
        st = bad_token(err, "malformed token: %zu segments, expected 3", segments);
        goto out;
    }
    dot1 = strchr(token, '.');
    dot2 = strchr(dot1 + 1, '.');

    /* All syntax first, so that garbage never reaches the key cache (and never costs a fetch). */
    if ((st = decode_segment(token, (size_t)(dot1 - token), &hb, "header", err)) != ST_OK)
        goto out;
    if ((st = decode_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), &pb, "payload", err)) != ST_OK)
        goto out;
    header = parse_object(&hb, "header", err);
    if (!header) {
        st = ST_UNAUTHENTICATED;
        goto out;
    }
    /* The algorithm is ours to choose, not the token's: RS256 only ("none", HS256... refused). */
    alg = json_str_or(header, "alg", NULL);
    if (!alg || strcmp(alg, "RS256") != 0) {
        st = bad_token(err, "unsupported token algorithm \"%.*s\"", QUOTE_MAX,
                       alg ? alg : "(none given)");
        goto out;
    }
    if (json_object_get(header, "crit")) {
        st = bad_token(err, "token header has critical extensions");
        goto out;
    }
    kid = json_str_or(header, "kid", NULL);
    if (!kid) {
        st = bad_token(err, "token header has no kid");
        goto out;
    }
    if (!kid_ok(kid)) {
        st = bad_token(err, "token header has a malformed kid");
        goto out;
    }
    st = decode_segment(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig, "signature", err);
    if (st != ST_OK)
        goto out;

    now = v->clock(v->clock_ud);
    if ((st = keys_get(v, kid, now, &ks, err)) != ST_OK)
        goto out;
    key = keyset_find(ks, kid);
    if (!key) {
        st = error_set(err, ST_UNAUTHENTICATED, "unknown_key", "unknown key id \"%s\"", kid);
        goto out;
    }
    if (!signature_ok(key, token, (size_t)(dot2 - token), &sig)) {
        st = bad_token(err, "token signature mismatch");
        goto out;
    }

    /* Only now is the payload ours to read. */
    payload = parse_object(&pb, "payload", err);
    if (!payload) {
        st = ST_UNAUTHENTICATED;
        goto out;
    }
    if ((st = check_claims(v, payload, now, err)) != ST_OK)
        goto out;
    if (claims) {
        *claims = payload;
        payload = NULL;
    }
out:
    keyset_unref(ks);
    json_decref(payload);
    json_decref(header);
    buf_release(&sig);
    buf_release(&pb);
    buf_release(&hb);
    return st;
}

enum status oidc_verify_authorization(struct oidc_verifier *v, const char *authorization,
                                      json_t **claims, struct error *err)
{
    char *token = xmalloc(OIDC_TOKEN_MAX + 1);
    enum status st;

    if (claims)
        *claims = NULL;
    st = oidc_bearer_token(authorization, token, OIDC_TOKEN_MAX + 1, err);
    if (st == ST_OK)
        st = oidc_verify(v, token, claims, err);
    free(token);
    return st;
}

/* ---- helpers --------------------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

enum status oidc_bearer_token(const char *header, char *out, size_t cap, struct error *err)
{
    const char *p = header, *start;
    size_t n;

    ASSERT(cap > 0);
    out[0] = '\0';
    if (!header)
        return error_set(err, ST_UNAUTHENTICATED, "missing_token", "missing authorization header");
    while (is_blank(*p))
        p++;
    if (!*p)
        return error_set(err, ST_UNAUTHENTICATED, "missing_token", "empty authorization header");
    if (strncasecmp(p, "bearer", 6) != 0 || (p[6] && !is_blank(p[6])))
        return bad_token(err, "authorization scheme is not bearer");
    p += 6;
    while (is_blank(*p))
        p++;
    start = p;
    /* Stop scanning at the bound: the header may be long, and we only need to know it is. */
    while (*p && !is_blank(*p) && (size_t)(p - start) < cap)
        p++;
    n = (size_t)(p - start);
    if (n >= cap)
        return bad_token(err, "bearer token longer than %zu bytes", cap - 1);
    while (is_blank(*p))
        p++;
    if (*p)
        return bad_token(err, "malformed bearer token: contains blanks");
    if (n == 0)
        return error_set(err, ST_UNAUTHENTICATED, "missing_token", "empty bearer token");
    memcpy(out, start, n);
    out[n] = '\0';
    return ST_OK;
}

int oidc_cache_control_max_age(const char *value)
{
    const char *p = value, *name, *arg;
    size_t name_len, arg_len;
    int max_age = -1;
    bool no_cache = false;

    if (!value)
        return -1;
    while (*p) {
        while (is_blank(*p) || *p == ',')
            p++;
        if (!*p)
            break;
        name = p;
        while (*p && *p != '=' && *p != ',' && !is_blank(*p))
            p++;
        name_len = (size_t)(p - name);
        while (is_blank(*p))
            p++;
        arg = NULL;
        arg_len = 0;
        if (*p == '=') {
            p++;
            while (is_blank(*p))
                p++;
            if (*p == '"') {
                arg = ++p;
                while (*p && *p != '"')
                    p++;
                arg_len = (size_t)(p - arg);
                if (*p == '"')
                    p++;
            } else {
                arg = p;
                while (*p && *p != ',' && !is_blank(*p))
                    p++;
                arg_len = (size_t)(p - arg);
            }
        }
        if (name_len == 7 && strncasecmp(name, "max-age", 7) == 0 && arg && arg_len > 0 &&
            max_age < 0) {
            int64_t secs = 0;
            size_t i;

            for (i = 0; i < arg_len && arg[i] >= '0' && arg[i] <= '9'; i++)
                if (secs < INT32_MAX)
                    secs = secs * 10 + (arg[i] - '0');
            if (i == arg_len)
                max_age = secs > INT32_MAX ? INT32_MAX : (int)secs;
        } else if ((name_len == 8 && strncasecmp(name, "no-cache", 8) == 0) ||
                   (name_len == 8 && strncasecmp(name, "no-store", 8) == 0)) {
            no_cache = true;
        }
        /* Skip whatever is left of a malformed directive. */
        while (*p && *p != ',')
            p++;
    }
    return no_cache ? 0 : max_age;
}

/* ---- local issuer ------------------------------------------------------------------ */

struct issued {
    char *audience;
    char *token;
    int64_t exp;
};

struct oidc_local_issuer {
    char *pem, *issuer, *email, *subject;
    char kid[JWT_KID_LEN + 1];
    char *jwks;
    int lifetime_s;
    oidc_clock_fn clock;
    void *clock_ud;

    pthread_mutex_t lock; /* guards cache; held while minting, so one mint per audience */
    struct issued cache[OIDC_LOCAL_AUDIENCES_MAX];
    size_t n_cached;
};

struct oidc_local_issuer *oidc_local_issuer_new(const struct oidc_local_issuer_config *cfg,
                                                struct error *err)
{
    struct oidc_local_issuer *li = NULL;
    EVP_PKEY *key = NULL;
    json_t *jwk = NULL, *jwks = NULL;

    if (!cfg || !cfg->issuer || !*cfg->issuer || !cfg->email || !*cfg->email) {
        error_set(err, ST_INVALID, NULL,
                  "cannot create local token issuer: issuer and email are "
                  "required");
        goto out;
    }
    if (jwt_key_load_private(cfg->private_key_pem, &key, err) != ST_OK ||
        jwt_key_jwk(key, &jwk, err) != ST_OK) {
        error_prefix(err, "cannot create local token issuer");
        goto out;
    }
    li = xcalloc(1, sizeof(*li));
    li->pem = xstrdup(cfg->private_key_pem);
    li->issuer = xstrdup(cfg->issuer);
    li->email = xstrdup(cfg->email);
    li->subject = xstrdup(cfg->subject ? cfg->subject : cfg->email);
    str_copy(li->kid, sizeof(li->kid), json_str_or(jwk, "kid", ""));
    jwks = json_pack("{s:[O]}", "keys", jwk);
    if (!jwks)
        BUG("cannot build jwks object");
    li->jwks = json_dump_compact(jwks);
    li->lifetime_s = positive_or(cfg->lifetime_s, OIDC_LOCAL_LIFETIME_S);
    li->clock = cfg->clock ? cfg->clock : wall_clock;
    li->clock_ud = cfg->clock_ud;
    if (pthread_mutex_init(&li->lock, NULL) != 0)
        BUG("cannot initialise issuer lock");
out:
    json_decref(jwks);
    json_decref(jwk);
    EVP_PKEY_free(key);
    return li;
}

void oidc_local_issuer_free(struct oidc_local_issuer *li)
{
    size_t i;

    if (!li)
        return;
    for (i = 0; i < li->n_cached; i++) {
        free(li->cache[i].audience);
        free(li->cache[i].token);
    }
    pthread_mutex_destroy(&li->lock);
    free(li->jwks);
    free(li->subject);
    free(li->email);
    free(li->issuer);
    free(li->pem);
    free(li);
}

const char *oidc_local_issuer_jwks(const struct oidc_local_issuer *li)
{
    return li->jwks;
}

/* The cache slot for audience: its own, a free one, or the one expiring first. */
static struct issued *issuer_slot(struct oidc_local_issuer *li, const char *audience)
{
    struct issued *victim;
    size_t i;

    for (i = 0; i < li->n_cached; i++)
        if (strcmp(li->cache[i].audience, audience) == 0)
            return &li->cache[i];
    if (li->n_cached < OIDC_LOCAL_AUDIENCES_MAX) {
        victim = &li->cache[li->n_cached++];
        victim->audience = xstrdup(audience);
        return victim;
    }
    victim = &li->cache[0];
    for (i = 1; i < li->n_cached; i++)
        if (li->cache[i].exp < victim->exp)
            victim = &li->cache[i];
    free(victim->audience);
    free(victim->token);
    victim->audience = xstrdup(audience);
    victim->token = NULL;
    victim->exp = 0;
    return victim;
}

enum status oidc_local_issuer_token(struct oidc_local_issuer *li, const char *audience, char **out,
                                    struct error *err)
{
    struct issued *slot;
    json_t *claims = NULL;
    char *token = NULL;
    int64_t now;
    enum status st = ST_OK;

    *out = NULL;
    if (!audience || !*audience)
        return error_set(err, ST_INVALID, NULL, "cannot mint id token: empty audience");
    pthread_mutex_lock(&li->lock);
    now = li->clock(li->clock_ud);
    slot = issuer_slot(li, audience);
    if (slot->token && now < slot->exp - OIDC_LOCAL_REFRESH_S) {
        *out = xstrdup(slot->token);
        goto out;
    }
    claims = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I}", "iss", li->issuer, "aud", audience,
                       "sub", li->subject, "email", li->email, "email_verified", 1, "iat",
                       (json_int_t)now, "exp", (json_int_t)(now + li->lifetime_s));
    if (!claims)
        BUG("cannot build id token claims");
    if ((st = jwt_sign_rs256(li->pem, li->kid, claims, &token, err)) != ST_OK) {
        error_prefix(err, "cannot mint id token for \"%.*s\"", QUOTE_MAX, audience);
        goto out;
    }
    free(slot->token);
    slot->token = token;
    slot->exp = now + li->lifetime_s;
    *out = xstrdup(token);
out:
    pthread_mutex_unlock(&li->lock);
    json_decref(claims);
    return st;
}
