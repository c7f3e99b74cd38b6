/*
 * webhook.c - partner notifications, signed per Standard Webhooks
 * (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC>).
 * A webhook is a queue task like any other: delivered at least once,
 * retried with the queue's backoff, the same webhook-id every time so the
 * partner can drop duplicates.
 */
#include <stdio.h>
#include <string.h>

#include "batch/batch.h"
#include "batch/tasks.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"

void webhook_signature(const unsigned char *key, size_t key_len, const char *msg_id,
                       int64_t timestamp, const char *body, char *out, size_t cap)
{
    uint8_t mac[32];
    struct buf signed_content, b64;

    buf_init(&signed_content, SIZE_MAX);
    buf_printf(&signed_content, "%s.%lld.%s", msg_id, (long long)timestamp, body);
    hmac_sha256(key, key_len, signed_content.data, signed_content.len, mac);
    buf_init(&b64, 128);
    buf_append_str(&b64, "v1,");
    base64_encode(&b64, mac, sizeof(mac), B64_STD);
    str_copy(out, cap, buf_str(&b64));
    buf_release(&b64);
    buf_release(&signed_content);
}
