#include "sim_proc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/timeutil.h"
#include "core/util.h"
#include "http/client.h"

#define ENV_MAX 512

extern char **environ;

static int free_port(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    if (fd < 0)
        return 0;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
        port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

static bool overridden(const char *var, const char *const *overrides)
{
    size_t k, n = strcspn(var, "=");

    if (strncmp(var, "PORT=", 5) == 0 || strncmp(var, "BIND_ADDRESS=", 13) == 0)
        return true;
    for (k = 0; overrides && overrides[k]; k++)
        if (strncmp(var, overrides[k], n) == 0 && overrides[k][n] == '=')
            return true;
    return false;
}

bool sim_proc_start(struct sim_proc *p, const char *bin, const char *const *overrides)
{
    static char port_env[32];
    const char *envp[ENV_MAX];
    char *const argv[] = {(char *)bin, NULL};
    char health[96];
    struct http_client *c;
    size_t n = 0, i;
    int64_t deadline;
    bool up = false;
    int port = free_port();

    memset(p, 0, sizeof(*p));
    if (port == 0)
        return false;
    snprintf(port_env, sizeof(port_env), "PORT=%d", port);
    snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", port);
    for (i = 0; environ[i] && n < ENV_MAX - 64; i++)
        if (!overridden(environ[i], overrides))
            envp[n++] = environ[i];
    envp[n++] = port_env;
    envp[n++] = "BIND_ADDRESS=127.0.0.1";
    for (i = 0; overrides && overrides[i] && n < ENV_MAX - 1; i++)
        envp[n++] = overrides[i];
    envp[n] = NULL;

    p->pid = fork();
    if (p->pid < 0)
        return false;
    if (p->pid == 0) {
        execve(bin, argv, (char *const *)envp);
        _exit(127);
    }
    c = http_client_new(NULL);
    snprintf(health, sizeof(health), "%s/healthz", p->url);
    deadline = time_mono_ms() + 20000;
    while (!up && time_mono_ms() < deadline) {
        struct http_call call = {.method = "GET", .url = health, .timeout_ms = 1000};
        struct http_result res;
        struct error err;

        http_result_init(&res);
        up = http_client_do(c, &call, &res, &err) == ST_OK && res.status == 200;
        http_result_release(&res);
        if (!up)
            time_sleep_ms(50);
    }
    http_client_free(c);
    if (!up) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    return up;
}

int sim_proc_stop(struct sim_proc *p)
{
    int64_t deadline = time_mono_ms() + 20000;
    int wstatus = 0;
    pid_t got = 0;

    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    while (time_mono_ms() < deadline && (got = waitpid(p->pid, &wstatus, WNOHANG)) == 0)
        time_sleep_ms(20);
    if (got != p->pid) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &wstatus, 0);
        p->pid = 0;
        return -1;
    }
    p->pid = 0;
    return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}
