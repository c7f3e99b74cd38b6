/*
 * jwt.h - RS256 JSON Web Tokens and the RSA keys behind them.
 *
 * Signing goes through libjwt (the project's signing dependency). This
 * module never verifies tokens: verification lives in oidc.h and uses
 * OpenSSL directly, because libjwt's jwt_decode() trusts the token's "alg"
 * header and is open to algorithm confusion when handed a PEM key.
 *
 * Keys are RSA, at least 2048 bits. Private keys travel as unencrypted
 * PKCS#8 PEM text ("-----BEGIN PRIVATE KEY-----"); the key id (kid) of a
 * key is the first 16 lowercase hex digits of the SHA-256 of its DER
 * SubjectPublicKeyInfo, so a key always gets the same kid wherever it is
 * loaded.
 */
#ifndef GCP_JWT_H
#define GCP_JWT_H

#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/error.h"

#define JWT_KID_LEN       16   /* hex digits in a derived key id */
#define JWT_RSA_MIN_BITS  2048 /* smaller keys are refused everywhere */
#define JWT_RSA_MAX_BITS  8192
#define JWT_KEY_PEM_MAX   16384 /* bound on PEM text accepted by the loaders */
#define JWT_RSA_GEN_BITS  2048  /* jwt_rsa_generate() with bits == 0 */
#define JWT_TOKEN_MAX_LEN 16384 /* bound on a signed token this module produces */

/* ---- signing ------------------------------------------------------------ */

/*
 * Signs claims (borrowed; must be a JSON object) as a compact JWT with
 * header {"alg":"RS256","typ":"JWT"} plus "kid" when kid is non-NULL.
 * private_key_pem is an RSA private key (PKCS#8 or PKCS#1 PEM).
 * On ST_OK *out is a malloc'd NUL-terminated token the caller frees with
 * free(). ST_INVALID for a bad key or claims that are not an object,
 * ST_TOO_LARGE past JWT_TOKEN_MAX_LEN, ST_INTERNAL when libjwt fails.
 */
enum status jwt_sign_rs256(const char *private_key_pem, const char *kid, const json_t *claims,
                           char **out, struct error *err);

/* ---- RSA keys ----------------------------------------------------------- */

/*
 * Generates an RSA key pair of bits bits (0 means JWT_RSA_GEN_BITS; must
 * lie in [JWT_RSA_MIN_BITS, JWT_RSA_MAX_BITS]) and returns its private key
 * as PKCS#8 PEM in *private_pem (malloc'd, caller frees with free()). Slow:
 * tens to hundreds of milliseconds. ST_INVALID for a bad size,
 * ST_INTERNAL when OpenSSL fails.
 */
enum status jwt_rsa_generate(unsigned bits, char **private_pem, struct error *err);

/*
 * Loads an RSA private key from PEM text (at most JWT_KEY_PEM_MAX bytes;
 * encrypted keys are refused, never prompted for). On ST_OK *out is a new
 * key the caller frees with EVP_PKEY_free(). ST_INVALID for anything that
 * is not an unencrypted RSA private key of an accepted size.
 */
enum status jwt_key_load_private(const char *pem, EVP_PKEY **out, struct error *err);

/*
 * Writes the public half of key as SubjectPublicKeyInfo PEM
 * ("-----BEGIN PUBLIC KEY-----") into *out (malloc'd, caller frees with
 * free()). ST_INTERNAL when OpenSSL fails.
 */
enum status jwt_key_public_pem(const EVP_PKEY *key, char **out, struct error *err);

/* Writes key's id (JWT_KID_LEN hex digits and a NUL) into kid. ST_INTERNAL on failure. */
enum status jwt_key_id(const EVP_PKEY *key, char kid[JWT_KID_LEN + 1], struct error *err);

/*
 * Builds the public JWK of an RSA key:
 * {"kty":"RSA","alg":"RS256","use":"sig","kid":"<jwt_key_id>","n":"...","e":"..."}
 * with n and e base64url-encoded without padding. On ST_OK *out is a new
 * reference the caller frees with json_decref(). ST_INVALID for a key that
 * is not RSA, ST_INTERNAL when OpenSSL fails.
 */
enum status jwt_key_jwk(const EVP_PKEY *key, json_t **out, struct error *err);

/*
 * Loads private_key_pem and builds the JWKS document {"keys":[<jwk>]} that
 * publishes its public half. *out is a new reference (json_decref()).
 * Fails as jwt_key_load_private() and jwt_key_jwk() do.
 */
enum status jwt_jwks_from_private_pem(const char *private_key_pem, json_t **out, struct error *err);

#endif
