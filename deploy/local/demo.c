/*
 * demo.c - the local demo's client: submits a batch of demo images to the
 * creator, shows a live progress bar until the batch finishes, and prints
 * where the results are.
 *
 *   batchd-demo CREATOR_URL IMAGE_BASE_URL COUNT
 *
 * Exit status: 0 when the batch completed (with or without failures).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/client.h"

static json_t *call(struct http_client *c, const char *method, const char *url, const json_t *body,
                    long *status)
{
    struct http_call hc;
    struct error err;
    json_t *out = NULL;

    memset(&hc, 0, sizeof(hc));
    hc.method = method;
    hc.url = url;
    hc.timeout_ms = 60000;
    hc.max_response_bytes = 64 << 20;
    if (http_client_json(c, &hc, body, status, &out, &err) != ST_OK) {
        fprintf(stderr, "demo: %s\n", err.message);
        *status = 0;
    }
    return out;
}

static void bar(const json_t *doc, int64_t started_ms)
{
    long long total = json_int_or(doc, "totalImages", 0);
    long long done = json_int_or(doc, "processedImages", 0);
    long long ok = json_int_or(doc, "successCount", 0);
    long long failed = json_int_or(doc, "failureCount", 0);
    int width = 40, filled = total > 0 ? (int)(done * width / total) : 0, i;
    char line[256];
    size_t n = 0;

    line[n++] = '[';
    for (i = 0; i < width; i++)
        line[n++] = i < filled ? '#' : '.';
    line[n++] = ']';
    line[n] = '\0';
    printf("\r%s %3lld%%  %lld/%lld  ok %lld  failed %lld  %.1fs ", line,
           (long long)json_int_or(doc, "progress", 0), done, total, ok, failed,
           (double)(time_mono_ms() - started_ms) / 1000.0);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct http_client *c;
    json_t *body, *res, *doc = NULL;
    char url[512];
    const char *id;
    long status = 0;
    int64_t started, n = 0;
    int i, code = 1;

    if (argc != 4 || !str_to_i64(argv[3], 1, 10000, &n)) {
        fprintf(stderr, "usage: %s CREATOR_URL IMAGE_BASE_URL COUNT\n", argv[0]);
        return 2;
    }
    c = http_client_new(NULL);
    body = json_pack("{s:[], s:s, s:s}", "images", "userId", "demo-partner", "type",
                     "virtual-staging");
    for (i = 0; i < n; i++)
        json_array_append_new(
            json_object_get(body, "images"),
            json_pack("{s:o, s:{s:s}}", "url", json_sprintf("%s/demo/%d.png", argv[2], i),
                      "metadata", "prompt",
                      "Virtually stage this empty room with a sofa, a rug and a plant. Keep "
                      "walls, windows, floor and camera angle unchanged. Photorealistic."));
    snprintf(url, sizeof(url), "%s/api/batch/create", argv[1]);
    started = time_mono_ms();
    res = call(c, "POST", url, body, &status);
    json_decref(body);
    if (status != 201) {
        char *text = json_dump_compact(res);

        fprintf(stderr, "demo: create answered %ld: %s\n", status, text ? text : "");
        free(text);
        goto out;
    }
    id = json_str_or(res, "batchId", "");
    printf("batch %s created with %lld images (answered in %lld ms)\n", id, (long long)n,
           (long long)(time_mono_ms() - started));
    snprintf(url, sizeof(url), "%s/api/batch/status/%s?limit=3", argv[1], id);
    for (;;) {
        const char *st;

        json_decref(doc);
        doc = call(c, "GET", url, NULL, &status);
        if (status == 200) {
            bar(doc, started);
            st = json_str_or(doc, "status", "");
            if (strcmp(st, "processing") != 0 && strcmp(st, "creating") != 0)
                break;
        }
        time_sleep_ms(300);
    }
    printf("\nbatch %s: %s\n", id, json_str_or(doc, "status", "?"));
    printf("status:  %s/api/batch/status/%s\n", argv[1], id);
    {
        json_t *first = json_array_get(json_object_get(doc, "images"), 0);
        const char *result = json_str_or(json_object_get(first, "result"), "url", NULL);

        if (result)
            printf("results: %s (and the other %lld images)\n", result, (long long)n - 1);
    }
    code = 0;
out:
    json_decref(res);
    json_decref(doc);
    http_client_free(c);
    return code;
}
