#include "gcp/jwt.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "core/buf.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/util.h"

/*
 * Describes the oldest OpenSSL error of this thread into out and empties
 * the thread's error queue, so that a later, unrelated failure is not
 * reported with this one's reason.
 */
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

/* Copies the contents of a memory BIO into a malloc'd NUL-terminated string. */
static char *bio_take_string(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *s;

    if (n < 0)
        n = 0;
    s = xmalloc((size_t)n + 1);
    if (n > 0)
        memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

/* Refuses a passphrase prompt: keys must be unencrypted, and a server has no terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *ud)
{
    UNUSED(buf);
    UNUSED(size);
    UNUSED(rwflag);
    UNUSED(ud);
    return 0;
}

static enum status check_rsa_key(const EVP_PKEY *key, const char *what, struct error *err)
{
    int bits;

    if (!EVP_PKEY_is_a(key, "RSA"))
        return error_set(err, ST_INVALID, NULL, "%s is not an rsa key", what);
    bits = EVP_PKEY_get_bits(key);
    if (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS)
        return error_set(err, ST_INVALID, NULL, "%s has %d bits, outside [%d, %d]", what, bits,
                         JWT_RSA_MIN_BITS, JWT_RSA_MAX_BITS);
    return ST_OK;
}

enum status jwt_rsa_generate(unsigned bits, char **private_pem, struct error *err)
{
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;
    char why[160];
    enum status st = ST_OK;

    *private_pem = NULL;
    if (bits == 0)
        bits = JWT_RSA_GEN_BITS;
    if (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS) {
        st = error_set(err, ST_INVALID, NULL, "cannot generate rsa key: %u bits outside [%d, %d]",
                       bits, JWT_RSA_MIN_BITS, JWT_RSA_MAX_BITS);
        goto out;
    }
    key = EVP_RSA_gen(bits);
    if (!key) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot generate rsa key: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot write rsa key as pem: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    *private_pem = bio_take_string(bio);
out:
    BIO_free(bio);
    EVP_PKEY_free(key);
    return st;
}

enum status jwt_key_load_private(const char *pem, EVP_PKEY **out, struct error *err)
{
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;
    size_t len;
    char why[160];
    enum status st = ST_OK;

    *out = NULL;
    if (!pem) {
        st = error_set(err, ST_INVALID, NULL, "cannot load private key: no pem given");
        goto out;
    }
    len = strnlen(pem, JWT_KEY_PEM_MAX + 1);
    if (len > JWT_KEY_PEM_MAX) {
        st = error_set(err, ST_INVALID, NULL, "cannot load private key: pem longer than %d bytes",
                       JWT_KEY_PEM_MAX);
        goto out;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot load private key: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (!key) {
        st = error_set(err, ST_INVALID, NULL, "cannot load private key: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    if ((st = check_rsa_key(key, "private key", err)) != ST_OK)
        goto out;
    *out = key;
    key = NULL;
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    return st;
}

enum status jwt_key_public_pem(const EVP_PKEY *key, char **out, struct error *err)
{
    BIO *bio = NULL;
    char why[160];
    enum status st = ST_OK;

    *out = NULL;
    bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PUBKEY(bio, key)) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot write public key as pem: %s",
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    *out = bio_take_string(bio);
out:
    BIO_free(bio);
    return st;
}

enum status jwt_key_id(const EVP_PKEY *key, char kid[JWT_KID_LEN + 1], struct error *err)
{
    unsigned char *der = NULL;
    char hex[65];
    char why[160];
    int n;

    kid[0] = '\0';
    n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return error_set(err, ST_INTERNAL, NULL, "cannot encode public key: %s",
                         openssl_reason(why, sizeof(why)));
    sha256_hex(der, (size_t)n, hex);
    OPENSSL_free(der);
    memcpy(kid, hex, JWT_KID_LEN);
    kid[JWT_KID_LEN] = '\0';
    return ST_OK;
}

/* Sets obj[field] to the unpadded base64url of the big-endian bytes of key's parameter name. */
static enum status jwk_set_bn(json_t *obj, const char *field, const EVP_PKEY *key, const char *name,
                              struct error *err)
{
    BIGNUM *bn = NULL;
    unsigned char *bytes = NULL;
    struct buf b;
    char why[160];
    int n;
    enum status st = ST_OK;

    buf_init(&b, 4 * JWT_RSA_MAX_BITS / 8);
    if (!EVP_PKEY_get_bn_param(key, name, &bn)) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot read rsa parameter %s: %s", name,
                       openssl_reason(why, sizeof(why)));
        goto out;
    }
    n = BN_num_bytes(bn);
    bytes = xmalloc(n > 0 ? (size_t)n : 1);
    BN_bn2bin(bn, bytes);
    if (base64_encode(&b, bytes, (size_t)n, B64_URL) != ST_OK) {
        st = error_set(err, ST_INTERNAL, NULL, "rsa parameter %s is too large", name);
        goto out;
    }
    json_object_set_new(obj, field, json_string(buf_str(&b)));
out:
    buf_release(&b);
    free(bytes);
    BN_free(bn);
    return st;
}

enum status jwt_key_jwk(const EVP_PKEY *key, json_t **out, struct error *err)
{
    json_t *jwk = NULL;
    char kid[JWT_KID_LEN + 1];
    enum status st;

    *out = NULL;
    if ((st = check_rsa_key(key, "key", err)) != ST_OK)
        goto out;
    if ((st = jwt_key_id(key, kid, err)) != ST_OK)
        goto out;
    jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "alg", "RS256", "use", "sig", "kid", kid);
    if (!jwk)
        BUG("cannot build jwk object");
    if ((st = jwk_set_bn(jwk, "n", key, OSSL_PKEY_PARAM_RSA_N, err)) != ST_OK)
        goto out;
    if ((st = jwk_set_bn(jwk, "e", key, OSSL_PKEY_PARAM_RSA_E, err)) != ST_OK)
        goto out;
    *out = jwk;
    jwk = NULL;
out:
    json_decref(jwk);
    return st;
}

enum status jwt_jwks_from_private_pem(const char *private_key_pem, json_t **out, struct error *err)
{
    EVP_PKEY *key = NULL;
    json_t *jwk = NULL;
    enum status st;

    *out = NULL;
    if ((st = jwt_key_load_private(private_key_pem, &key, err)) != ST_OK)
        goto out;
    if ((st = jwt_key_jwk(key, &jwk, err)) != ST_OK)
        goto out;
    *out = json_pack("{s:[o]}", "keys", jwk);
    jwk = NULL; /* stolen by "o", even if json_pack failed */
    if (!*out)
        BUG("cannot build jwks object");
out:
    json_decref(jwk);
    EVP_PKEY_free(key);
    return st;
}

enum status jwt_sign_rs256(const char *private_key_pem, const char *kid, const json_t *claims,
                           char **out, struct error *err)
{
    EVP_PKEY *key = NULL;
    jwt_t *jwt = NULL;
    char *claims_text = NULL;
    char *token = NULL;
    int rc;
    enum status st;

    *out = NULL;
    if (!json_is_object(claims)) {
        st = error_set(err, ST_INVALID, NULL, "cannot sign jwt: claims are not a json object");
        goto out;
    }
    /*
     * Load the key ourselves first: libjwt only says EINVAL, and this also
     * holds signing keys to the size rules verification applies.
     */
    if ((st = jwt_key_load_private(private_key_pem, &key, err)) != ST_OK) {
        error_prefix(err, "cannot sign jwt");
        goto out;
    }
    if ((rc = jwt_new(&jwt)) != 0) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot sign jwt: jwt_new failed (errno %d)", rc);
        goto out;
    }
    rc = jwt_set_alg(jwt, JWT_ALG_RS256, (const unsigned char *)private_key_pem,
                     (int)strlen(private_key_pem));
    if (rc != 0) {
        st =
            error_set(err, ST_INTERNAL, NULL, "cannot sign jwt: jwt_set_alg failed (errno %d)", rc);
        goto out;
    }
    if (kid && (rc = jwt_add_header(jwt, "kid", kid)) != 0) {
        st = error_set(err, ST_INVALID, NULL, "cannot sign jwt: bad key id (errno %d)", rc);
        goto out;
    }
    claims_text = json_dump_compact(claims);
    if (!claims_text || (rc = jwt_add_grants_json(jwt, claims_text)) != 0) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot sign jwt: claims refused by libjwt");
        goto out;
    }
    errno = 0;
    token = jwt_encode_str(jwt);
    if (!token) {
        st = error_set(err, ST_INTERNAL, NULL, "cannot sign jwt: jwt_encode_str failed (errno %d)",
                       errno);
        goto out;
    }
    if (strlen(token) > JWT_TOKEN_MAX_LEN) {
        st = error_set(err, ST_TOO_LARGE, NULL, "cannot sign jwt: token longer than %d bytes",
                       JWT_TOKEN_MAX_LEN);
        goto out;
    }
    *out = token;
    token = NULL;
out:
    free(token);
    free(claims_text);
    jwt_free(jwt);
    EVP_PKEY_free(key);
    /* libjwt signs with OpenSSL and may leave errors queued on this thread. */
    ERR_clear_error();
    return st;
}
