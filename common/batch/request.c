#include "batch/request.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "core/netaddr.h"
#include "core/util.h"

static const char *known_types[] = {"virtual-staging", "video-runway", "video-pixverse"};

bool batch_type_known(const char *type)
{
    size_t i;

    for (i = 0; type && i < ARRAY_SIZE(known_types); i++)
        if (strcmp(type, known_types[i]) == 0)
            return true;
    return false;
}

enum status url_check(const char *url, bool allow_insecure, struct error *err)
{
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL;
    enum status st = ST_OK;
    bool literal;

    if (strlen(url) > URL_MAX_LEN)
        return error_set(err, ST_INVALID, "url_too_long", "url longer than %d bytes", URL_MAX_LEN);
    u = curl_url();
    if (!u)
        BUG("curl_url: out of memory");
    /* No default scheme: a partner URL must be absolute. */
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        st = error_set(err, ST_INVALID, "invalid_url", "not an absolute url");
        goto out;
    }
    if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
        st = error_set(err, ST_INVALID, "invalid_url", "scheme %s is not http(s)", scheme);
        goto out;
    }
    if (!allow_insecure && strcmp(scheme, "https") != 0) {
        st = error_set(err, ST_INVALID, "insecure_url", "url must use https");
        goto out;
    }
    if (!allow_insecure && !netaddr_host_allowed(host, &literal)) {
        st = error_set(err, ST_INVALID, "private_url", "host %.100s is not a public address", host);
        goto out;
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return st;
}

static enum status check_image(const json_t *v, long long index, const struct create_limits *lim,
                               enum lang lang, struct create_image *out, struct error *err)
{
    const json_t *url = v, *meta = NULL;
    struct error uerr;

    if (json_is_object(v)) {
        url = json_object_get(v, "url");
        meta = json_object_get(v, "metadata");
        if (json_is_null(meta))
            meta = NULL;
        if (meta && !json_is_object(meta))
            return lang_error(err, lang, ST_INVALID, "invalid_metadata", index);
    }
    if (!json_is_string(url) || json_string_length(url) == 0)
        return lang_error(err, lang, ST_INVALID, "invalid_image", index);
    if (url_check(json_string_value(url), lim->allow_insecure_urls, &uerr) != ST_OK) {
        if (strcmp(uerr.code, "url_too_long") == 0)
            return lang_error(err, lang, ST_INVALID, uerr.code, index, (long long)URL_MAX_LEN);
        return lang_error(err, lang, ST_INVALID, uerr.code, index);
    }
    out->url = json_string_value(url);
    out->metadata = meta;
    return ST_OK;
}

static bool valid_user_id(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n >= 128)
        return false;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '/')
            return false;
    return true;
}

enum status create_request_parse(const json_t *body, const struct create_limits *lim,
                                 enum lang lang, struct create_request *out, struct error *err)
{
    const json_t *images, *v;
    size_t i;
    enum status st;

    memset(out, 0, sizeof(*out));
    out->type = "virtual-staging";
    out->priority = "normal";
    if (!json_is_object(body))
        return lang_error(err, lang, ST_INVALID, "invalid_body");

    /* The seed's order of checks: images, emptiness, size, then userId. */
    images = json_object_get(body, "images");
    if (!json_is_array(images))
        return lang_error(err, lang, ST_INVALID, "images_not_array");
    if (json_array_size(images) == 0)
        return lang_error(err, lang, ST_INVALID, "images_empty");
    if ((int64_t)json_array_size(images) > lim->max_images)
        return lang_error(err, lang, ST_INVALID, "too_many_images", (long long)lim->max_images);

    v = json_object_get(body, "userId");
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
        return lang_error(err, lang, ST_INVALID, "user_id_required");
    if (!json_is_string(v) || !valid_user_id(json_string_value(v)))
        return lang_error(err, lang, ST_INVALID, "invalid_user_id");
    out->user_id = json_string_value(v);

    v = json_object_get(body, "type");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return lang_error(err, lang, ST_INVALID, "invalid_type");
        if (!batch_type_known(json_string_value(v)))
            return lang_error(err, lang, ST_INVALID, "unknown_type", json_string_value(v));
        out->type = json_string_value(v);
    }

    v = json_object_get(body, "priority");
    if (v && !json_is_null(v)) {
        const char *p = json_string_value(v);

        if (!p || (strcmp(p, "high") && strcmp(p, "normal") && strcmp(p, "low")))
            return lang_error(err, lang, ST_INVALID, "invalid_priority");
        out->priority = p;
    }

    v = json_object_get(body, "webhookUrl");
    if (v && !json_is_null(v)) {
        struct error uerr;

        if (!json_is_string(v))
            return lang_error(err, lang, ST_INVALID, "invalid_webhook_url", "not a string");
        if (url_check(json_string_value(v), lim->allow_insecure_urls, &uerr) != ST_OK)
            return lang_error(err, lang, ST_INVALID, "invalid_webhook_url", uerr.message);
        out->webhook_url = json_string_value(v);
    }

    v = json_object_get(body, "options");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v))
            return lang_error(err, lang, ST_INVALID, "invalid_options", "not an object");
        out->options = v;
    }

    v = json_object_get(body, "dryRun");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return lang_error(err, lang, ST_INVALID, "invalid_dry_run");
        out->dry_run = json_is_true(v);
    }

    out->n_images = json_array_size(images);
    out->images = xcalloc(out->n_images, sizeof(*out->images));
    json_array_foreach(images, i, v)
    {
        st = check_image(v, (long long)i, lim, lang, &out->images[i], err);
        if (st != ST_OK) {
            create_request_release(out);
            return st;
        }
    }
    return ST_OK;
}

void create_request_release(struct create_request *r)
{
    free(r->images);
    r->images = NULL;
    r->n_images = 0;
}
