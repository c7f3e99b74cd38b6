/*
 * The queue contract suite on the Cloud Tasks adapter, with fake-cloudtasks
 * validating the requests and dispatching the tasks (one fake per test,
 * configured with the suite's queue definition).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "check_main.h"
#include "contract/queue_contract.h"
#include "core/util.h"
#include "fake_proc.h"
#include "gcp/auth.h"
#include "gcp/jwt.h"
#include "http/client.h"
#include "queue/cloudtasks_queue.h"

#define PROJECT "contract-project"
#define INVOKER "tasks-invoker@contract-project.iam.gserviceaccount.com"
#define ISSUER  "https://accounts.google.com"

struct ct_env {
    char dir[64];
    char config_path[128];
    char jwks_url[128];
    struct fake_proc fake;
    struct http_client *client;
    struct gcp_auth *auth;
};

/*
 * The fake Google issuer's key, made once for the run and handed to every
 * fake: RSA generation costs a good part of a second per fake otherwise.
 */
static char key_dir[64], key_path[128];

static void key_remove(void)
{
    unlink(key_path);
    rmdir(key_dir);
}

static const char *issuer_key(void)
{
    struct error err;
    char *pem = NULL;
    FILE *f;

    if (key_path[0])
        return key_path;
    str_copy(key_dir, sizeof(key_dir), "/tmp/queue-ct-key-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(key_dir));
    ck_assert(str_printf(key_path, sizeof(key_path), "%s/issuer.pem", key_dir));
    ck_assert_int_eq(jwt_rsa_generate(0, &pem, &err), ST_OK);
    f = fopen(key_path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(pem, f);
    fclose(f);
    free(pem);
    atexit(key_remove);
    return key_path;
}

/* The queue definition as deploy/queue.json spells it, for the fake. */
static void write_config(const struct queue_config *qc, const char *path)
{
    char min[32], max[32], deadline[32];
    json_t *doc;

    ck_assert(str_printf(min, sizeof(min), "%gs", qc->retry.min_backoff));
    ck_assert(str_printf(max, sizeof(max), "%gs", qc->retry.max_backoff));
    ck_assert(str_printf(deadline, sizeof(deadline), "%gs", qc->dispatch_deadline_s));
    doc = json_pack(
        "{s:s, s:s, s:{s:f, s:i}, s:{s:i, s:s, s:s, s:s, s:i}, s:s}", "name", qc->name, "location",
        qc->location, "rateLimits", "maxDispatchesPerSecond", qc->max_dispatches_per_second,
        "maxConcurrentDispatches", qc->max_concurrent_dispatches, "retryConfig", "maxAttempts",
        qc->retry.max_attempts, "maxRetryDuration", "0s", "minBackoff", min, "maxBackoff", max,
        "maxDoublings", qc->retry.max_doublings, "dispatchDeadline", deadline);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(json_dump_file(doc, path, 0), 0);
    json_decref(doc);
}

static void ct_open(const struct queue_config *qc, const char *target_url, const char *audience,
                    struct queue_contract_env *env)
{
    struct ct_env *c = xcalloc(1, sizeof(*c));
    struct gcp_auth_options ao = {.none = true};
    struct cloudtasks_options o;
    char config_env[160], key_env[160];
    const char *fake_env[] = {config_env, key_env, "FAKE_PROJECT=" PROJECT, NULL};
    struct error err;

    str_copy(c->dir, sizeof(c->dir), "/tmp/queue-ct-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(c->dir));
    ck_assert(str_printf(c->config_path, sizeof(c->config_path), "%s/queue.json", c->dir));
    write_config(qc, c->config_path);
    ck_assert(str_printf(config_env, sizeof(config_env), "FAKE_QUEUE_CONFIG=%s", c->config_path));
    ck_assert(str_printf(key_env, sizeof(key_env), "FAKE_ISSUER_KEY=%s", issuer_key()));
    ck_assert_msg(fake_proc_start(&c->fake, FAKE_TASKS_BIN, fake_env),
                  "fake-cloudtasks did not start");
    c->client = http_client_new(NULL);
    c->auth = gcp_auth_new(&ao, c->client, &err); /* the fake, like the emulator, needs none */
    ck_assert_ptr_nonnull(c->auth);

    memset(&o, 0, sizeof(o));
    o.base_url = c->fake.base;
    o.project = PROJECT;
    o.location = qc->location;
    o.queue = qc->name;
    o.target_url = target_url;
    o.service_account = INVOKER;
    o.audience = audience;
    o.dispatch_deadline_s = qc->dispatch_deadline_s;
    o.auth = c->auth;
    o.client = c->client;
    env->q = queue_cloudtasks_open(&o, &err);
    ck_assert_msg(env->q != NULL, "queue_cloudtasks_open: %s", err.message);

    ck_assert(str_printf(c->jwks_url, sizeof(c->jwks_url), "%s/oauth2/v3/certs", c->fake.base));
    env->issuer = ISSUER;
    env->email = INVOKER;
    env->jwks_url = c->jwks_url;
    env->state = c;
}

static void ct_close(struct queue_contract_env *env)
{
    struct ct_env *c = env->state;

    queue_close(env->q);
    ck_assert_msg(fake_proc_stop(&c->fake), "fake-cloudtasks did not exit cleanly");
    gcp_auth_free(c->auth);
    http_client_free(c->client);
    unlink(c->config_path);
    rmdir(c->dir);
    free(c);
}

static const struct queue_contract_adapter cloudtasks_adapter = {
    .open = ct_open,
    .close = ct_close,
};

static Suite *suite(void)
{
    return queue_contract_suite("queue_cloudtasks", &cloudtasks_adapter);
}
