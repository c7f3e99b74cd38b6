/*
 * test_signer.h - an RSA key standing in for a service account's in the
 * Cloud Storage suites: signs like gcp_auth_sign() (RSA-SHA256, PKCS#1
 * v1.5), verifies, counts signatures and can be told to fail.
 */
#ifndef TESTS_UNIT_TEST_SIGNER_H
#define TESTS_UNIT_TEST_SIGNER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#include "core/error.h"

#define TEST_SIGNER_EMAIL "signer@my-proj.iam.gserviceaccount.com"

struct test_signer {
    EVP_PKEY *key;
    char *private_pem;
    char *public_pem;
    atomic_int calls;
    atomic_bool fail; /* answer ST_UNAVAILABLE, as signBlob might */
};

/* Generates a 2048-bit key (aborts the test on failure). */
void test_signer_init(struct test_signer *s);
void test_signer_release(struct test_signer *s);

/* A gcs_sign_fn: ud is the struct test_signer. */
enum status test_signer_sign(void *ud, const void *data, size_t len, unsigned char **sig,
                             size_t *sig_len, struct error *err);

/* True when sig is s's RSA-SHA256 signature of data. */
bool test_signer_verify(const struct test_signer *s, const void *data, size_t len,
                        const unsigned char *sig, size_t sig_len);

#endif
