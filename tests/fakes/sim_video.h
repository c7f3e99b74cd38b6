/*
 * sim_video.h - the asynchronous video APIs of provider-sim: Runway's
 * image-to-video tasks (providers.md 2.9) and PixVerse's upload, generate
 * and result calls (3.9), with jobs that progress over time, each
 * provider's own failures, fault injection, and MP4 outputs (mp4.h).
 *
 * Routes (see sim_video_routes): POST /v1/image_to_video, GET and DELETE
 * /v1/tasks/{id}, POST /openapi/v2/image/upload, POST
 * /openapi/v2/video/img/generate, GET /openapi/v2/video/result/{id},
 * GET /media/{name} (the finished videos).
 */
#ifndef FAKES_SIM_VIDEO_H
#define FAKES_SIM_VIDEO_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"
#include "http/server.h"

/* The simulator-wide fault settings, read at each submit. */
struct sim_faults {
    double fail_rate;    /* fraction of submits answered with an injected error */
    double timeout_rate; /* fraction of submits that sleep timeout_ms before answering */
    int64_t latency_ms;  /* added to every submit */
    int64_t timeout_ms;
};

/* What the video part needs from the rest of the simulator. */
struct sim_env {
    void *ud;
    struct sim_faults (*faults)(void *ud);
    double (*random)(void *ud); /* uniform in [0, 1), seeded */
};

struct sim_video_config {
    int64_t job_ms;               /* how long a job runs (SIM_JOB_MS) */
    int64_t runway_concurrency;   /* active Runway tasks before THROTTLED */
    int64_t pixverse_concurrency; /* active PixVerse videos before ErrCode 500044 */
    const char *runway_key;       /* NULL: any "Bearer key_..." token */
    const char *pixverse_key;     /* NULL: any API-KEY */
};

struct sim_video;

/* New state; cfg strings are borrowed for its life. Never NULL. */
struct sim_video *sim_video_new(const struct sim_video_config *cfg, const struct sim_env *env);
void sim_video_free(struct sim_video *v);

/* Registers the routes above on srv. */
void sim_video_routes(struct sim_video *v, struct http_server *srv);

/* Stats: {"runway": {...}, "pixverse": {...}} members added to out; reset clears counters. */
void sim_video_stats(struct sim_video *v, json_t *out);
void sim_video_stats_reset(struct sim_video *v);

/* Control: runwayDown, pixverseDown, jobMs. */
void sim_video_control_get(struct sim_video *v, json_t *out);
/* Applies the fields present in body; ST_INVALID with err on a bad value (nothing applied). */
enum status sim_video_control_set(struct sim_video *v, const json_t *body, struct error *err);

#endif
