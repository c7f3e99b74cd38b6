/* Small parsers: RFC 3339, HTTP dates, base64, durations, the queue definition. */
#include <string.h>

#include "core/codec.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fuzz.h"
#include "queue/queue_config.h"

static const char *const seeds[] = {
    "2026-05-01T12:00:00.123456Z",
    "2026-05-01T14:00:00+02:00",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Zm9vYmFy",
    "-_8",
    "0.100s",
    ("{\"name\":\"q\",\"rateLimits\":{\"maxDispatchesPerSecond\":60,\"maxConcurrentDispatches\":"
     "100},\"retryConfig\":{\"maxAttempts\":5,\"maxRetryDuration\":\"3600s\",\"minBackoff\":"
     "\"10s\",\"maxBackoff\":\"300s\",\"maxDoublings\":4},\"dispatchDeadline\":\"600s\"}"),
};

const char *const *fuzz_seeds(size_t *n)
{
    *n = sizeof(seeds) / sizeof(seeds[0]);
    return seeds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[256], out[RFC3339_MAX];
    struct queue_config qc;
    struct error err;
    struct buf b;
    int64_t t;
    double d;

    if (size < sizeof(text)) {
        memcpy(text, data, size);
        text[size] = '\0';
        if (time_parse_rfc3339(text, &t) && !time_format_rfc3339(t, out, sizeof(out)))
            BUG("a parsed time in range must format");
        time_parse_http_date(text, &t);
        duration_parse(text, &d);
    }
    buf_init(&b, 1 << 16);
    base64_decode(&b, (const char *)data, size);
    buf_release(&b);
    queue_config_parse((const char *)data, size, &qc, &err);
    return 0;
}
