#include "blob/fs_blob.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/id.h"
#include "core/util.h"

struct fs_blob {
    char root[PATH_MAX];
    char public_base[1024];
};

/* mkdir -p for the directories of path (not its last component). */
static enum status make_parents(const char *path, struct error *err)
{
    char tmp[PATH_MAX];
    char *p;

    if (!str_copy(tmp, sizeof(tmp), path))
        return error_set(err, ST_IO, NULL, "path too long: %.100s", path);
    for (p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return error_set(err, ST_IO, NULL, "cannot create directory %s: %s", tmp,
                             strerror(errno));
        *p = '/';
    }
    return ST_OK;
}

static bool full_path(const struct fs_blob *fb, const char *key, char *out, size_t cap)
{
    return str_printf(out, cap, "%s/%s", fb->root, key);
}

static enum status write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return ST_IO;
        }
        p += w;
        len -= (size_t)w;
    }
    return ST_OK;
}

static enum status fs_put(void *state, const char *key, const void *data, size_t len,
                          const char *content_type, struct error *err)
{
    struct fs_blob *fb = state;
    char path[PATH_MAX], tmp[PATH_MAX], suffix[16], meta[PATH_MAX];
    enum status st;
    int fd;

    if (!full_path(fb, key, path, sizeof(path)))
        return error_set(err, ST_INVALID, NULL, "blob key too long");
    if (access(path, F_OK) == 0)
        return error_set(err, ST_ALREADY_EXISTS, NULL, "blob %s exists", key);
    if ((st = make_parents(path, err)) != ST_OK)
        return st;
    id_random(suffix, sizeof(suffix), ".tmp", 8);
    if (!str_printf(tmp, sizeof(tmp), "%s%s", path, suffix) ||
        !str_printf(meta, sizeof(meta), "%s.content-type", path))
        return error_set(err, ST_INVALID, NULL, "blob key too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return error_set(err, ST_IO, NULL, "cannot create %s: %s", tmp, strerror(errno));
    if (write_all(fd, data, len) != ST_OK || fsync(fd) != 0) {
        int e = errno;

        close(fd);
        unlink(tmp);
        return error_set(err, ST_IO, NULL, "cannot write %s: %s", tmp, strerror(e));
    }
    close(fd);
    /* The content type sits beside the object; written first so a visible object always
     * has one. */
    fd = open(meta, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        write_all(fd, content_type, strlen(content_type));
        close(fd);
    }
    /* link() fails if the object appeared meanwhile: create-only even against a race. */
    if (link(tmp, path) != 0) {
        int e = errno;

        unlink(tmp);
        if (e == EEXIST)
            return error_set(err, ST_ALREADY_EXISTS, NULL, "blob %s exists", key);
        return error_set(err, ST_IO, NULL, "cannot publish %s: %s", path, strerror(e));
    }
    unlink(tmp);
    return ST_OK;
}

static enum status read_file(const char *path, struct buf *out, struct error *err)
{
    char chunk[65536];
    enum status st = ST_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return error_set(err, errno == ENOENT ? ST_NOT_FOUND : ST_IO, NULL, "cannot open %s: %s",
                         path, strerror(errno));
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = error_set(err, ST_IO, NULL, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (buf_append(out, chunk, (size_t)n) != ST_OK) {
            st = error_set(err, ST_TOO_LARGE, NULL, "%s is larger than %zu bytes", path, out->max);
            break;
        }
    }
    close(fd);
    return st;
}

static enum status fs_get(void *state, const char *key, struct buf *out, char *content_type,
                          size_t ct_cap, struct error *err)
{
    struct fs_blob *fb = state;
    char path[PATH_MAX], meta[PATH_MAX];
    struct buf ct;
    enum status st;

    if (!full_path(fb, key, path, sizeof(path)) ||
        !str_printf(meta, sizeof(meta), "%s.content-type", path))
        return error_set(err, ST_NOT_FOUND, NULL, "no blob %.64s", key);
    st = read_file(path, out, err);
    if (st != ST_OK)
        return st;
    buf_init(&ct, 128);
    if (read_file(meta, &ct, NULL) == ST_OK && ct.len > 0)
        str_copy(content_type, ct_cap, buf_str(&ct));
    else
        str_copy(content_type, ct_cap, "application/octet-stream");
    buf_release(&ct);
    return ST_OK;
}

static enum status fs_url(void *state, const char *key, char *out, size_t cap, struct error *err)
{
    struct fs_blob *fb = state;

    if (!str_printf(out, cap, "%s/%s", fb->public_base, key))
        return error_set(err, ST_INVALID, NULL, "url of blob %.64s too long", key);
    return ST_OK;
}

static void fs_close(void *state)
{
    free(state);
}

static const struct blob_ops fs_ops = {fs_close, fs_put, fs_get, fs_url};

struct blob *blob_fs_open(const char *root, const char *public_base, struct error *err)
{
    struct fs_blob *fb;
    struct blob *b;
    char probe[PATH_MAX];

    if (!str_printf(probe, sizeof(probe), "%s/x", root) || make_parents(probe, err) != ST_OK)
        return NULL;
    fb = xcalloc(1, sizeof(*fb));
    if (!str_copy(fb->root, sizeof(fb->root), root) ||
        !str_copy(fb->public_base, sizeof(fb->public_base), public_base)) {
        free(fb);
        error_set(err, ST_INVALID, NULL, "blob root or public base too long");
        return NULL;
    }
    b = xcalloc(1, sizeof(*b));
    b->ops = &fs_ops;
    b->state = fb;
    b->name = "fs";
    return b;
}
