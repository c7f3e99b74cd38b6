/* What the providers send back, through each classification. */
#include <string.h>

#include "fuzz.h"
#include "providers/gemini.h"
#include "providers/pixverse.h"
#include "providers/runway.h"

static const char *const seeds[] = {
    ("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"t\"},{\"inlineData\":{\"mimeType\":"
     "\"image/png\",\"data\":\"iVBORw0KGgo=\"}}]},\"finishReason\":\"STOP\"}]}"),
    "{\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"}}",
    ("{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type."
     "googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"37s\"}]}}"),
    "{\"id\":\"d2e3d1f4-1b3c-4b5c-8d46-1c1d7ee86892\"}",
    "{\"id\":\"x\",\"status\":\"FAILED\",\"failureCode\":\"SAFETY.INPUT.IMAGE\",\"failure\":\"f\"}",
    "{\"id\":\"x\",\"status\":\"SUCCEEDED\",\"output\":[\"https://cdn.example/o.mp4\"]}",
    "{\"ErrCode\":0,\"ErrMsg\":\"success\",\"Resp\":{\"video_id\":627410861853514292}}",
    "{\"ErrCode\":500044,\"ErrMsg\":\"busy\",\"Resp\":null}",
    "{\"ErrCode\":0,\"Resp\":{\"id\":1,\"status\":1,\"url\":\"https://media.example/v.mp4\"}}",
};

const char *const *fuzz_seeds(size_t *n)
{
    *n = sizeof(seeds) / sizeof(seeds[0]);
    return seeds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 400, 402, 404, 429, 500, 503};
    struct provider_output out;
    struct gemini_reply g;
    struct video_reply v;
    int64_t id;
    size_t i;

    for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        memset(&g, 0, sizeof(g));
        g.http_status = statuses[i];
        g.body = (const char *)data;
        g.body_len = size;
        provider_output_init(&out, 1 << 20);
        gemini_classify(&g, 1, &out);
        provider_output_release(&out);

        memset(&v, 0, sizeof(v));
        v.http_status = statuses[i];
        v.request_sent = true;
        v.body = (const char *)data;
        v.body_len = size;
        provider_output_init(&out, 0);
        runway_classify(&v, i % 2 ? RUNWAY_POLL : RUNWAY_SUBMIT, &out);
        provider_output_release(&out);
        provider_output_init(&out, 0);
        pixverse_classify(&v, (enum pixverse_call)(i % 3), &out, &id);
        provider_output_release(&out);
    }
    return 0;
}
