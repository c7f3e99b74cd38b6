/*
 * The queue contract suite on the local queue: a fresh SQLite file per
 * test, the local dispatcher pushing with ID tokens from a local issuer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "contract/queue_contract.h"
#include "core/util.h"
#include "gcp/jwt.h"
#include "gcp/oidc.h"
#include "http/client.h"
#include "queue/local_queue.h"

#define ISSUER "https://local-issuer.contract.example"
#define EMAIL  "dispatcher@local.contract.example"

struct local_env {
    char dir[64];
    char path[128];
    struct http_client *client;
    struct oidc_local_issuer *issuer;
    struct dispatcher *d;
};

/* One key for the run: generating RSA keys is slow under the sanitizers. */
static char *key_pem;

static enum status mint(void *ud, const char *audience, char **token, struct error *err)
{
    return oidc_local_issuer_token(ud, audience, token, err);
}

static void local_open(const struct queue_config *qc, const char *target_url, const char *audience,
                       struct queue_contract_env *env)
{
    struct local_env *l = xcalloc(1, sizeof(*l));
    struct oidc_local_issuer_config ic;
    struct dispatcher_options o;
    struct error err;

    if (!key_pem)
        ck_assert_int_eq(jwt_rsa_generate(0, &key_pem, &err), ST_OK);
    str_copy(l->dir, sizeof(l->dir), "/tmp/queue-local-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(l->dir));
    ck_assert(str_printf(l->path, sizeof(l->path), "%s/batch.db", l->dir));
    env->q = queue_local_open(l->path, qc, &err);
    ck_assert_msg(env->q != NULL, "queue_local_open: %s", err.message);

    memset(&ic, 0, sizeof(ic));
    ic.private_key_pem = key_pem;
    ic.issuer = ISSUER;
    ic.email = EMAIL;
    l->issuer = oidc_local_issuer_new(&ic, &err);
    ck_assert_msg(l->issuer != NULL, "issuer: %s", err.message);
    l->client = http_client_new(NULL);

    memset(&o, 0, sizeof(o));
    o.sqlite_path = l->path;
    o.qc = qc;
    o.target_url = target_url;
    o.audience = audience;
    o.mint = mint;
    o.mint_ud = l->issuer;
    o.client = l->client;
    o.poll_interval_ms = 20;
    l->d = dispatcher_start(&o, &err);
    ck_assert_msg(l->d != NULL, "dispatcher_start: %s", err.message);

    env->issuer = ISSUER;
    env->email = EMAIL;
    env->jwks_json = oidc_local_issuer_jwks(l->issuer);
    env->state = l;
}

static void local_close(struct queue_contract_env *env)
{
    struct local_env *l = env->state;
    char p[160];

    dispatcher_stop(l->d, 0);
    queue_close(env->q);
    oidc_local_issuer_free(l->issuer);
    http_client_free(l->client);
    unlink(l->path);
    str_printf(p, sizeof(p), "%s-wal", l->path);
    unlink(p);
    str_printf(p, sizeof(p), "%s-shm", l->path);
    unlink(p);
    rmdir(l->dir);
    free(l);
}

static const struct queue_contract_adapter local_adapter = {
    .open = local_open,
    .close = local_close,
};

static Suite *suite(void)
{
    return queue_contract_suite("queue_local", &local_adapter);
}
