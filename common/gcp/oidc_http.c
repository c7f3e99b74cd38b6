/*
 * oidc_http.c - the key fetch of oidc.h over the project's HTTP client.
 * Kept apart from oidc.c so that the verifier builds and tests without the
 * HTTP client; link it where a struct http_client exists.
 */
#include "gcp/oidc.h"

#include "core/buf.h"
#include "core/util.h"
#include "http/client.h"

#define FETCH_TIMEOUT_MS 10000

enum status oidc_http_fetch(void *ud, const char *url, struct buf *body, int *max_age_s,
                            struct error *err)
{
    struct http_client *client = ud;
    struct http_result res;
    struct http_call call = {
        .method = "GET",
        .url = url,
        .timeout_ms = FETCH_TIMEOUT_MS,
        .max_response_bytes = body->max,
        .idempotent = true,
    };
    static const char *const headers[] = {"Accept: application/json", NULL};
    enum status st;

    ASSERT(client != NULL);
    *max_age_s = -1;
    call.headers = headers;
    http_result_init(&res);
    st = http_client_do(client, &call, &res, err);
    if (st != ST_OK) {
        error_prefix(err, "cannot get %s", url);
        goto out;
    }
    if (res.status != 200) {
        st =
            error_set(err, ST_UNAVAILABLE, NULL, "cannot get %s: http status %ld", url, res.status);
        goto out;
    }
    if ((st = buf_append(body, res.body.data ? res.body.data : "", res.body.len)) != ST_OK) {
        st = error_set(err, ST_TOO_LARGE, NULL, "cannot get %s: response longer than %zu bytes",
                       url, body->max);
        goto out;
    }
    *max_age_s = oidc_cache_control_max_age(http_result_header(&res, "Cache-Control"));
out:
    http_result_release(&res);
    return st;
}
