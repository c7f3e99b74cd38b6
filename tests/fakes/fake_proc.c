#include "fake_proc.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"

#define START_TIMEOUT_MS 10000
#define ENV_MAX          512

#define LIVE_MAX 16

extern char **environ;

/* Fakes started and not yet stopped, for fake_proc_stop_all(). */
static pid_t live[LIVE_MAX];

static void live_set(pid_t old, pid_t now)
{
    size_t i;

    for (i = 0; i < LIVE_MAX; i++) {
        if (live[i] == old) {
            live[i] = now;
            return;
        }
    }
}

static void reap(pid_t pid, int *status)
{
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
}

void fake_proc_stop_all(void)
{
    size_t i;
    int status;

    for (i = 0; i < LIVE_MAX; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGTERM);
            reap(live[i], &status);
            live[i] = 0;
        }
    }
}

bool fake_proc_start(struct fake_proc *p, const char *bin, const char *const *env)
{
    char *argv[] = {(char *)bin, NULL};
    char *envp[ENV_MAX], line[128];
    posix_spawn_file_actions_t fa;
    int64_t end = time_mono_ms() + START_TIMEOUT_MS;
    size_t n = 0, i, len = 0;
    int fds[2], rc;
    int64_t port;

    memset(p, 0, sizeof(*p));
    /* The caller's environment, then ours: later entries do not override in glibc, so drop
     * names we set. */
    for (i = 0; environ[i] && n < ENV_MAX - 64; i++) {
        bool ours = str_starts_with(environ[i], "PORT=");
        size_t k;

        for (k = 0; env && env[k] && !ours; k++) {
            const char *eq = strchr(env[k], '=');

            ours = eq && strncmp(environ[i], env[k], (size_t)(eq - env[k]) + 1) == 0;
        }
        if (!ours)
            envp[n++] = environ[i];
    }
    for (i = 0; env && env[i] && n < ENV_MAX - 2; i++)
        envp[n++] = (char *)env[i];
    envp[n++] = "PORT=0";
    envp[n] = NULL;

    if (pipe(fds) != 0)
        return false;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    rc = posix_spawn(&p->pid, bin, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s\n", bin, strerror(rc));
        close(fds[0]);
        p->pid = 0;
        return false;
    }
    /* Read up to the first newline: "PORT=<n>". */
    while (len < sizeof(line) - 1) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int64_t left = end - time_mono_ms();
        ssize_t got;

        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        got = read(fds[0], line + len, 1);
        if (got <= 0)
            break;
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(fds[0]);
    if (!str_starts_with(line, "PORT=") || !str_to_i64(line + 5, 1, 65535, &port)) {
        fprintf(stderr, "%s did not report its port (got \"%s\")\n", bin, line);
        fake_proc_stop(p);
        p->pid = 0;
        return false;
    }
    live_set(0, p->pid);
    p->port = (int)port;
    str_printf(p->base, sizeof(p->base), "http://127.0.0.1:%d", p->port);
    return true;
}

bool fake_proc_stop(struct fake_proc *p)
{
    int status = 0;

    if (p->pid <= 0)
        return false;
    kill(p->pid, SIGTERM);
    reap(p->pid, &status);
    live_set(p->pid, 0);
    p->pid = 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

json_t *fake_proc_call(struct http_client *c, const struct fake_proc *p, const char *method,
                       const char *path, const json_t *body, long *status)
{
    struct http_call call = {.method = method, .timeout_ms = 10000};
    json_t *out = NULL;
    struct error err;
    char url[512];

    *status = 0;
    if (!str_printf(url, sizeof(url), "%s%s", p->base, path))
        return NULL;
    call.url = url;
    if (http_client_json(c, &call, body, status, &out, &err) != ST_OK)
        fprintf(stderr, "%s %s: %s\n", method, url, err.message);
    return out;
}

int64_t fake_proc_stat(struct http_client *c, const struct fake_proc *p, const char *field)
{
    long status;
    json_t *stats = fake_proc_call(c, p, "GET", "/fake/stats", NULL, &status);
    int64_t v = status == 200 && stats ? json_int_or(stats, field, -1) : -1;

    json_decref(stats);
    return v;
}
