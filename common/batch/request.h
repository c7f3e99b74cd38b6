/*
 * request.h - parsing and validation of POST /api/batch/create.
 *
 * Body: {images: [url | {url, metadata}], type?, userId, priority?,
 *        webhookUrl?, options?, dryRun?}. Everything is validated before
 * anything is written; the first problem is reported with the seed's
 * Portuguese message (or English) and a stable code.
 */
#ifndef BATCH_REQUEST_H
#define BATCH_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "batch/lang.h"
#include "core/error.h"

#define URL_MAX_LEN 2048

struct create_limits {
    int64_t max_images;
    bool allow_insecure_urls; /* http and private/loopback hosts (local demo only) */
};

struct create_image {
    const char *url;        /* borrowed from the request body */
    const json_t *metadata; /* borrowed, may be NULL */
};

struct create_request {
    const char *type; /* defaults to "virtual-staging" (seed) */
    const char *user_id;
    const char *priority;    /* high | normal | low, default normal */
    const char *webhook_url; /* may be NULL */
    const json_t *options;   /* may be NULL */
    bool dry_run;
    size_t n_images;
    struct create_image *images; /* owned array; strings borrowed from the body */
};

/* The processing types the service knows. */
bool batch_type_known(const char *type);

/*
 * Validates body (borrowed; must outlive *out). On success fills *out
 * (release with create_request_release). On failure returns ST_INVALID
 * with a localized message and a stable code (images_not_array,
 * images_empty, too_many_images, user_id_required, unknown_type,
 * invalid_url, insecure_url, private_url, ...).
 */
enum status create_request_parse(const json_t *body, const struct create_limits *limits,
                                 enum lang lang, struct create_request *out, struct error *err);
void create_request_release(struct create_request *r);

/*
 * Checks one partner URL: absolute http(s) URL of at most URL_MAX_LEN bytes,
 * https unless allow_insecure, host not private/loopback/link-local/metadata
 * unless allow_insecure. Returns ST_OK or ST_INVALID with err->code set to
 * invalid_url, url_too_long, insecure_url or private_url (message in
 * English; callers localize).
 */
enum status url_check(const char *url, bool allow_insecure, struct error *err);

#endif
