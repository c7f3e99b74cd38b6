#include "providers/provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

const char *provider_outcome_name(enum provider_outcome o)
{
    switch (o) {
    case PROVIDER_DONE:
        return "done";
    case PROVIDER_STARTED:
        return "started";
    case PROVIDER_RUNNING:
        return "running";
    case PROVIDER_TRANSIENT:
        return "transient";
    case PROVIDER_PERMANENT:
        return "permanent";
    }
    return "unknown";
}

void provider_output_init(struct provider_output *out, size_t max_bytes)
{
    memset(out, 0, sizeof(*out));
    buf_init(&out->data, max_bytes);
}

void provider_output_release(struct provider_output *out)
{
    buf_release(&out->data);
}

void provider_output_fail(struct provider_output *out, enum provider_outcome outcome,
                          const char *code, const char *fmt, ...)
{
    va_list ap;

    out->outcome = outcome;
    str_copy(out->error_code, sizeof(out->error_code), code);
    va_start(ap, fmt);
    vsnprintf(out->error_message, sizeof(out->error_message), fmt, ap);
    va_end(ap);
}

void provider_free(struct provider *p)
{
    if (p && p->free)
        p->free(p);
}
