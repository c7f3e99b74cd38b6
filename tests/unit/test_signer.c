#include "test_signer.h"

#include <stdlib.h>

#include <check.h>

#include "gcp/jwt.h"

void test_signer_init(struct test_signer *s)
{
    struct error err;

    s->key = NULL;
    s->private_pem = s->public_pem = NULL;
    atomic_init(&s->calls, 0);
    atomic_init(&s->fail, false);
    ck_assert_int_eq(jwt_rsa_generate(2048, &s->private_pem, &err), ST_OK);
    ck_assert_int_eq(jwt_key_load_private(s->private_pem, &s->key, &err), ST_OK);
    ck_assert_int_eq(jwt_key_public_pem(s->key, &s->public_pem, &err), ST_OK);
}

void test_signer_release(struct test_signer *s)
{
    EVP_PKEY_free(s->key);
    free(s->private_pem);
    free(s->public_pem);
    s->key = NULL;
    s->private_pem = s->public_pem = NULL;
}

enum status test_signer_sign(void *ud, const void *data, size_t len, unsigned char **sig,
                             size_t *sig_len, struct error *err)
{
    struct test_signer *s = ud;
    EVP_MD_CTX *ctx;
    size_t n = 0;
    int ok;

    atomic_fetch_add(&s->calls, 1);
    if (atomic_load(&s->fail))
        return error_set(err, ST_UNAVAILABLE, NULL, "test signer: signBlob unavailable");
    ctx = EVP_MD_CTX_new();
    ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->key) == 1 &&
         EVP_DigestSign(ctx, NULL, &n, data, len) == 1;
    *sig = ok ? malloc(n) : NULL;
    ok = ok && *sig && EVP_DigestSign(ctx, *sig, &n, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        free(*sig);
        *sig = NULL;
        return error_set(err, ST_INTERNAL, NULL, "test signer: openssl failed");
    }
    *sig_len = n;
    return ST_OK;
}

bool test_signer_verify(const struct test_signer *s, const void *data, size_t len,
                        const unsigned char *sig, size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, s->key) == 1 &&
              EVP_DigestVerify(ctx, sig, sig_len, data, len) == 1;

    EVP_MD_CTX_free(ctx);
    return ok;
}
