/* The partner's create request: JSON parsing and every validation rule. */
#include "batch/request.h"
#include "core/json.h"
#include "fuzz.h"

static const char *const seeds[] = {
    ("{\"images\":[\"https://a.example/1.jpg\",{\"url\":\"https://b.example/2.png\",\"metadata\":"
     "{\"prompt\":\"sofa\"}}],\"userId\":\"crm-7\",\"type\":\"video-runway\",\"priority\":\"high\","
     "\"options\":{\"duration\":5},\"webhookUrl\":\"https://hooks.example/x\",\"dryRun\":true}"),
    "{\"images\":[],\"userId\":\"u\"}",
    ("{\"images\":[\"http://127.0.0.1/x\",\"https://[::1]/y\",\"https://169.254.169.254/\"],"
     "\"userId\":\"u\"}"),
    "{\"images\":\"x\"}",
    "[1,2,3]",
};

const char *const *fuzz_seeds(size_t *n)
{
    *n = sizeof(seeds) / sizeof(seeds[0]);
    return seeds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct create_limits limits[] = {{100, false}, {10000, true}};
    struct create_request req;
    struct error err;
    json_t *body = json_parse((const char *)data, size, &err);
    size_t i;

    if (!body)
        return 0;
    for (i = 0; i < 2; i++) {
        if (create_request_parse(body, &limits[i], i ? LANG_EN : LANG_PT, &req, &err) == ST_OK)
            create_request_release(&req);
    }
    json_decref(body);
    return 0;
}
