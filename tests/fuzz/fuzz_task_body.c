/* The worker's task bodies (what arrives in a push). */
#include "batch/tasks.h"
#include "fuzz.h"

static const char *const seeds[] = {
    "{\"kind\":\"item\",\"batchId\":\"batch_x\",\"itemId\":\"9f2c-00042\",\"generation\":1}",
    ("{\"kind\":\"poll\",\"batchId\":\"b\",\"itemId\":\"i\",\"generation\":2,\"attempt\":1,"
     "\"poll\":3,\"cancel\":true}"),
    "{\"kind\":\"fanout\",\"batchId\":\"b\",\"generation\":1,\"start\":0,\"end\":500}",
    "{\"kind\":\"item\",\"batchId\":\"b\",\"itemId\":\"i\",\"generation\":1,\"resubmit\":2}",
    "{\"kind\":\"reconcile\",\"batchId\":\"b\",\"generation\":3,\"round\":2}",
};

const char *const *fuzz_seeds(size_t *n)
{
    *n = sizeof(seeds) / sizeof(seeds[0]);
    return seeds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct task_body t;
    struct task_spec spec;
    char body[TASK_BODY_MAX];
    struct error err;

    if (task_body_decode((const char *)data, size, &t, &err) == ST_OK)
        task_spec_for(&t, 0, body, &spec); /* whatever decodes must encode and name */
    return 0;
}
