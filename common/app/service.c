#include "app/service.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

#define SERVICE_VERSION "0.1.0"

struct service_ctx {
    const struct service_def *def;
    void *state;
};

static void healthz(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    UNUSED(ud);
    http_respond_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static void readyz(struct http_request *req, struct http_response *resp, void *ud)
{
    struct service_ctx *ctx = ud;
    struct error err;

    UNUSED(req);
    error_clear(&err);
    if (http_server_draining(http_request_server(req))) {
        error_set(&err, ST_UNAVAILABLE, "draining", "shutting down");
        http_respond_error(resp, &err);
        return;
    }
    if (ctx->def->ready && ctx->def->ready(ctx->state, &err) != ST_OK) {
        error_prefix(&err, "not ready");
        err.status = ST_UNAVAILABLE;
        http_respond_error(resp, &err);
        return;
    }
    http_respond_json(resp, 200, json_pack("{s:s}", "status", "ready"));
}

static void metrics(struct http_request *req, struct http_response *resp, void *ud)
{
    struct buf out;

    UNUSED(req);
    UNUSED(ud);
    buf_init(&out, 16 << 20);
    if (metrics_render(&out) != ST_OK) {
        struct error err;

        error_set(&err, ST_INTERNAL, NULL, "metrics exceed 16 MiB");
        http_respond_error(resp, &err);
    } else {
        http_respond_bytes(resp, 200, "text/plain; version=0.0.4; charset=utf-8", out.data,
                           out.len);
    }
    buf_release(&out);
}

static int usage(const struct service_def *def, int code)
{
    settings_print_help(code ? stderr : stdout, def->name, def->summary, def->scope);
    return code;
}

int service_main(int argc, char **argv, const struct service_def *def)
{
    struct settings settings;
    struct http_server_options opts;
    struct service_ctx ctx = {def, NULL};
    struct http_server *srv = NULL;
    struct error err;
    enum log_severity sev = LOG_INFO;
    sigset_t stop;
    int sig = 0, code = 1;
    unsigned left;

    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
            return usage(def, 0);
        if (strcmp(argv[1], "--version") == 0) {
            printf("%s %s\n", def->name, SERVICE_VERSION);
            return 0;
        }
        if (!def->command) {
            fprintf(stderr, "%s: unknown argument \"%s\"\n", def->name, argv[1]);
            return usage(def, 2);
        }
    }
    error_clear(&err);
    if (settings_load(&settings, def->scope, &err) != ST_OK) {
        fprintf(stderr, "%s: %s (see %s --help)\n", def->name, err.message, def->name);
        settings_release(&settings);
        return 2;
    }
    if (argc > 1) {
        log_init(def->name, settings.project_id, LOG_WARNING, STDERR_FILENO);
        code = def->command(argc, argv, &settings);
        settings_release(&settings);
        if (code < 0) {
            fprintf(stderr, "%s: unknown argument \"%s\"\n", def->name, argv[1]);
            return usage(def, 2);
        }
        return code;
    }
    log_severity_parse(settings.log_level, &sev);
    log_init(def->name, settings.project_id, sev, STDOUT_FILENO);

    /* Signals are taken synchronously by sigwait below; every thread created from here on
     * inherits the mask, so none of them is interrupted by SIGTERM. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    memset(&opts, 0, sizeof(opts));
    opts.bind_address = settings.bind_address;
    opts.port = (int)settings.port;
    opts.max_body_bytes = (size_t)settings.max_body_bytes;
    opts.connection_limit = (unsigned)settings.max_connections;
    opts.thread_stack_bytes = (size_t)settings.thread_stack_kb * 1024;
    opts.service = def->name;
    opts.access_log = true;
    opts.localize = def->localize;
    srv = http_server_new(&opts, &err);
    if (!srv)
        goto fail;
    http_server_route(srv, "GET", "/healthz", 0, healthz, &ctx);
    http_server_route(srv, "GET", "/readyz", 0, readyz, &ctx);
    http_server_route(srv, "GET", "/metrics", 0, metrics, &ctx);
    if (def->setup(&settings, srv, &ctx.state, &err) != ST_OK)
        goto fail;
    if (http_server_start(srv, &err) != ST_OK)
        goto fail;
    log_write(LOG_NOTICE,
              json_pack("{s:i, s:s}", "port", http_server_port(srv), "backend", settings.backend),
              "%s listening on %s:%d", def->name, settings.bind_address, http_server_port(srv));

    while (sigwait(&stop, &sig) != 0)
        ;
    log_write(LOG_NOTICE, json_pack("{s:i}", "graceMs", (int)settings.shutdown_grace_ms),
              "%s received %s, draining", def->name, sig == SIGTERM ? "SIGTERM" : "SIGINT");
    if (def->draining)
        def->draining(ctx.state);
    left = http_server_shutdown(srv, (int)settings.shutdown_grace_ms);
    if (left > 0) {
        /* The grace is spent: the platform kills us soon anyway. The queue redelivers
         * whatever these requests were doing, so leaving is safe. */
        log_write(LOG_WARNING, json_pack("{s:i}", "abandoned", (int)left),
                  "%s stopping with %u requests still running", def->name, left);
        fflush(stdout);
        _exit(0);
    }
    if (def->teardown)
        def->teardown(ctx.state);
    http_server_free(srv);
    log_write(LOG_NOTICE, NULL, "%s stopped", def->name);
    settings_release(&settings);
    return 0;

fail:
    log_write(LOG_CRITICAL, NULL, "%s cannot start: %s", def->name, err.message);
    fprintf(stderr, "%s: cannot start: %s\n", def->name, err.message);
    if (srv)
        http_server_free(srv);
    if (def->teardown && ctx.state)
        def->teardown(ctx.state);
    settings_release(&settings);
    return code;
}
