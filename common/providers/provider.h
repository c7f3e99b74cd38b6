/*
 * provider.h - the provider port: one AI provider (Gemini image editing,
 * Runway or PixVerse image-to-video) behind one interface.
 *
 * Synchronous providers answer submit() with PROVIDER_DONE and the output
 * bytes. Asynchronous providers answer submit() with PROVIDER_STARTED and a
 * job id; poll() then reports PROVIDER_RUNNING until PROVIDER_DONE with the
 * output bytes too: poll() downloads the finished output itself (provider
 * URLs expire), bounded by out->data's bound and checked for its type.
 *
 * For poll(), PROVIDER_TRANSIENT means "this poll failed, poll again later"
 * (the job may well be fine), unless resubmit is set: then the job itself
 * ended in a failure that a new submission may not repeat. poll() never
 * submits anything itself.
 *
 * Every answer is classified (reference providers.md section 4):
 * PROVIDER_TRANSIENT may succeed if retried later (network, 5xx, 429,
 * provider concurrency limits); PROVIDER_PERMANENT will not (bad input,
 * moderation, no credits; pause_batch is set for the latter).
 * Implementations are thread-safe: one provider serves every request.
 */
#ifndef PROVIDERS_PROVIDER_H
#define PROVIDERS_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/error.h"

enum provider_outcome {
    PROVIDER_DONE,
    PROVIDER_STARTED,
    PROVIDER_RUNNING,
    PROVIDER_TRANSIENT,
    PROVIDER_PERMANENT,
};

const char *provider_outcome_name(enum provider_outcome o);

struct provider_input {
    const char *batch_id;
    const char *item_id;
    const char *type;       /* virtual-staging, video-runway, video-pixverse */
    const char *image_url;  /* the partner's image */
    const json_t *metadata; /* the item's metadata (prompt...), may be NULL */
    const json_t *options;  /* the batch's options, may be NULL */
    int attempt;            /* 1 for the first attempt at this item (caps model retries) */
    /* The image, when the caller already fetched it (result cache); NULL: fetch image_url. */
    const void *image_data;
    size_t image_len;
    const char *image_type;
};

struct provider_output {
    enum provider_outcome outcome;
    struct buf data;         /* DONE (sync): output bytes */
    char content_type[64];   /* DONE: "image/png", "video/mp4" */
    char output_url[2048];   /* DONE (async): where the output was downloaded from, without its
                                query (signed URLs carry secrets); for logs */
    char job_id[128];        /* STARTED */
    double progress;         /* RUNNING: 0..1 when known */
    char error_code[48];     /* TRANSIENT/PERMANENT: stable code, e.g. "provider_blocked" */
    char error_message[256]; /* lowercase, names the provider and the reason */
    int retry_after_s;       /* TRANSIENT: the provider asked us to wait */
    /*
     * poll() only, with TRANSIENT: the job itself ended in a failure on the
     * provider's side (Runway FAILED with INTERNAL..., PixVerse status 8) that
     * a NEW submission may not repeat. Polling it again is pointless: the
     * caller submits the item again and caps how often (providers.md section
     * 4: once or twice). A TRANSIENT without it means "this poll failed, poll
     * again later". Never set by submit().
     */
    bool resubmit;
    bool pause_batch; /* PERMANENT: out of credits */
};

/* Initialises out with a data bound of max_bytes; release frees data. */
void provider_output_init(struct provider_output *out, size_t max_bytes);
void provider_output_release(struct provider_output *out);

/* Sets a failure outcome with a formatted message. */
void provider_output_fail(struct provider_output *out, enum provider_outcome outcome,
                          const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct provider {
    const char *name; /* "gemini", "runway", "pixverse" */
    bool async;
    void *state;
    /* submit/poll return ST_OK when out->outcome says what happened. */
    enum status (*submit)(struct provider *p, const struct provider_input *in,
                          struct provider_output *out);
    enum status (*poll)(struct provider *p, const char *job_id, struct provider_output *out);
    enum status (*cancel)(struct provider *p, const char *job_id, struct error *err);
    void (*free)(struct provider *p);
};

void provider_free(struct provider *p);

#endif
