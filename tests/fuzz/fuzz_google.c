/*
 * What Google sends back: Firestore values and streamed query answers, and
 * the ID tokens the worker verifies (everything a token can be made of
 * before its signature is even checked).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "fuzz.h"
#include "gcp/firestore.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"

static const char *const seeds[] = {
    ("[{\"document\":{\"name\":\"projects/p/databases/(default)/documents/b/x\",\"fields\":{\"a\":"
     "{\"integerValue\":\"-9223372036854775808\"},\"m\":{\"mapValue\":{}},\"t\":{"
     "\"timestampValue\":"
     "\"2026-05-01T12:00:00.123456Z\"},\"d\":{\"doubleValue\":\"NaN\"},\"y\":{\"bytesValue\":"
     "\"AAE=\"},\"l\":{\"arrayValue\":{\"values\":[{\"nullValue\":null}]}}}},\"readTime\":\"x\"}]"),
    "[{\"error\":{\"code\":409,\"status\":\"ABORTED\",\"message\":\"m\"}}]",
    "{\"error\":{\"code\":400,\"status\":\"FAILED_PRECONDITION\",\"message\":\"m\"}}",
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2FjY291bnRzLmdvb2dsZS5jb20ifQ.c2ln",
    "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
};

const char *const *fuzz_seeds(size_t *n)
{
    *n = sizeof(seeds) / sizeof(seeds[0]);
    return seeds;
}

static struct oidc_verifier *verifier;

static void make_verifier(void)
{
    struct oidc_config cfg;
    struct error err;
    json_t *jwks = NULL;
    char *pem = NULL, *text;

    if (jwt_rsa_generate(0, &pem, &err) != ST_OK ||
        jwt_jwks_from_private_pem(pem, &jwks, &err) != ST_OK)
        abort();
    text = json_dumps(jwks, JSON_COMPACT);
    memset(&cfg, 0, sizeof(cfg));
    cfg.audience = "https://worker.example/api/batch/worker";
    cfg.email = "tasks@p.iam.gserviceaccount.com";
    cfg.jwks_json = text;
    verifier = oidc_verifier_new(&cfg, &err);
    if (!verifier)
        abort();
    free(text);
    free(pem);
    json_decref(jwks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct error err;
    json_t *body, *elements = NULL, *docs, *plain;
    char *tx = NULL, *token;
    size_t i;
    json_t *doc;

    pthread_once(&once, make_verifier);
    token = malloc(size + 1);
    memcpy(token, data, size);
    token[size] = '\0';
    oidc_verify(verifier, token, NULL, &err);
    free(token);

    body = json_parse((const char *)data, size, &err);
    if (!body)
        return 0;
    if (firestore_parse_stream("runQuery", 200, body, &elements, &tx, &err) == ST_OK) {
        docs = firestore_stream_documents(elements);
        json_array_foreach(docs, i, doc)
        {
            const char *key;
            json_t *v, *fields = firestore_doc_fields(doc);

            json_object_foreach(fields, key, v)
            {
                if (firestore_value_to_json(v, &plain, &err) == ST_OK)
                    json_decref(plain);
            }
        }
        json_decref(docs);
        json_decref(elements);
        free(tx);
    }
    if (firestore_value_to_json(body, &plain, &err) == ST_OK)
        json_decref(plain);
    if (firestore_value_from_json(body, &plain, &err) == ST_OK)
        json_decref(plain);
    json_decref(body);
    return 0;
}
