#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/id.h"
#include "gcp/jwt.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"

/* A retry schedule fast enough for tests, with the production shape. */
static const char *test_queue =
    "{\"name\":\"test-queue\",\"rateLimits\":{\"maxDispatchesPerSecond\":500,"
    "\"maxConcurrentDispatches\":50},\"retryConfig\":{\"maxAttempts\":5,"
    "\"maxRetryDuration\":\"0s\",\"minBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
    "\"maxDoublings\":3},\"dispatchDeadline\":\"30s\"}";

void need(bool ok, const char *fmt, ...)
{
    va_list ap;

    if (ok)
        return;
    fprintf(stderr, "harness: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    need(fd >= 0, "socket failed");
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    need(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "cannot bind a loopback port");
    need(getsockname(fd, (struct sockaddr *)&a, &len) == 0, "getsockname failed");
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    need(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void spawn(struct proc *p, const char *name, const char *bin, const char *dir,
                  const char *const *env_common, const char *const *env_extra)
{
    pid_t pid;

    str_copy(p->name, sizeof(p->name), name);
    snprintf(p->log_path, sizeof(p->log_path), "%s/%s.log", dir, name);
    pid = fork();
    need(pid >= 0, "fork failed");
    if (pid == 0) {
        int fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        const char *const *e;

        /* A test that dies (a failed assertion, a timeout) takes its stack with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        for (e = env_common; e && *e; e++)
            putenv((char *)*e);
        for (e = env_extra; e && *e; e++)
            putenv((char *)*e);
        execl(bin, bin, (char *)NULL);
        _exit(127);
    }
    p->pid = pid;
}

static void wait_healthy(struct stack *s, struct proc *p, int port)
{
    char url[96];
    int64_t deadline = time_mono_ms() + 20000;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", port);
    while (time_mono_ms() < deadline) {
        long status = 0;
        json_t *j = http_json_call(s, "GET", url, NULL, NULL, &status);
        int wstatus;

        json_decref(j);
        if (status == 200)
            return;
        if (waitpid(p->pid, &wstatus, WNOHANG) == p->pid) {
            p->pid = 0;
            need(false, "%s exited during start-up, see %s", p->name, p->log_path);
        }
        time_sleep_ms(50);
    }
    need(false, "%s did not answer /healthz, see %s", p->name, p->log_path);
}

/* Environment strings live as long as the stack (putenv keeps pointers). */
static char env_store[64][512];
static const char *env_common[65];

static void build_env(struct stack *s)
{
    int n = 0;

#define ADD(...)                                                                                   \
    snprintf(env_store[n], sizeof(env_store[n]), __VA_ARGS__), env_common[n] = env_store[n], n++
    ADD("DATA_DIR=%s/data", s->dir);
    ADD("QUEUE_CONFIG=%s/queue.json", s->dir);
    ADD("WORKER_URL=%s", s->worker_url);
    ADD("PUBLIC_URL=%s", s->creator_url);
    ADD("ALLOW_INSECURE_URLS=true");
    ADD("BIND_ADDRESS=127.0.0.1");
    ADD("LOG_LEVEL=INFO");
    ADD("GEMINI_BASE_URL=%s", s->sim_url);
    ADD("GEMINI_API_KEY=test-key");
    ADD("RUNWAY_BASE_URL=%s", s->sim_url);
    ADD("RUNWAY_API_KEY=key_%s",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    ADD("PIXVERSE_BASE_URL=%s", s->sim_url);
    ADD("PIXVERSE_API_KEY=test-pixverse-key");
    ADD("POLL_INITIAL_MS=300");
    ADD("POLL_MAX_MS=1000");
    ADD("POLL_DEADLINE_S=120");
    ADD("SHUTDOWN_GRACE_MS=5000");
    ADD("ITEM_LEASE_S=20");
    ADD("PROVIDER_TIMEOUT_MS=10000");
    if (s->opts.gcp) {
        ADD("BACKEND=gcp");
        ADD("GCS_BUCKET=results-%s", s->project);
        ADD("STORAGE_BASE_URL=%s", s->gcs_url);
        ADD("SIGNED_URL_HOST=%s", s->gcs_url);
        ADD("IAM_CREDENTIALS_BASE_URL=http://127.0.0.1:%d/iam", s->metadata_port);
        ADD("GOOGLE_CLOUD_PROJECT=%s", s->project);
        ADD("FIRESTORE_EMULATOR_HOST=127.0.0.1:%d", s->proxy_port);
        ADD("CLOUD_TASKS_BASE_URL=%s", s->tasks_url);
        ADD("OIDC_SERVICE_ACCOUNT=tasks@%s.iam.gserviceaccount.com", s->project);
        ADD("OIDC_JWKS_URL=%s/oauth2/v3/certs", s->tasks_url);
        ADD("METADATA_BASE_URL=http://127.0.0.1:%d/computeMetadata/v1", s->metadata_port);
    }
#undef ADD
    env_common[n] = NULL;
}

static char port_env[7][32];
static char fake_env[12][512];

/*
 * The service account of the Google-mode stack: its key signs the result
 * URLs (through fake-metadata's signBlob, as on Cloud Run), and fake-gcs
 * verifies them with the public half.
 */
static void write_service_account(struct stack *s, char *email, size_t cap)
{
    char *pem = NULL, *pub = NULL, path[512];
    EVP_PKEY *key = NULL;
    struct error err;
    json_t *sa;
    FILE *f;

    need(jwt_rsa_generate(2048, &pem, &err) == ST_OK, "keygen: %s", err.message);
    need(jwt_key_load_private(pem, &key, &err) == ST_OK, "key: %s", err.message);
    need(jwt_key_public_pem(key, &pub, &err) == ST_OK, "public key: %s", err.message);
    snprintf(email, cap, "worker@%s.iam.gserviceaccount.com", s->project);
    sa = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id",
                   s->project, "private_key_id", "it-key-1", "private_key", pem, "client_email",
                   email, "token_uri", "https://oauth2.googleapis.com/token");
    snprintf(path, sizeof(path), "%s/sa.json", s->dir);
    need(json_dump_file(sa, path, 0) == 0, "cannot write %s", path);
    snprintf(path, sizeof(path), "%s/sa.pub.pem", s->dir);
    f = fopen(path, "w");
    need(f != NULL, "cannot write %s", path);
    fputs(pub, f);
    fclose(f);
    json_decref(sa);
    EVP_PKEY_free(key);
    free(pem);
    free(pub);
}

bool stack_gcp_available(void)
{
    const char *host = getenv("FIRESTORE_EMULATOR_HOST");

    return host && *host;
}

/* A fake is up once it answers anything over HTTP. */
static void wait_answering(struct stack *s, struct proc *p, const char *url)
{
    int64_t deadline = time_mono_ms() + 20000;

    while (time_mono_ms() < deadline) {
        long status = 0;
        int wstatus;

        json_decref(http_json_call(s, "GET", url, NULL, NULL, &status));
        if (status != 0)
            return;
        if (waitpid(p->pid, &wstatus, WNOHANG) == p->pid) {
            p->pid = 0;
            need(false, "%s exited during start-up, see %s", p->name, p->log_path);
        }
        time_sleep_ms(50);
    }
    need(false, "%s did not answer, see %s", p->name, p->log_path);
}

static void start_fakes(struct stack *s)
{
    const char *extra[16];
    char url[128], email[256];
    int i;

    need(stack_gcp_available(), "gcp mode needs FIRESTORE_EMULATOR_HOST");
    s->proxy_port = free_port();
    s->tasks_port = free_port();
    s->metadata_port = free_port();
    s->gcs_port = free_port();
    snprintf(s->gcs_url, sizeof(s->gcs_url), "http://127.0.0.1:%d", s->gcs_port);
    snprintf(s->proxy_url, sizeof(s->proxy_url), "http://127.0.0.1:%d", s->proxy_port);
    snprintf(s->tasks_url, sizeof(s->tasks_url), "http://127.0.0.1:%d", s->tasks_port);
    snprintf(port_env[3], sizeof(port_env[3]), "PORT=%d", s->proxy_port);
    snprintf(port_env[4], sizeof(port_env[4]), "PORT=%d", s->tasks_port);
    snprintf(port_env[5], sizeof(port_env[5]), "PORT=%d", s->metadata_port);
    snprintf(fake_env[0], sizeof(fake_env[0]), "FIRESTORE_TARGET=%s",
             getenv("FIRESTORE_EMULATOR_HOST"));
    snprintf(fake_env[1], sizeof(fake_env[1]), "FAKE_QUEUE_CONFIG=%s/queue.json", s->dir);
    snprintf(fake_env[2], sizeof(fake_env[2]), "FAKE_PROJECT=%s", s->project);

    extra[0] = port_env[3];
    extra[1] = fake_env[0];
    i = 2;
    for (const char *const *e = s->opts.proxy_env; e && *e && i < 15; e++)
        extra[i++] = *e;
    extra[i] = NULL;
    spawn(&s->proxy, "firestore-proxy", FS_PROXY_BIN, s->dir, NULL, extra);
    snprintf(url, sizeof(url), "%s/proxy/stats", s->proxy_url);
    wait_answering(s, &s->proxy, url);

    extra[0] = port_env[4];
    extra[1] = fake_env[1];
    extra[2] = fake_env[2];
    i = 3;
    for (const char *const *e = s->opts.tasks_env; e && *e && i < 15; e++)
        extra[i++] = *e;
    extra[i] = NULL;
    spawn(&s->tasks, "fake-cloudtasks", FAKE_TASKS_BIN, s->dir, NULL, extra);
    snprintf(url, sizeof(url), "%s/oauth2/v3/certs", s->tasks_url);
    wait_answering(s, &s->tasks, url);

    write_service_account(s, email, sizeof(email));
    snprintf(fake_env[3], sizeof(fake_env[3]), "FAKE_SA_KEY=%s/sa.json", s->dir);
    snprintf(fake_env[4], sizeof(fake_env[4]), "FAKE_EMAIL=%s", email);
    extra[0] = port_env[5];
    extra[1] = fake_env[2];
    extra[2] = fake_env[3];
    extra[3] = fake_env[4];
    extra[4] = NULL;
    spawn(&s->metadata, "fake-metadata", FAKE_METADATA_BIN, s->dir, NULL, extra);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/fake/stats", s->metadata_port);
    wait_answering(s, &s->metadata, url);

    snprintf(port_env[6], sizeof(port_env[6]), "PORT=%d", s->gcs_port);
    snprintf(fake_env[5], sizeof(fake_env[5]), "FAKE_GCS_SIGNER_PEM=%s/sa.pub.pem", s->dir);
    snprintf(fake_env[6], sizeof(fake_env[6]), "FAKE_GCS_BUCKETS=results-%s", s->project);
    extra[0] = port_env[6];
    extra[1] = fake_env[5];
    extra[2] = fake_env[6];
    extra[3] = NULL;
    spawn(&s->gcs, "fake-gcs", FAKE_GCS_BIN, s->dir, NULL, extra);
    snprintf(url, sizeof(url), "%s/healthz", s->gcs_url);
    wait_answering(s, &s->gcs, url);
}

void stack_start_worker(struct stack *s)
{
    const char *extra[16] = {port_env[1]};
    int i = 1;

    for (const char *const *e = s->opts.worker_env; e && *e && i < 15; e++)
        extra[i++] = *e;
    extra[i] = NULL;
    spawn(&s->worker, "worker", WORKER_BIN, s->dir, env_common, extra);
    wait_healthy(s, &s->worker, s->worker_port);
}

void stack_start_creator(struct stack *s)
{
    const char *extra[16] = {port_env[0]};
    int i = 1;

    for (const char *const *e = s->opts.creator_env; e && *e && i < 15; e++)
        extra[i++] = *e;
    extra[i] = NULL;
    spawn(&s->creator, "creator", CREATOR_BIN, s->dir, env_common, extra);
    wait_healthy(s, &s->creator, s->creator_port);
}

void stack_start(struct stack *s, const struct stack_opts *opts)
{
    char path[512];

    memset(s, 0, sizeof(*s));
    if (opts)
        s->opts = *opts;
    snprintf(s->dir, sizeof(s->dir), "/tmp/batchd-it.XXXXXX");
    need(mkdtemp(s->dir) != NULL, "mkdtemp failed");
    s->creator_port = free_port();
    s->worker_port = free_port();
    s->sim_port = free_port();
    snprintf(s->creator_url, sizeof(s->creator_url), "http://127.0.0.1:%d", s->creator_port);
    snprintf(s->worker_url, sizeof(s->worker_url), "http://127.0.0.1:%d/api/batch/worker",
             s->worker_port);
    snprintf(s->sim_url, sizeof(s->sim_url), "http://127.0.0.1:%d", s->sim_port);
    snprintf(path, sizeof(path), "%s/queue.json", s->dir);
    write_file(path, s->opts.queue_json ? s->opts.queue_json : test_queue);
    s->client = http_client_new(NULL);
    if (s->opts.gcp) {
        /* A project of its own: tests share one emulator. */
        id_random(s->project, sizeof(s->project), "it-", 12);
        start_fakes(s);
    }
    build_env(s);
    snprintf(port_env[0], sizeof(port_env[0]), "PORT=%d", s->creator_port);
    snprintf(port_env[1], sizeof(port_env[1]), "PORT=%d", s->worker_port);
    snprintf(port_env[2], sizeof(port_env[2]), "PORT=%d", s->sim_port);
    if (!s->opts.no_sim) {
        const char *extra[16] = {port_env[2]};
        int i = 1;

        for (const char *const *e = s->opts.sim_env; e && *e && i < 15; e++)
            extra[i++] = *e;
        extra[i] = NULL;
        spawn(&s->sim, "simulator", SIM_BIN, s->dir, env_common, extra);
        wait_healthy(s, &s->sim, s->sim_port);
    }
    stack_start_worker(s);
    stack_start_creator(s);
}

int proc_kill(struct proc *p, int sig)
{
    int wstatus = 0;
    int64_t deadline = time_mono_ms() + 15000;

    if (p->pid <= 0)
        return 0;
    kill(p->pid, sig);
    while (waitpid(p->pid, &wstatus, WNOHANG) == 0) {
        if (time_mono_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &wstatus, 0);
            break;
        }
        time_sleep_ms(20);
    }
    p->pid = 0;
    return wstatus;
}

static void dump_log(const struct proc *p)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "tail -n 30 %s >&2", p->log_path);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log at %s)\n", p->log_path);
}

void stack_stop(struct stack *s)
{
    struct proc *procs[] = {&s->creator, &s->worker,   &s->sim, &s->proxy,
                            &s->tasks,   &s->metadata, &s->gcs};
    size_t i;
    char cmd[300];
    bool clean = true;

    for (i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
        int w;

        if (procs[i]->pid <= 0)
            continue;
        w = proc_kill(procs[i], SIGTERM);
        if (!WIFEXITED(w) || WEXITSTATUS(w) != 0) {
            fprintf(stderr, "%s did not exit cleanly (status %d):\n", procs[i]->name, w);
            dump_log(procs[i]);
            clean = false;
        }
    }
    http_client_free(s->client);
    if (clean && !getenv("KEEP_TEST_DIRS")) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", s->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", s->dir);
    }
    need(clean, "a process of the stack did not exit cleanly, logs in %s", s->dir);
}

json_t *http_json_call(struct stack *s, const char *method, const char *url, const json_t *body,
                       const char *const *headers, long *status)
{
    struct http_call call;
    struct error err;
    json_t *out = NULL;

    memset(&call, 0, sizeof(call));
    call.method = method;
    call.url = url;
    call.headers = headers;
    call.timeout_ms = 30000;
    call.max_response_bytes = 64 << 20;
    *status = 0;
    if (http_client_json(s->client, &call, body, status, &out, &err) != ST_OK)
        *status = 0;
    return out;
}

const char *create_demo_batch(struct stack *s, int n, const char *prompt, long *status)
{
    static char id[128];
    json_t *body =
        json_pack("{s:[], s:s, s:s}", "images", "userId", "it-user", "type", "virtual-staging");
    char url[128];
    json_t *res;
    int i;

    for (i = 0; i < n; i++) {
        json_t *img = json_pack("{s:o}", "url", json_sprintf("%s/demo/%d.png", s->sim_url, i));

        if (prompt)
            json_object_set_new(img, "metadata", json_pack("{s:s}", "prompt", prompt));
        json_array_append_new(json_object_get(body, "images"), img);
    }
    snprintf(url, sizeof(url), "%s/api/batch/create", s->creator_url);
    res = http_json_call(s, "POST", url, body, NULL, status);
    id[0] = '\0';
    if (*status == 201)
        str_copy(id, sizeof(id), json_str_or(res, "batchId", ""));
    json_decref(res);
    json_decref(body);
    return id;
}

json_t *wait_batch(struct stack *s, const char *batch_id, int timeout_s)
{
    char url[256];
    int64_t deadline = time_mono_ms() + (int64_t)timeout_s * 1000;
    json_t *doc = NULL;

    snprintf(url, sizeof(url), "%s/api/batch/status/%s?limit=1000", s->creator_url, batch_id);
    for (;;) {
        long status = 0;
        const char *st;

        json_decref(doc);
        doc = http_json_call(s, "GET", url, NULL, NULL, &status);
        st = json_str_or(doc, "status", "");
        if (status == 200 && strcmp(st, "processing") != 0 && strcmp(st, "creating") != 0)
            return doc;
        if (time_mono_ms() > deadline)
            return doc;
        time_sleep_ms(200);
    }
}

long long jint(const json_t *doc, const char *field)
{
    return (long long)json_int_or(doc, field, -1);
}

int log_count(const struct proc *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    char line[8192];
    int n = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

char *http_get_bytes(struct stack *s, const char *url, size_t *len, long *status)
{
    struct http_call call;
    struct http_result res;
    struct error err;
    char *out = NULL;

    memset(&call, 0, sizeof(call));
    call.url = url;
    call.timeout_ms = 30000;
    call.max_response_bytes = 64 << 20;
    http_result_init(&res);
    *status = 0;
    if (http_client_do(s->client, &call, &res, &err) == ST_OK) {
        *status = res.status;
        out = buf_take(&res.body, len);
    }
    http_result_release(&res);
    return out;
}

void assert_results_are_images(struct stack *s, const json_t *doc)
{
    const json_t *images = json_object_get(doc, "images"), *img;
    size_t i;

    need(json_array_size(images) == (size_t)jint(doc, "totalImages"), "%zu images listed",
         json_array_size(images));
    json_array_foreach(images, i, img)
    {
        const json_t *result = json_object_get(img, "result");
        const char *url = json_str_or(result, "url", NULL);
        size_t len = 0;
        long status;
        char *bytes;

        need(strcmp(json_str_or(img, "status", ""), "completed") == 0, "image %zu is %s", i,
             json_str_or(img, "status", ""));
        need(url != NULL, "image %zu has no result url", i);
        bytes = http_get_bytes(s, url, &len, &status);
        need(status == 200, "%s answered %ld", url, status);
        need(len > 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0, "%s is not a PNG", url);
        need((long long)len == json_int_or(result, "bytes", -1), "%s: %zu bytes", url, len);
        free(bytes);
    }
}

long long db_count(struct stack *s, const char *sql)
{
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;

    snprintf(path, sizeof(path), "%s/data/batch.db", s->dir);
    need(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "cannot open %s",
         path);
    sqlite3_busy_timeout(db, 10000);
    need(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
         sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

json_t *sim_stats(struct stack *s)
{
    char url[128];
    long status;
    json_t *j;

    snprintf(url, sizeof(url), "%s/stats", s->sim_url);
    j = http_json_call(s, "GET", url, NULL, NULL, &status);
    need(status == 200, "simulator answered %ld", status);
    return j;
}

void sim_control(struct stack *s, const char *json)
{
    char url[128];
    long status;
    json_t *body = json_loads(json, 0, NULL), *j;

    need(body != NULL, "bad control json %s", json);
    snprintf(url, sizeof(url), "%s/control", s->sim_url);
    j = http_json_call(s, "POST", url, body, NULL, &status);
    need(status == 200, "simulator answered %ld", status);
    json_decref(j);
    json_decref(body);
}
