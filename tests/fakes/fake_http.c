#include "fake_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "core/timeutil.h"
#include "core/util.h"

#define BODY_MAX ((size_t)64 << 20)

struct answer {
    int status;
    char *content_type;
    char *body;
    size_t body_len;
    char *retry_after;
    long delay_ms;
};

struct fake_http {
    struct MHD_Daemon *d;
    char url[64];
    atomic_bool stopping;
    pthread_mutex_t lock; /* guards what follows */
    struct answer *queue;
    size_t n_queue, cap_queue;
    struct answer def;
    struct fake_request **reqs;
    size_t n_reqs, cap_reqs;
};

/* What one connection's request gathers before it is answered. */
struct pending {
    struct fake_request *req;
};

static void answer_copy(struct answer *dst, const struct fake_answer *a)
{
    memset(dst, 0, sizeof(*dst));
    dst->status = a->status ? a->status : 200;
    dst->content_type = xstrdup(a->content_type);
    dst->body_len = a->body ? (a->body_len ? a->body_len : strlen(a->body)) : 0;
    dst->body = xmalloc(dst->body_len + 1);
    if (dst->body_len)
        memcpy(dst->body, a->body, dst->body_len);
    dst->retry_after = xstrdup(a->retry_after);
    dst->delay_ms = a->delay_ms;
}

static void answer_release(struct answer *a)
{
    free(a->content_type);
    free(a->body);
    free(a->retry_after);
    memset(a, 0, sizeof(*a));
}

static void request_free(struct fake_request *r)
{
    if (!r)
        return;
    json_decref(r->headers);
    buf_release(&r->body);
    free(r);
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    json_t *headers = cls;
    char name[128];
    size_t i;

    UNUSED(kind);
    for (i = 0; key[i] && i + 1 < sizeof(name); i++)
        name[i] = (char)tolower((unsigned char)key[i]);
    name[i] = '\0';
    json_object_set_new(headers, name, json_string(value ? value : ""));
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **req_cls)
{
    struct fake_http *f = cls;
    struct pending *p = *req_cls;
    struct MHD_Response *r;
    struct answer a;
    enum MHD_Result ret;
    int64_t end;

    UNUSED(version);
    if (!p) {
        p = xcalloc(1, sizeof(*p));
        p->req = xcalloc(1, sizeof(*p->req));
        str_copy(p->req->method, sizeof(p->req->method), method);
        str_copy(p->req->path, sizeof(p->req->path), url);
        p->req->headers = json_object();
        buf_init(&p->req->body, BODY_MAX);
        MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header, p->req->headers);
        *req_cls = p;
        return MHD_YES;
    }
    if (*data_size > 0) {
        buf_append(&p->req->body, data, *data_size);
        *data_size = 0;
        return MHD_YES;
    }

    pthread_mutex_lock(&f->lock);
    if (f->n_reqs == f->cap_reqs) {
        f->cap_reqs = f->cap_reqs ? f->cap_reqs * 2 : 16;
        f->reqs = xrealloc(f->reqs, f->cap_reqs * sizeof(*f->reqs));
    }
    f->reqs[f->n_reqs++] = p->req;
    p->req = NULL;
    if (f->n_queue > 0) {
        a = f->queue[0];
        memmove(f->queue, f->queue + 1, (f->n_queue - 1) * sizeof(*f->queue));
        f->n_queue--;
    } else {
        struct fake_answer d = {f->def.status,   f->def.content_type, f->def.body,
                                f->def.body_len, f->def.retry_after,  f->def.delay_ms};

        answer_copy(&a, &d);
    }
    pthread_mutex_unlock(&f->lock);

    end = time_mono_ms() + a.delay_ms;
    while (time_mono_ms() < end && !atomic_load(&f->stopping))
        time_sleep_ms(5);
    r = MHD_create_response_from_buffer(a.body_len, a.body, MHD_RESPMEM_MUST_COPY);
    if (a.content_type)
        MHD_add_response_header(r, "Content-Type", a.content_type);
    if (a.retry_after)
        MHD_add_response_header(r, "Retry-After", a.retry_after);
    ret = MHD_queue_response(conn, (unsigned)a.status, r);
    MHD_destroy_response(r);
    answer_release(&a);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct pending *p = *req_cls;

    UNUSED(cls);
    UNUSED(conn);
    UNUSED(toe);
    if (p) {
        request_free(p->req);
        free(p);
        *req_cls = NULL;
    }
}

struct fake_http *fake_http_start(void)
{
    struct fake_http *f = xcalloc(1, sizeof(*f));
    const union MHD_DaemonInfo *info;
    struct sockaddr_in sin;
    struct fake_answer def = {404, "text/plain", "no answer queued", 0, NULL, 0};

    pthread_mutex_init(&f->lock, NULL);
    answer_copy(&f->def, &def);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                            NULL, NULL, on_request, f, MHD_OPTION_SOCK_ADDR, &sin,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, f, MHD_OPTION_END);
    if (!f->d)
        BUG("cannot start the fake http server");
    info = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u", (unsigned)info->port);
    return f;
}

void fake_http_reset(struct fake_http *f)
{
    size_t i;

    pthread_mutex_lock(&f->lock);
    for (i = 0; i < f->n_queue; i++)
        answer_release(&f->queue[i]);
    f->n_queue = 0;
    for (i = 0; i < f->n_reqs; i++)
        request_free(f->reqs[i]);
    f->n_reqs = 0;
    pthread_mutex_unlock(&f->lock);
}

void fake_http_stop(struct fake_http *f)
{
    if (!f)
        return;
    atomic_store(&f->stopping, true);
    MHD_stop_daemon(f->d);
    fake_http_reset(f);
    answer_release(&f->def);
    free(f->queue);
    free(f->reqs);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

const char *fake_http_url(const struct fake_http *f)
{
    return f->url;
}

void fake_http_push(struct fake_http *f, const struct fake_answer *a)
{
    pthread_mutex_lock(&f->lock);
    if (f->n_queue == f->cap_queue) {
        f->cap_queue = f->cap_queue ? f->cap_queue * 2 : 8;
        f->queue = xrealloc(f->queue, f->cap_queue * sizeof(*f->queue));
    }
    answer_copy(&f->queue[f->n_queue++], a);
    pthread_mutex_unlock(&f->lock);
}

void fake_http_push_json(struct fake_http *f, int status, const char *json)
{
    struct fake_answer a = {status, "application/json", json, 0, NULL, 0};

    fake_http_push(f, &a);
}

void fake_http_set_default(struct fake_http *f, const struct fake_answer *a)
{
    pthread_mutex_lock(&f->lock);
    answer_release(&f->def);
    answer_copy(&f->def, a);
    pthread_mutex_unlock(&f->lock);
}

size_t fake_http_count(struct fake_http *f)
{
    size_t n;

    pthread_mutex_lock(&f->lock);
    n = f->n_reqs;
    pthread_mutex_unlock(&f->lock);
    return n;
}

const struct fake_request *fake_http_request(struct fake_http *f, size_t i)
{
    const struct fake_request *r;

    pthread_mutex_lock(&f->lock);
    r = i < f->n_reqs ? f->reqs[i] : NULL;
    pthread_mutex_unlock(&f->lock);
    return r;
}

const char *fake_request_header(const struct fake_request *r, const char *name)
{
    char lower[128];
    size_t i;

    for (i = 0; name[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    lower[i] = '\0';
    return json_string_value(json_object_get(r->headers, lower));
}
