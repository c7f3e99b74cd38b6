#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "check_main.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"

#define NOW      1700000000LL
#define AUD      "https://worker-abc-uc.a.run.app/tasks"
#define SA       "tasks@proj.iam.gserviceaccount.com"
#define JWKS_URL "https://keys.example/oauth2/v3/certs"

/* ---- fixtures: keys are generated once for the whole suite (RSA keygen is slow) ---- */

static struct {
    char *pem[2]; /* A: published, B: the rotated-in key */
    EVP_PKEY *key[2];
    char kid[2][JWT_KID_LEN + 1];
    char *pub_pem[2];
    EVP_PKEY *ec;  /* for an ES256 token */
    char *jwks_a;  /* {"keys":[A]} */
    char *jwks_ab; /* {"keys":[A, B]} */
    char *certs_a; /* v1 format {"<kid A>": "-----BEGIN CERTIFICATE-----..."} */
} K;

static char *self_signed_cert(EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_NAME *name;
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *pem;
    long n;

    ck_assert_ptr_nonnull(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(x, name);
    ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);
    ck_assert_int_eq(PEM_write_bio_X509(bio, x), 1);
    n = BIO_get_mem_data(bio, &data);
    pem = xmalloc((size_t)n + 1);
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
    BIO_free(bio);
    X509_free(x);
    return pem;
}

static void keys_setup(void)
{
    struct error err;
    json_t *jwks, *jwk_b, *certs;
    char *cert;
    int i;

    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(jwt_rsa_generate(0, &K.pem[i], &err), ST_OK);
        ck_assert_int_eq(jwt_key_load_private(K.pem[i], &K.key[i], &err), ST_OK);
        ck_assert_int_eq(jwt_key_id(K.key[i], K.kid[i], &err), ST_OK);
        ck_assert_int_eq(jwt_key_public_pem(K.key[i], &K.pub_pem[i], &err), ST_OK);
    }
    ck_assert_str_ne(K.kid[0], K.kid[1]);
    K.ec = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(K.ec);

    ck_assert_int_eq(jwt_jwks_from_private_pem(K.pem[0], &jwks, &err), ST_OK);
    K.jwks_a = json_dump_compact(jwks);
    ck_assert_int_eq(jwt_key_jwk(K.key[1], &jwk_b, &err), ST_OK);
    json_array_append_new(json_object_get(jwks, "keys"), jwk_b);
    K.jwks_ab = json_dump_compact(jwks);
    json_decref(jwks);

    cert = self_signed_cert(K.key[0]);
    certs = json_pack("{s:s}", K.kid[0], cert);
    K.certs_a = json_dump_compact(certs);
    json_decref(certs);
    free(cert);
}

static void keys_teardown(void)
{
    int i;

    for (i = 0; i < 2; i++) {
        free(K.pem[i]);
        free(K.pub_pem[i]);
        EVP_PKEY_free(K.key[i]);
    }
    EVP_PKEY_free(K.ec);
    free(K.jwks_a);
    free(K.jwks_ab);
    free(K.certs_a);
    memset(&K, 0, sizeof(K));
}

/* ---- fakes: clock and fetch ----------------------------------------------------------- */

static _Atomic int64_t fake_now = NOW;

static int64_t fake_clock(void *ud)
{
    UNUSED(ud);
    return atomic_load(&fake_now);
}

struct fake_fetch {
    atomic_int calls;
    const char *doc; /* served body; changed only between verifications */
    int max_age;
    bool fail;
    int delay_ms;
};

static enum status fake_fetch(void *ud, const char *url, struct buf *body, int *max_age_s,
                              struct error *err)
{
    struct fake_fetch *f = ud;

    atomic_fetch_add(&f->calls, 1);
    if (f->delay_ms)
        time_sleep_ms(f->delay_ms);
    if (f->fail)
        return error_set(err, ST_UNAVAILABLE, NULL, "fake outage");
    if (strcmp(url, JWKS_URL) != 0)
        return error_set(err, ST_NOT_FOUND, NULL, "unexpected url %s", url);
    *max_age_s = f->max_age;
    return buf_append_str(body, f->doc);
}

static struct oidc_verifier *fetching_verifier(struct fake_fetch *f)
{
    struct oidc_config cfg = {
        .audience = AUD,
        .email = SA,
        .jwks_url = JWKS_URL,
        .fetch = fake_fetch,
        .fetch_ud = f,
        .clock = fake_clock,
    };
    struct error err;
    struct oidc_verifier *v = oidc_verifier_new(&cfg, &err);

    ck_assert_msg(v != NULL, "%s", err.message);
    return v;
}

/* ---- token construction ------------------------------------------------------------------ */

enum signer { SIGN_A, SIGN_B, SIGN_NONE, SIGN_HS256_PUB, SIGN_RS384, SIGN_ES256 };

static void evp_sign(EVP_PKEY *key, const EVP_MD *md, const char *in, size_t n, struct buf *sig)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char out[1024];
    size_t len = sizeof(out);

    ck_assert_int_eq(EVP_DigestSignInit(ctx, NULL, md, NULL, key), 1);
    ck_assert_int_eq(EVP_DigestSign(ctx, out, &len, (const unsigned char *)in, n), 1);
    EVP_MD_CTX_free(ctx);
    ck_assert_int_eq(buf_append(sig, out, len), ST_OK);
}

/* Signs "header.payload" (given as JSON text) the way signer says. Returns a malloc'd token. */
static char *make_token_text(const char *header, const char *payload, enum signer signer)
{
    struct buf t, sig;
    uint8_t mac[32];

    buf_init(&t, 1 << 20);
    buf_init(&sig, 4096);
    ck_assert_int_eq(base64_encode(&t, header, strlen(header), B64_URL), ST_OK);
    ck_assert_int_eq(buf_append_str(&t, "."), ST_OK);
    ck_assert_int_eq(base64_encode(&t, payload, strlen(payload), B64_URL), ST_OK);
    switch (signer) {
    case SIGN_A:
        evp_sign(K.key[0], EVP_sha256(), t.data, t.len, &sig);
        break;
    case SIGN_B:
        evp_sign(K.key[1], EVP_sha256(), t.data, t.len, &sig);
        break;
    case SIGN_RS384:
        evp_sign(K.key[0], EVP_sha384(), t.data, t.len, &sig);
        break;
    case SIGN_ES256:
        evp_sign(K.ec, EVP_sha256(), t.data, t.len, &sig);
        break;
    case SIGN_HS256_PUB:
        /* The classic confusion attack: HMAC keyed with the verifier's public key PEM. */
        hmac_sha256(K.pub_pem[0], strlen(K.pub_pem[0]), t.data, t.len, mac);
        ck_assert_int_eq(buf_append(&sig, mac, sizeof(mac)), ST_OK);
        break;
    case SIGN_NONE:
        break;
    }
    ck_assert_int_eq(buf_append_str(&t, "."), ST_OK);
    ck_assert_int_eq(base64_encode(&t, sig.data, sig.len, B64_URL), ST_OK);
    buf_release(&sig);
    return buf_take(&t, NULL);
}

/*
 * Builds a token for base claims (Google issuer, our audience and SA, iat
 * now - 10, exp now + 3590) patched with patch: members replace the base
 * ones, nulls delete them, and integer iat/exp are offsets from now.
 * In the header, "kid" values "A" and "B" stand for the test keys' ids.
 */
static char *make_token(const char *header, const char *patch, enum signer signer, int64_t now)
{
    struct error err;
    json_t *h, *claims, *p;
    const char *name;
    json_t *value, *tmp;
    char *htext, *ctext, *token;

    h = json_parse(header, strlen(header), &err);
    ck_assert_msg(h != NULL, "%s", err.message);
    if (json_is_string(json_object_get(h, "kid"))) {
        const char *kid = json_string_value(json_object_get(h, "kid"));

        if (strcmp(kid, "A") == 0)
            json_object_set_new(h, "kid", json_string(K.kid[0]));
        else if (strcmp(kid, "B") == 0)
            json_object_set_new(h, "kid", json_string(K.kid[1]));
    }
    claims =
        json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:I, s:I}", "iss", "https://accounts.google.com",
                  "aud", AUD, "email", SA, "email_verified", 1, "sub", "108234567890123456789",
                  "azp", "108234567890123456789", "iat", (json_int_t)-10, "exp", (json_int_t)3590);
    if (patch) {
        p = json_parse(patch, strlen(patch), &err);
        ck_assert_msg(p != NULL, "%s", err.message);
        json_object_foreach_safe(p, tmp, name, value)
        {
            if (json_is_null(value))
                json_object_del(claims, name);
            else
                json_object_set(claims, name, value);
        }
        json_decref(p);
    }
    if (json_is_integer(json_object_get(claims, "iat")))
        json_object_set_new(claims, "iat",
                            json_integer(now + json_integer_value(json_object_get(claims, "iat"))));
    if (json_is_integer(json_object_get(claims, "exp")))
        json_object_set_new(claims, "exp",
                            json_integer(now + json_integer_value(json_object_get(claims, "exp"))));
    if (json_is_real(json_object_get(claims, "exp")))
        json_object_set_new(
            claims, "exp",
            json_real((double)now + json_real_value(json_object_get(claims, "exp"))));
    htext = json_dump_compact(h);
    ctext = json_dump_compact(claims);
    token = make_token_text(htext, ctext, signer);
    free(htext);
    free(ctext);
    json_decref(claims);
    json_decref(h);
    return token;
}

#define HDR_A "{\"alg\":\"RS256\",\"kid\":\"A\",\"typ\":\"JWT\"}"

/* Replaces segment idx (0..2) of token with the base64url of text. */
static char *replace_segment(const char *token, int idx, const char *text)
{
    const char *d1 = strchr(token, '.'), *d2 = strchr(d1 + 1, '.');
    const char *starts[3] = {token, d1 + 1, d2 + 1};
    const char *ends[3] = {d1, d2, token + strlen(token)};
    struct buf b;
    int i;

    buf_init(&b, 1 << 20);
    for (i = 0; i < 3; i++) {
        if (i)
            buf_append_str(&b, ".");
        if (i == idx)
            base64_encode(&b, text, strlen(text), B64_URL);
        else
            buf_append(&b, starts[i], (size_t)(ends[i] - starts[i]));
    }
    return buf_take(&b, NULL);
}

enum mutation {
    MUT_NONE,
    MUT_TAMPER_PAYLOAD, /* payload replaced by one naming another invoker, signature kept */
    MUT_TAMPER_HEADER,  /* header re-encoded with an extra member, signature kept */
    MUT_TWO_SEGMENTS,
    MUT_FOUR_SEGMENTS,
    MUT_BAD_CHAR,     /* a '*' in the payload */
    MUT_STD_ALPHABET, /* a '+' in the header */
    MUT_PADDING,      /* '=' padding on the signature */
    MUT_EMPTY_SIG,
    MUT_TRUNC_SIG,
    MUT_HEADER_NOT_JSON,
    MUT_EMPTY,
};

static char *mutate(char *token, enum mutation m, int64_t now)
{
    char *out = NULL;
    char *other;
    size_t n = strlen(token);

    switch (m) {
    case MUT_NONE:
        return token;
    case MUT_TAMPER_PAYLOAD:
        other =
            make_token(HDR_A, "{\"email\":\"attacker@evil.iam.gserviceaccount.com\"}", SIGN_B, now);
        {
            const char *d1 = strchr(other, '.'), *d2 = strchr(d1 + 1, '.');
            struct buf b;
            const char *t1 = strchr(token, '.'), *t2 = strchr(t1 + 1, '.');

            buf_init(&b, 1 << 20);
            buf_append(&b, token, (size_t)(t1 - token + 1));
            buf_append(&b, d1 + 1, (size_t)(d2 - d1 - 1));
            buf_append_str(&b, t2);
            out = buf_take(&b, NULL);
        }
        free(other);
        break;
    case MUT_TAMPER_HEADER: {
        char hdr[256];

        ck_assert(str_printf(hdr, sizeof(hdr),
                             "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"JOSE\"}", K.kid[0]));
        out = replace_segment(token, 0, hdr);
        break;
    }
    case MUT_TWO_SEGMENTS:
        out = xstrdup(token);
        *strrchr(out, '.') = '\0';
        break;
    case MUT_FOUR_SEGMENTS:
        out = xmalloc(n + 6);
        memcpy(out, token, n);
        memcpy(out + n, ".AAAA", 6);
        break;
    case MUT_BAD_CHAR:
        out = xstrdup(token);
        strchr(out, '.')[1] = '*';
        break;
    case MUT_STD_ALPHABET:
        out = xstrdup(token);
        out[1] = '+';
        break;
    case MUT_PADDING:
        out = xmalloc(n + 3);
        memcpy(out, token, n);
        memcpy(out + n, "==", 3);
        break;
    case MUT_EMPTY_SIG:
        out = xstrdup(token);
        strrchr(out, '.')[1] = '\0';
        break;
    case MUT_TRUNC_SIG: {
        /* A well-formed signature one byte short. */
        const char *sig = strrchr(token, '.') + 1;
        struct buf raw, b;

        buf_init(&raw, 4096);
        buf_init(&b, 1 << 20);
        ck_assert_int_eq(base64_decode(&raw, sig, strlen(sig)), ST_OK);
        buf_append(&b, token, (size_t)(sig - token));
        base64_encode(&b, raw.data, raw.len - 1, B64_URL);
        buf_release(&raw);
        out = buf_take(&b, NULL);
        break;
    }
    case MUT_HEADER_NOT_JSON:
        out = replace_segment(token, 0, "RS256 please");
        break;
    case MUT_EMPTY:
        out = xstrdup("");
        break;
    }
    free(token);
    return out;
}

/* ---- the accept/reject table ------------------------------------------------------------ */

static const struct vcase {
    const char *name;
    const char *header;
    const char *patch;
    enum signer signer;
    enum mutation mut;
    enum status want;
    const char *msg; /* substring of the error message */
} vcases[] = {
    {"valid", HDR_A, NULL, SIGN_A, MUT_NONE, ST_OK, ""},
    {"short issuer form", HDR_A, "{\"iss\":\"accounts.google.com\"}", SIGN_A, MUT_NONE, ST_OK, ""},
    {"header without typ", "{\"alg\":\"RS256\",\"kid\":\"A\"}", NULL, SIGN_A, MUT_NONE, ST_OK, ""},
    {"wrong issuer", HDR_A, "{\"iss\":\"https://evil.example\"}", SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "issuer \"https://evil.example\" is not accepted"},
    {"issuer with trailing slash", HDR_A, "{\"iss\":\"https://accounts.google.com/\"}", SIGN_A,
     MUT_NONE, ST_UNAUTHENTICATED, "is not accepted"},
    {"missing issuer", HDR_A, "{\"iss\":null}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED, "no issuer"},
    {"wrong audience", HDR_A, "{\"aud\":\"https://other.run.app/tasks\"}", SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "audience mismatch"},
    {"audience prefix", HDR_A, "{\"aud\":\"https://worker-abc-uc.a.run.app\"}", SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "audience mismatch"},
    {"audience array with ours", HDR_A, "{\"aud\":[\"x\",\"" AUD "\"]}", SIGN_A, MUT_NONE, ST_OK,
     ""},
    {"audience array without ours", HDR_A, "{\"aud\":[\"x\",\"y\"]}", SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "audience mismatch"},
    {"missing audience", HDR_A, "{\"aud\":null}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED,
     "audience mismatch"},
    {"wrong email", HDR_A, "{\"email\":\"other@proj.iam.gserviceaccount.com\"}", SIGN_A, MUT_NONE,
     ST_PERMISSION_DENIED, "is not the expected invoker"},
    {"missing email", HDR_A, "{\"email\":null}", SIGN_A, MUT_NONE, ST_PERMISSION_DENIED,
     "no email claim"},
    {"email not verified", HDR_A, "{\"email_verified\":false}", SIGN_A, MUT_NONE,
     ST_PERMISSION_DENIED, "is not verified"},
    {"email_verified as string", HDR_A, "{\"email_verified\":\"true\"}", SIGN_A, MUT_NONE,
     ST_PERMISSION_DENIED, "is not verified"},
    {"email_verified missing", HDR_A, "{\"email_verified\":null}", SIGN_A, MUT_NONE,
     ST_PERMISSION_DENIED, "is not verified"},
    {"expired beyond skew", HDR_A, "{\"iat\":-3901,\"exp\":-301}", SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "token expired at 2023-11-14T22:08:19"},
    {"expired within skew", HDR_A, "{\"iat\":-3899,\"exp\":-299}", SIGN_A, MUT_NONE, ST_OK, ""},
    {"expired exactly at skew", HDR_A, "{\"iat\":-3900,\"exp\":-300}", SIGN_A, MUT_NONE, ST_OK, ""},
    {"issued in the future beyond skew", HDR_A, "{\"iat\":301,\"exp\":3901}", SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "not yet valid"},
    {"issued in the future within skew", HDR_A, "{\"iat\":299,\"exp\":3899}", SIGN_A, MUT_NONE,
     ST_OK, ""},
    {"lifetime too long", HDR_A, "{\"exp\":86400}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED,
     "lifetime too long"},
    {"lifetime just short enough", HDR_A, "{\"exp\":86399}", SIGN_A, MUT_NONE, ST_OK, ""},
    {"missing iat", HDR_A, "{\"iat\":null}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED, "no iat claim"},
    {"missing exp", HDR_A, "{\"exp\":null}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED, "no exp claim"},
    {"non-numeric exp", HDR_A, "{\"exp\":\"1700003590\"}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED,
     "exp is not a number"},
    {"boolean iat", HDR_A, "{\"iat\":true}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED,
     "iat is not a number"},
    {"real exp", HDR_A, "{\"exp\":3590.5}", SIGN_A, MUT_NONE, ST_OK, ""},
    {"unknown kid", "{\"alg\":\"RS256\",\"kid\":\"0123456789abcdef\"}", NULL, SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "unknown key id \"0123456789abcdef\""},
    {"missing kid", "{\"alg\":\"RS256\"}", NULL, SIGN_A, MUT_NONE, ST_UNAUTHENTICATED, "no kid"},
    {"kid not a string", "{\"alg\":\"RS256\",\"kid\":7}", NULL, SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "no kid"},
    {"kid with a space", "{\"alg\":\"RS256\",\"kid\":\"a b\"}", NULL, SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "malformed kid"},
    {"alg none", "{\"alg\":\"none\",\"kid\":\"A\"}", NULL, SIGN_NONE, MUT_NONE, ST_UNAUTHENTICATED,
     "unsupported token algorithm \"none\""},
    {"alg none with a signature", "{\"alg\":\"none\",\"kid\":\"A\"}", NULL, SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "unsupported token algorithm \"none\""},
    {"missing alg", "{\"kid\":\"A\"}", NULL, SIGN_A, MUT_NONE, ST_UNAUTHENTICATED,
     "unsupported token algorithm"},
    {"lowercase alg", "{\"alg\":\"rs256\",\"kid\":\"A\"}", NULL, SIGN_A, MUT_NONE,
     ST_UNAUTHENTICATED, "unsupported token algorithm \"rs256\""},
    {"hs256 keyed with the public key", "{\"alg\":\"HS256\",\"kid\":\"A\",\"typ\":\"JWT\"}", NULL,
     SIGN_HS256_PUB, MUT_NONE, ST_UNAUTHENTICATED, "unsupported token algorithm \"HS256\""},
    {"rs384", "{\"alg\":\"RS384\",\"kid\":\"A\"}", NULL, SIGN_RS384, MUT_NONE, ST_UNAUTHENTICATED,
     "unsupported token algorithm \"RS384\""},
    {"rs384 signature under an rs256 header", HDR_A, NULL, SIGN_RS384, MUT_NONE, ST_UNAUTHENTICATED,
     "signature mismatch"},
    {"es256", "{\"alg\":\"ES256\",\"kid\":\"A\"}", NULL, SIGN_ES256, MUT_NONE, ST_UNAUTHENTICATED,
     "unsupported token algorithm \"ES256\""},
    {"critical header", "{\"alg\":\"RS256\",\"kid\":\"A\",\"crit\":[\"exp\"]}", NULL, SIGN_A,
     MUT_NONE, ST_UNAUTHENTICATED, "critical"},
    {"signed by another key", HDR_A, NULL, SIGN_B, MUT_NONE, ST_UNAUTHENTICATED,
     "signature mismatch"},
    {"tampered payload", HDR_A, NULL, SIGN_A, MUT_TAMPER_PAYLOAD, ST_UNAUTHENTICATED,
     "signature mismatch"},
    {"tampered header", HDR_A, NULL, SIGN_A, MUT_TAMPER_HEADER, ST_UNAUTHENTICATED,
     "signature mismatch"},
    {"truncated signature", HDR_A, NULL, SIGN_A, MUT_TRUNC_SIG, ST_UNAUTHENTICATED,
     "signature mismatch"},
    {"empty signature", HDR_A, NULL, SIGN_A, MUT_EMPTY_SIG, ST_UNAUTHENTICATED, "empty signature"},
    {"two segments", HDR_A, NULL, SIGN_A, MUT_TWO_SEGMENTS, ST_UNAUTHENTICATED,
     "2 segments, expected 3"},
    {"four segments", HDR_A, NULL, SIGN_A, MUT_FOUR_SEGMENTS, ST_UNAUTHENTICATED,
     "4 segments, expected 3"},
    {"bad base64 character", HDR_A, NULL, SIGN_A, MUT_BAD_CHAR, ST_UNAUTHENTICATED,
     "payload is not base64url"},
    {"standard base64 alphabet", HDR_A, NULL, SIGN_A, MUT_STD_ALPHABET, ST_UNAUTHENTICATED,
     "header is not base64url"},
    {"base64 padding", HDR_A, NULL, SIGN_A, MUT_PADDING, ST_UNAUTHENTICATED,
     "signature is not base64url"},
    {"header not json", HDR_A, NULL, SIGN_A, MUT_HEADER_NOT_JSON, ST_UNAUTHENTICATED,
     "header is not a json object"},
    {"empty token", HDR_A, NULL, SIGN_A, MUT_EMPTY, ST_UNAUTHENTICATED, "missing token"},
    {"oversized token", HDR_A, "{\"pad\":\"PAD\"}", SIGN_A, MUT_NONE, ST_UNAUTHENTICATED,
     "token longer than 8192 bytes"},
};

START_TEST(verify_table)
{
    const struct vcase *c = &vcases[_i];
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = 3600};
    struct oidc_verifier *v;
    struct error err;
    json_t *claims = NULL;
    char *token, *patch = NULL;
    enum status st;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    if (c->patch && strstr(c->patch, "PAD")) {
        /* A properly signed token just over the bound. */
        char *pad = xmalloc(OIDC_TOKEN_MAX + 1);

        memset(pad, 'x', OIDC_TOKEN_MAX);
        pad[OIDC_TOKEN_MAX] = '\0';
        json_t *p = json_pack("{s:s}", "pad", pad);
        patch = json_dump_compact(p);
        json_decref(p);
        free(pad);
    }
    token = mutate(make_token(c->header, patch ? patch : c->patch, c->signer, NOW), c->mut, NOW);
    error_clear(&err);
    st = oidc_verify(v, token, &claims, &err);
    ck_assert_msg(st == c->want, "case \"%s\": got %s (%s), want %s", c->name, status_name(st),
                  err.message, status_name(c->want));
    if (st == ST_OK) {
        ck_assert_ptr_nonnull(claims);
        ck_assert_str_eq(json_str_or(claims, "email", ""), SA);
        ck_assert_str_eq(json_str_or(claims, "sub", ""), "108234567890123456789");
    } else {
        ck_assert_ptr_null(claims);
        ck_assert_msg(strstr(err.message, c->msg) != NULL,
                      "case \"%s\": message \"%s\" lacks \"%s\"", c->name, err.message, c->msg);
        /* Never echo the token (or a long piece of it) back. */
        ck_assert_msg(strlen(token) < 40 || strstr(err.message, token) == NULL, "case \"%s\"",
                      c->name);
    }
    json_decref(claims);
    free(token);
    free(patch);
    oidc_verifier_free(v);
}
END_TEST

/* Payloads that are validly signed but not acceptable JSON. */
static const struct {
    const char *payload;
    const char *msg;
} signed_payloads[] = {
    {"not json", "payload is not a json object"},
    {"[1,2]", "payload is not a json object"},
    {"", "empty payload"},
    /* Duplicate claims: a parser that kept the last one would see the attacker's email. */
    {"{\"iss\":\"https://accounts.google.com\",\"aud\":\"" AUD "\",\"email\":\"" SA
     "\",\"email\":\"x@evil\",\"email_verified\":true,\"iat\":1699999990,\"exp\":1700003590}",
     "payload is not a json object"},
};

START_TEST(signed_bad_payloads)
{
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = 3600};
    struct oidc_verifier *v;
    struct error err;
    char hdr[128];
    char *token;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    ck_assert(str_printf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", K.kid[0]));
    token = make_token_text(hdr, signed_payloads[_i].payload, SIGN_A);
    error_clear(&err);
    ck_assert_int_eq(oidc_verify(v, token, NULL, &err), ST_UNAUTHENTICATED);
    ck_assert_msg(strstr(err.message, signed_payloads[_i].msg) != NULL, "\"%s\" lacks \"%s\"",
                  err.message, signed_payloads[_i].msg);
    free(token);
    oidc_verifier_free(v);
}
END_TEST

/* ---- key cache ---------------------------------------------------------------------------- */

static enum status verify_with(struct oidc_verifier *v, const char *header, enum signer signer,
                               struct error *err)
{
    char *token = make_token(header, NULL, signer, atomic_load(&fake_now));
    enum status st;

    error_clear(err);
    st = oidc_verify(v, token, NULL, err);
    free(token);
    return st;
}

#define HDR_B   "{\"alg\":\"RS256\",\"kid\":\"B\"}"
#define HDR_ZZZ "{\"alg\":\"RS256\",\"kid\":\"zzz\"}"

START_TEST(unknown_kid_refetches_once)
{
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = 3600};
    struct oidc_verifier *v;
    struct error err;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 1);

    /* Google rotates B in. Within the refetch interval, an unknown kid costs no fetch. */
    f.doc = K.jwks_ab;
    atomic_store(&fake_now, NOW + 10);
    ck_assert_int_eq(verify_with(v, HDR_B, SIGN_B, &err), ST_UNAUTHENTICATED);
    ck_assert_str_eq(err.code, "unknown_key");
    ck_assert_int_eq(atomic_load(&f.calls), 1);

    /* After it, one refetch finds the rotated key. */
    atomic_store(&fake_now, NOW + 100);
    ck_assert_int_eq(verify_with(v, HDR_B, SIGN_B, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 2);
    ck_assert_int_eq(verify_with(v, HDR_B, SIGN_B, &err), ST_OK);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 2);

    /* A flood of made-up kids: one fetch per interval at most. */
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(verify_with(v, HDR_ZZZ, SIGN_A, &err), ST_UNAUTHENTICATED);
    ck_assert_str_eq(err.message, "unknown key id \"zzz\"");
    ck_assert_int_eq(atomic_load(&f.calls), 2);
    atomic_store(&fake_now, NOW + 131);
    ck_assert_int_eq(verify_with(v, HDR_ZZZ, SIGN_A, &err), ST_UNAUTHENTICATED);
    ck_assert_int_eq(verify_with(v, HDR_ZZZ, SIGN_A, &err), ST_UNAUTHENTICATED);
    ck_assert_int_eq(atomic_load(&f.calls), 3);
    ck_assert_uint_eq(oidc_verifier_fetch_count(v), 3);
    oidc_verifier_free(v);
}
END_TEST

static const struct {
    int max_age;      /* served by the fake */
    int64_t fresh_to; /* last second (offset from the fetch) without a refetch */
} cache_cases[] = {
    {600, 599},       {-1, 59}, /* no max-age: the 60 s floor */
    {5, 59},                    /* tiny max-age: the floor too */
    {0, 59},                    /* no-cache/no-store */
    {1000000, 86399},           /* huge max-age: the one-day ceiling */
};

START_TEST(cache_honours_max_age)
{
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = cache_cases[_i].max_age};
    struct oidc_verifier *v;
    struct error err;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 1);
    atomic_store(&fake_now, NOW + cache_cases[_i].fresh_to);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 1);
    atomic_store(&fake_now, NOW + cache_cases[_i].fresh_to + 1);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 2);
    oidc_verifier_free(v);
}
END_TEST

START_TEST(fetch_failures)
{
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = 60, .fail = true};
    struct oidc_verifier *v;
    struct error err;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_UNAVAILABLE);
    ck_assert_str_eq(err.code, "keys_unavailable");
    ck_assert_msg(strstr(err.message,
                         "cannot fetch token signing keys from " JWKS_URL ": fake outage") != NULL,
                  "%s", err.message);
    ck_assert_int_eq(atomic_load(&f.calls), 1);
    /* No retry storm: failures are remembered for a few seconds. */
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_UNAVAILABLE);
    ck_assert_int_eq(atomic_load(&f.calls), 1);
    f.fail = false;
    atomic_store(&fake_now, NOW + 5);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 2);

    /* Expired cache and an outage: known kids are served stale, others are unavailable. */
    f.fail = true;
    atomic_store(&fake_now, NOW + 5 + 60 + 10);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(atomic_load(&f.calls), 3);
    ck_assert_int_eq(verify_with(v, HDR_B, SIGN_B, &err), ST_UNAVAILABLE);
    ck_assert_int_eq(atomic_load(&f.calls), 3);
    /* ...but not forever. */
    atomic_store(&fake_now, NOW + 5 + 60 + OIDC_DEFAULT_STALE_S);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_UNAVAILABLE);
    ck_assert_int_eq(atomic_load(&f.calls), 4);

    /* A document without usable keys is a failed fetch too. */
    f.fail = false;
    f.doc = "{\"keys\":[]}";
    atomic_store(&fake_now, NOW + 100000);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_UNAVAILABLE);
    ck_assert_msg(strstr(err.message, "no usable rsa key") != NULL, "%s", err.message);
    oidc_verifier_free(v);
}
END_TEST

#define N_THREADS 32

struct worker_arg {
    struct oidc_verifier *v;
    pthread_barrier_t *start;
    const char *token;
    enum status st;
};

static void *verify_thread(void *p)
{
    struct worker_arg *a = p;
    struct error err;
    json_t *claims = NULL;

    pthread_barrier_wait(a->start);
    a->st = oidc_verify(a->v, a->token, &claims, &err);
    json_decref(claims);
    return NULL;
}

START_TEST(concurrent_cold_cache_fetches_once)
{
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = 3600, .delay_ms = 100};
    struct worker_arg args[N_THREADS];
    pthread_t threads[N_THREADS];
    pthread_barrier_t start;
    struct oidc_verifier *v;
    char *token;
    int i;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    token = make_token(HDR_A, NULL, SIGN_A, NOW);
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (i = 0; i < N_THREADS; i++) {
        args[i] = (struct worker_arg){.v = v, .start = &start, .token = token, .st = ST_INTERNAL};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, verify_thread, &args[i]), 0);
    }
    for (i = 0; i < N_THREADS; i++)
        pthread_join(threads[i], NULL);
    for (i = 0; i < N_THREADS; i++)
        ck_assert_msg(args[i].st == ST_OK, "thread %d: %s", i, status_name(args[i].st));
    ck_assert_int_eq(atomic_load(&f.calls), 1);
    pthread_barrier_destroy(&start);
    free(token);
    oidc_verifier_free(v);
}
END_TEST

/* ---- key documents ------------------------------------------------------------------------- */

START_TEST(v1_pem_certificates)
{
    struct fake_fetch f = {.doc = K.certs_a, .max_age = 3600};
    struct oidc_config cfg = {.audience = AUD, .jwks_json = K.certs_a, .clock = fake_clock};
    struct oidc_verifier *v;
    struct error err;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_B, &err), ST_UNAUTHENTICATED);
    oidc_verifier_free(v);

    v = oidc_verifier_new(&cfg, &err);
    ck_assert_msg(v != NULL, "%s", err.message);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    oidc_verifier_free(v);
}
END_TEST

START_TEST(jwks_skips_unusable_keys)
{
    json_t *doc, *keys, *jwk;
    struct oidc_config cfg = {.audience = AUD, .email = SA, .clock = fake_clock};
    struct oidc_verifier *v;
    struct error err;
    char *text;

    doc = json_parse(K.jwks_a, strlen(K.jwks_a), &err);
    keys = json_object_get(doc, "keys");
    jwk = json_deep_copy(json_array_get(keys, 0));
    json_object_set_new(jwk, "n", json_string("AQAB")); /* a 17-bit modulus */
    json_object_set_new(jwk, "kid", json_string("tiny"));
    json_array_insert_new(keys, 0, jwk);
    json_array_insert_new(keys, 0,
                          json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "kid", "ec", "crv",
                                    "P-256", "x", "AAAA", "y", "AAAA"));
    jwk = json_deep_copy(json_array_get(keys, 2));
    json_object_set_new(jwk, "use", json_string("enc"));
    json_object_set_new(jwk, "kid", json_string("enc"));
    json_array_append_new(keys, jwk);
    text = json_dump_compact(doc);
    cfg.jwks_json = text;
    atomic_store(&fake_now, NOW);
    v = oidc_verifier_new(&cfg, &err);
    ck_assert_msg(v != NULL, "%s", err.message);
    ck_assert_int_eq(verify_with(v, HDR_A, SIGN_A, &err), ST_OK);
    ck_assert_int_eq(verify_with(v, "{\"alg\":\"RS256\",\"kid\":\"tiny\"}", SIGN_A, &err),
                     ST_UNAUTHENTICATED);
    ck_assert_str_eq(err.message, "unknown key id \"tiny\"");
    ck_assert_int_eq(verify_with(v, "{\"alg\":\"RS256\",\"kid\":\"enc\"}", SIGN_A, &err),
                     ST_UNAUTHENTICATED);
    oidc_verifier_free(v);
    free(text);
    json_decref(doc);
}
END_TEST

static const struct {
    const char *name;
    struct oidc_config cfg;
    const char *msg;
} bad_configs[] = {
    {"no audience", {.jwks_json = "{}"}, "no audience"},
    {"no key source", {.audience = AUD}, "exactly one of"},
    {"two key sources", {.audience = AUD, .jwks_json = "{}", .jwks_url = JWKS_URL}, "exactly one"},
    {"url without fetch", {.audience = AUD, .jwks_url = JWKS_URL}, "fetch function"},
    {"empty email",
     {.audience = AUD, .email = "", .jwks_url = JWKS_URL, .fetch = fake_fetch},
     "empty email"},
    {"bad static json", {.audience = AUD, .jwks_json = "{\"keys\":"}, "malformed json"},
    {"static without rsa keys",
     {.audience = AUD, .jwks_json = "{\"keys\":[{\"kty\":\"EC\"}]}"},
     "no usable rsa key"},
    {"static v1 with garbage",
     {.audience = AUD, .jwks_json = "{\"k1\":\"hello\"}"},
     "member \"k1\" is not a pem certificate"},
    {"empty issuer list",
     {.audience = AUD, .issuers = (const char *const[]){NULL}, .jwks_json = "{}"},
     "empty issuer list"},
};

START_TEST(config_errors)
{
    struct error err;
    struct oidc_verifier *v;

    error_clear(&err);
    v = oidc_verifier_new(&bad_configs[_i].cfg, &err);
    ck_assert_msg(v == NULL, "case %s accepted", bad_configs[_i].name);
    ck_assert_int_eq(err.status, ST_INVALID);
    ck_assert_msg(strstr(err.message, bad_configs[_i].msg) != NULL, "case %s: \"%s\" lacks \"%s\"",
                  bad_configs[_i].name, err.message, bad_configs[_i].msg);
}
END_TEST

/* ---- local issuer ---------------------------------------------------------------------------- */

START_TEST(local_issuer_tokens_verify)
{
    const char *issuers[] = {"http://dispatcher.local", NULL};
    struct oidc_local_issuer_config icfg = {
        .private_key_pem = K.pem[0],
        .issuer = issuers[0],
        .email = "dispatcher@batchd.local",
        .clock = fake_clock,
    };
    struct oidc_config vcfg = {
        .issuers = issuers,
        .audience = "http://127.0.0.1:8081/tasks",
        .email = "dispatcher@batchd.local",
        .clock = fake_clock,
    };
    struct oidc_config google = {.audience = "http://127.0.0.1:8081/tasks", .clock = fake_clock};
    struct oidc_local_issuer *li;
    struct oidc_verifier *v, *gv;
    struct error err;
    json_t *claims = NULL;
    char *t1, *t2, *t3, *t4;

    atomic_store(&fake_now, NOW);
    li = oidc_local_issuer_new(&icfg, &err);
    ck_assert_msg(li != NULL, "%s", err.message);
    vcfg.jwks_json = oidc_local_issuer_jwks(li);
    google.jwks_json = oidc_local_issuer_jwks(li);
    v = oidc_verifier_new(&vcfg, &err);
    ck_assert_msg(v != NULL, "%s", err.message);
    gv = oidc_verifier_new(&google, &err);
    ck_assert_msg(gv != NULL, "%s", err.message);

    ck_assert_int_eq(oidc_local_issuer_token(li, vcfg.audience, &t1, &err), ST_OK);
    ck_assert_int_eq(oidc_verify(v, t1, &claims, &err), ST_OK);
    ck_assert_str_eq(json_str_or(claims, "iss", ""), "http://dispatcher.local");
    ck_assert_str_eq(json_str_or(claims, "aud", ""), vcfg.audience);
    ck_assert_str_eq(json_str_or(claims, "sub", ""), "dispatcher@batchd.local");
    ck_assert(json_is_true(json_object_get(claims, "email_verified")));
    ck_assert_int_eq(json_int_or(claims, "iat", 0), NOW);
    ck_assert_int_eq(json_int_or(claims, "exp", 0), NOW + 3600);
    json_decref(claims);
    /* The same code refuses it when expecting Google's issuers. */
    ck_assert_int_eq(oidc_verify(gv, t1, NULL, &err), ST_UNAUTHENTICATED);
    ck_assert_msg(strstr(err.message, "not accepted") != NULL, "%s", err.message);

    /* Cached until 5 minutes before expiry, per audience. */
    atomic_store(&fake_now, NOW + 3299);
    ck_assert_int_eq(oidc_local_issuer_token(li, vcfg.audience, &t2, &err), ST_OK);
    ck_assert_str_eq(t2, t1);
    ck_assert_int_eq(oidc_local_issuer_token(li, "http://other/tasks", &t3, &err), ST_OK);
    ck_assert_str_ne(t3, t1);
    ck_assert_int_eq(oidc_verify(v, t3, NULL, &err), ST_UNAUTHENTICATED);
    ck_assert_str_eq(err.message, "audience mismatch: token is for \"http://other/tasks\"");
    atomic_store(&fake_now, NOW + 3300);
    ck_assert_int_eq(oidc_local_issuer_token(li, vcfg.audience, &t4, &err), ST_OK);
    ck_assert_str_ne(t4, t1);
    ck_assert_int_eq(oidc_verify(v, t4, NULL, &err), ST_OK);
    free(t4);
    ck_assert_int_eq(oidc_local_issuer_token(li, "", &t4, &err), ST_INVALID);
    ck_assert_ptr_null(t4);

    free(t1);
    free(t2);
    free(t3);
    oidc_verifier_free(gv);
    oidc_verifier_free(v);
    oidc_local_issuer_free(li);
}
END_TEST

/* ---- jwt signing and keys -----------------------------------------------------------------------
 */

static json_t *decode_json_segment(const char *s, size_t n)
{
    struct buf b;
    json_t *v;
    struct error err;

    buf_init(&b, 1 << 16);
    ck_assert_int_eq(base64_decode(&b, s, n), ST_OK);
    v = json_parse(b.data, b.len, &err);
    ck_assert_msg(v != NULL, "%s", err.message);
    buf_release(&b);
    return v;
}

START_TEST(jwt_sign_rs256_output)
{
    json_t *claims =
        json_pack("{s:s, s:s, s:[s,s], s:I, s:I, s:s, s:b}", "iss", "https://accounts.google.com",
                  "sub", "42", "aud", "x", AUD, "iat", (json_int_t)NOW, "exp",
                  (json_int_t)(NOW + 3600), "email", SA, "email_verified", 1);
    struct oidc_config cfg = {
        .audience = AUD, .email = SA, .jwks_json = K.jwks_a, .clock = fake_clock};
    struct oidc_verifier *v;
    struct error err;
    json_t *header, *payload, *verified = NULL;
    const char *d1, *d2;
    char *token, *nokid;

    atomic_store(&fake_now, NOW);
    ck_assert_int_eq(jwt_sign_rs256(K.pem[0], K.kid[0], claims, &token, &err), ST_OK);
    d1 = strchr(token, '.');
    ck_assert_ptr_nonnull(d1);
    d2 = strchr(d1 + 1, '.');
    ck_assert_ptr_nonnull(d2);
    ck_assert_ptr_null(strchr(d2 + 1, '.'));
    ck_assert_ptr_null(strchr(token, '='));
    header = decode_json_segment(token, (size_t)(d1 - token));
    ck_assert_str_eq(json_str_or(header, "alg", ""), "RS256");
    ck_assert_str_eq(json_str_or(header, "kid", ""), K.kid[0]);
    ck_assert_str_eq(json_str_or(header, "typ", ""), "JWT");
    payload = decode_json_segment(d1 + 1, (size_t)(d2 - d1 - 1));
    ck_assert_msg(json_equal(payload, claims), "payload differs");

    v = oidc_verifier_new(&cfg, &err);
    ck_assert_msg(v != NULL, "%s", err.message);
    ck_assert_msg(oidc_verify(v, token, &verified, &err) == ST_OK, "%s", err.message);
    ck_assert(json_equal(verified, claims));

    /* No kid: no kid header, and the verifier wants one. */
    ck_assert_int_eq(jwt_sign_rs256(K.pem[0], NULL, claims, &nokid, &err), ST_OK);
    json_decref(header);
    header = decode_json_segment(nokid, (size_t)(strchr(nokid, '.') - nokid));
    ck_assert_ptr_null(json_object_get(header, "kid"));
    ck_assert_int_eq(oidc_verify(v, nokid, NULL, &err), ST_UNAUTHENTICATED);

    free(token);
    ck_assert_int_eq(jwt_sign_rs256("not a key", NULL, claims, &token, &err), ST_INVALID);
    ck_assert_ptr_null(token);
    ck_assert_msg(str_starts_with(err.message, "cannot sign jwt: cannot load private key"), "%s",
                  err.message);
    ck_assert_int_eq(jwt_sign_rs256(K.pem[0], NULL, json_object_get(claims, "aud"), &token, &err),
                     ST_INVALID);

    free(nokid);
    json_decref(verified);
    json_decref(payload);
    json_decref(header);
    json_decref(claims);
    oidc_verifier_free(v);
}
END_TEST

START_TEST(rsa_keys_and_jwk)
{
    struct error err;
    json_t *jwk = NULL, *jwks = NULL;
    EVP_PKEY *small = NULL, *loaded = NULL;
    struct buf n;
    char *pem = NULL, *pub = NULL;
    size_t i;

    ck_assert_uint_eq(strlen(K.kid[0]), JWT_KID_LEN);
    for (i = 0; i < JWT_KID_LEN; i++)
        ck_assert(strchr("0123456789abcdef", K.kid[0][i]) != NULL);
    ck_assert(str_starts_with(K.pem[0], "-----BEGIN PRIVATE KEY-----"));
    ck_assert(str_starts_with(K.pub_pem[0], "-----BEGIN PUBLIC KEY-----"));

    ck_assert_int_eq(jwt_key_jwk(K.key[0], &jwk, &err), ST_OK);
    ck_assert_str_eq(json_str_or(jwk, "kty", ""), "RSA");
    ck_assert_str_eq(json_str_or(jwk, "alg", ""), "RS256");
    ck_assert_str_eq(json_str_or(jwk, "use", ""), "sig");
    ck_assert_str_eq(json_str_or(jwk, "kid", ""), K.kid[0]);
    ck_assert_str_eq(json_str_or(jwk, "e", ""), "AQAB");
    ck_assert_ptr_null(strchr(json_str_or(jwk, "n", "="), '='));
    buf_init(&n, 4096);
    ck_assert_int_eq(
        base64_decode(&n, json_str_or(jwk, "n", ""), strlen(json_str_or(jwk, "n", ""))), ST_OK);
    ck_assert_uint_eq(n.len, 256);
    buf_release(&n);

    ck_assert_int_eq(jwt_jwks_from_private_pem(K.pem[0], &jwks, &err), ST_OK);
    ck_assert_uint_eq(json_array_size(json_object_get(jwks, "keys")), 1);
    ck_assert(json_equal(json_array_get(json_object_get(jwks, "keys"), 0), jwk));

    /* The same key loaded twice has the same id. */
    ck_assert_int_eq(jwt_key_load_private(K.pem[0], &loaded, &err), ST_OK);
    {
        char kid[JWT_KID_LEN + 1];

        ck_assert_int_eq(jwt_key_id(loaded, kid, &err), ST_OK);
        ck_assert_str_eq(kid, K.kid[0]);
    }

    ck_assert_int_eq(jwt_rsa_generate(1024, &pem, &err), ST_INVALID);
    ck_assert_ptr_null(pem);
    ck_assert_int_eq(jwt_key_load_private("-----BEGIN PRIVATE KEY-----\nAAAA\n", &small, &err),
                     ST_INVALID);
    ck_assert_int_eq(jwt_key_load_private(K.pub_pem[0], &small, &err), ST_INVALID);
    /* A 1024-bit key and an EC key are refused. */
    {
        EVP_PKEY *weak = EVP_RSA_gen(1024);
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL;
        long len;

        PEM_write_bio_PrivateKey(bio, weak, NULL, NULL, 0, NULL, NULL);
        len = BIO_get_mem_data(bio, &data);
        pub = xmalloc((size_t)len + 1);
        memcpy(pub, data, (size_t)len);
        pub[len] = '\0';
        ck_assert_int_eq(jwt_key_load_private(pub, &small, &err), ST_INVALID);
        ck_assert_msg(strstr(err.message, "1024 bits") != NULL, "%s", err.message);
        BIO_free(bio);
        EVP_PKEY_free(weak);
        free(pub);

        bio = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(bio, K.ec, NULL, NULL, 0, NULL, NULL);
        len = BIO_get_mem_data(bio, &data);
        pub = xmalloc((size_t)len + 1);
        memcpy(pub, data, (size_t)len);
        pub[len] = '\0';
        ck_assert_int_eq(jwt_key_load_private(pub, &small, &err), ST_INVALID);
        ck_assert_msg(strstr(err.message, "not an rsa key") != NULL, "%s", err.message);
        BIO_free(bio);
        free(pub);
    }
    ck_assert_ptr_null(small);

    EVP_PKEY_free(loaded);
    json_decref(jwks);
    json_decref(jwk);
}
END_TEST

/* ---- helpers
 * ------------------------------------------------------------------------------------- */

static const struct {
    const char *header;
    enum status want;
    const char *token; /* expected token, or a message substring on failure */
} bearer_cases[] = {
    {"Bearer abc.def.ghi", ST_OK, "abc.def.ghi"},
    {"bearer abc", ST_OK, "abc"},
    {"BEARER abc", ST_OK, "abc"},
    {"  Bearer \t abc \t ", ST_OK, "abc"},
    {"Bearer\tabc", ST_OK, "abc"},
    {NULL, ST_UNAUTHENTICATED, "missing authorization header"},
    {"", ST_UNAUTHENTICATED, "empty authorization header"},
    {"   ", ST_UNAUTHENTICATED, "empty authorization header"},
    {"Bearer", ST_UNAUTHENTICATED, "empty bearer token"},
    {"Bearer   ", ST_UNAUTHENTICATED, "empty bearer token"},
    {"Basic dXNlcjpwdw==", ST_UNAUTHENTICATED, "not bearer"},
    {"Bearerabc", ST_UNAUTHENTICATED, "not bearer"},
    {"Bearer a b", ST_UNAUTHENTICATED, "contains blanks"},
    {"Bearer 0123456789ab", ST_UNAUTHENTICATED, "longer than 11 bytes"},
    {"Bearer 0123456789a", ST_OK, "0123456789a"},
};

START_TEST(bearer_token)
{
    char out[12];
    struct error err;
    enum status st;

    error_clear(&err);
    st = oidc_bearer_token(bearer_cases[_i].header, out, sizeof(out), &err);
    ck_assert_msg(st == bearer_cases[_i].want, "\"%s\": got %s (%s)",
                  bearer_cases[_i].header ? bearer_cases[_i].header : "(null)", status_name(st),
                  err.message);
    if (st == ST_OK)
        ck_assert_str_eq(out, bearer_cases[_i].token);
    else
        ck_assert_msg(strstr(err.message, bearer_cases[_i].token) != NULL, "\"%s\" lacks \"%s\"",
                      err.message, bearer_cases[_i].token);
}
END_TEST

START_TEST(verify_authorization_header)
{
    struct fake_fetch f = {.doc = K.jwks_a, .max_age = 3600};
    struct oidc_verifier *v;
    struct error err;
    json_t *claims = NULL;
    char *token, *header;
    size_t n;

    atomic_store(&fake_now, NOW);
    v = fetching_verifier(&f);
    token = make_token(HDR_A, NULL, SIGN_A, NOW);
    n = strlen(token) + 8;
    header = xmalloc(n);
    ck_assert(str_printf(header, n, "Bearer %s", token));
    ck_assert_int_eq(oidc_verify_authorization(v, header, &claims, &err), ST_OK);
    ck_assert_str_eq(json_str_or(claims, "email", ""), SA);
    json_decref(claims);
    ck_assert_int_eq(oidc_verify_authorization(v, NULL, &claims, &err), ST_UNAUTHENTICATED);
    ck_assert_str_eq(err.code, "missing_token");
    ck_assert_ptr_null(claims);
    ck_assert_int_eq(atomic_load(&f.calls), 1);
    free(header);
    free(token);
    oidc_verifier_free(v);
}
END_TEST

static const struct {
    const char *value;
    int want;
} max_age_cases[] = {
    {NULL, -1},
    {"", -1},
    {"max-age=60", 60},
    {"public, max-age=19204, must-revalidate, no-transform", 19204},
    {"MAX-AGE=5", 5},
    {"max-age=\"7\"", 7},
    {"max-age = 30", 30},
    {"max-age=abc", -1},
    {"max-age=", -1},
    {"max-age=-5", -1},
    {"max-age=10x", -1},
    {"s-maxage=10", -1},
    {"no-store", 0},
    {"private, no-cache, max-age=100", 0},
    {"max-age=99999999999999", INT32_MAX},
    {"max-age=10, max-age=20", 10},
    {"xmax-age=10", -1},
};

START_TEST(cache_control_max_age)
{
    ck_assert_msg(oidc_cache_control_max_age(max_age_cases[_i].value) == max_age_cases[_i].want,
                  "\"%s\": got %d, want %d",
                  max_age_cases[_i].value ? max_age_cases[_i].value : "(null)",
                  oidc_cache_control_max_age(max_age_cases[_i].value), max_age_cases[_i].want);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("oidc");
    TCase *tc = tcase_create("oidc");

    tcase_add_unchecked_fixture(tc, keys_setup, keys_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, verify_table, 0, ARRAY_SIZE(vcases));
    tcase_add_loop_test(tc, signed_bad_payloads, 0, ARRAY_SIZE(signed_payloads));
    tcase_add_test(tc, unknown_kid_refetches_once);
    tcase_add_loop_test(tc, cache_honours_max_age, 0, ARRAY_SIZE(cache_cases));
    tcase_add_test(tc, fetch_failures);
    tcase_add_test(tc, concurrent_cold_cache_fetches_once);
    tcase_add_test(tc, v1_pem_certificates);
    tcase_add_test(tc, jwks_skips_unusable_keys);
    tcase_add_loop_test(tc, config_errors, 0, ARRAY_SIZE(bad_configs));
    tcase_add_test(tc, local_issuer_tokens_verify);
    tcase_add_test(tc, jwt_sign_rs256_output);
    tcase_add_test(tc, rsa_keys_and_jwk);
    tcase_add_loop_test(tc, bearer_token, 0, ARRAY_SIZE(bearer_cases));
    tcase_add_test(tc, verify_authorization_header);
    tcase_add_loop_test(tc, cache_control_max_age, 0, ARRAY_SIZE(max_age_cases));
    suite_add_tcase(s, tc);
    return s;
}
