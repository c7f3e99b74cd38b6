#include "gcp/firestore.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backoff.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

#define DEFAULT_TIMEOUT_MS    30000
#define DEFAULT_ATTEMPTS      5
#define DEFAULT_RETRY_BASE_MS 100
#define DEFAULT_RETRY_CAP_MS  5000
#define DEFAULT_TX_ATTEMPTS   8
#define DEFAULT_MAX_RESPONSE  (64u * 1024 * 1024)
#define TX_BACKOFF_BASE_MS    50
#define TX_BACKOFF_CAP_MS     2000
#define BASE_MAX              256
#define URL_MAX               (BASE_MAX + 3 * FIRESTORE_NAME_MAX + 64)
#define AUTH_HEADER_MAX       (GCP_TOKEN_MAX + 32)

/* Timestamps Firestore accepts: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z. */
#define TS_MIN_US (-62135596800LL * 1000000)
#define TS_MAX_US (253402300799LL * 1000000 + 999999)

/* ---- gRPC codes --------------------------------------------------------- */

enum rpc {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16,
    RPC__COUNT
};

static const struct {
    const char *name;
    const char *lower; /* metric label and error code suffix */
    enum status status;
} rpc_table[RPC__COUNT] = {
    [RPC_OK] = {"OK", "ok", ST_OK},
    [RPC_CANCELLED] = {"CANCELLED", "cancelled", ST_UNAVAILABLE},
    [RPC_UNKNOWN] = {"UNKNOWN", "unknown", ST_INTERNAL},
    [RPC_INVALID_ARGUMENT] = {"INVALID_ARGUMENT", "invalid_argument", ST_INVALID},
    [RPC_DEADLINE_EXCEEDED] = {"DEADLINE_EXCEEDED", "deadline_exceeded", ST_TIMEOUT},
    [RPC_NOT_FOUND] = {"NOT_FOUND", "not_found", ST_NOT_FOUND},
    [RPC_ALREADY_EXISTS] = {"ALREADY_EXISTS", "already_exists", ST_ALREADY_EXISTS},
    [RPC_PERMISSION_DENIED] = {"PERMISSION_DENIED", "permission_denied", ST_PERMISSION_DENIED},
    [RPC_RESOURCE_EXHAUSTED] = {"RESOURCE_EXHAUSTED", "resource_exhausted", ST_RATE_LIMITED},
    [RPC_FAILED_PRECONDITION] = {"FAILED_PRECONDITION", "failed_precondition",
                                 ST_FAILED_PRECONDITION},
    [RPC_ABORTED] = {"ABORTED", "aborted", ST_ABORTED},
    [RPC_OUT_OF_RANGE] = {"OUT_OF_RANGE", "out_of_range", ST_INVALID},
    [RPC_UNIMPLEMENTED] = {"UNIMPLEMENTED", "unimplemented", ST_INTERNAL},
    [RPC_INTERNAL] = {"INTERNAL", "internal", ST_INTERNAL},
    [RPC_UNAVAILABLE] = {"UNAVAILABLE", "unavailable", ST_UNAVAILABLE},
    [RPC_DATA_LOSS] = {"DATA_LOSS", "data_loss", ST_INTERNAL},
    [RPC_UNAUTHENTICATED] = {"UNAUTHENTICATED", "unauthenticated", ST_UNAUTHENTICATED},
};

int firestore_rpc_code(const char *name)
{
    int i;

    if (!name)
        return -1;
    for (i = 0; i < RPC__COUNT; i++) {
        if (strcmp(rpc_table[i].name, name) == 0)
            return i;
    }
    return -1;
}

const char *firestore_rpc_name(int code)
{
    return code >= 0 && code < RPC__COUNT ? rpc_table[code].name : NULL;
}

enum status firestore_rpc_status(int code)
{
    return code >= 0 && code < RPC__COUNT ? rpc_table[code].status : ST_INTERNAL;
}

/* The gRPC code for an HTTP status without a usable body (the grpc-gateway mapping). */
static int rpc_from_http(long http)
{
    if (http >= 200 && http < 300)
        return RPC_OK;
    switch (http) {
    case 400:
        return RPC_INVALID_ARGUMENT;
    case 401:
        return RPC_UNAUTHENTICATED;
    case 403:
        return RPC_PERMISSION_DENIED;
    case 404:
        return RPC_NOT_FOUND;
    case 409:
        return RPC_ABORTED;
    case 412:
        return RPC_FAILED_PRECONDITION;
    case 429:
        return RPC_RESOURCE_EXHAUSTED;
    case 499:
        return RPC_CANCELLED;
    case 500:
        return RPC_INTERNAL;
    case 501:
        return RPC_UNIMPLEMENTED;
    case 502:
    case 503:
        return RPC_UNAVAILABLE;
    case 504:
        return RPC_DEADLINE_EXCEEDED;
    default:
        return RPC_UNKNOWN;
    }
}

/* Fills err from a gRPC code and a server message; returns the status. */
static enum status rpc_error(struct error *err, const char *method, int rpc, const char *message)
{
    char code[ERROR_CODE_MAX];
    const char *lower = firestore_rpc_name(rpc) ? rpc_table[rpc].lower : "unknown";

    str_printf(code, sizeof(code), "firestore_%s", lower);
    return error_set(err, firestore_rpc_status(rpc), code, "firestore %s: %s: %s", method, lower,
                     message && *message ? message : "no message");
}

/* Reads the gRPC code of a google.rpc.Status-like error object. */
static int error_object_rpc(const json_t *e, long http)
{
    json_t *status = json_object_get(e, "status");
    json_t *code = json_object_get(e, "code");
    int rpc;

    if (json_is_string(status) && (rpc = firestore_rpc_code(json_string_value(status))) >= 0)
        return rpc;
    /* REST errors carry the HTTP status in "code"; stream statuses may carry the gRPC one. */
    if (json_is_integer(code)) {
        json_int_t c = json_integer_value(code);

        if (c >= 100)
            return rpc_from_http((long)c);
        if (c > 0 && c < RPC__COUNT)
            return (int)c;
    }
    return http >= 200 && http < 300 ? RPC_UNKNOWN : rpc_from_http(http);
}

enum status firestore_response_status(const char *method, long http, const json_t *body, int *rpc,
                                      struct error *err)
{
    json_t *e = json_is_object(body) ? json_object_get(body, "error") : NULL;
    char msg[160];
    int code;

    if (rpc)
        *rpc = RPC_OK;
    if (!json_is_object(e) && http >= 200 && http < 300)
        return ST_OK;
    if (json_is_object(e)) {
        code = error_object_rpc(e, http);
        str_copy(msg, sizeof(msg), json_str_or(e, "message", ""));
    } else {
        code = rpc_from_http(http);
        str_printf(msg, sizeof(msg), "http status %ld", http);
    }
    if (code == RPC_OK)
        code = RPC_UNKNOWN;
    if (rpc)
        *rpc = code;
    return rpc_error(err, method, code, msg);
}

static enum status parse_stream(const char *method, long http, const json_t *body,
                                json_t **elements, char **transaction, int *rpc, struct error *err)
{
    enum status s;
    size_t i;
    json_t *el, *e, *tx;

    *elements = NULL;
    if (transaction)
        *transaction = NULL;
    if ((s = firestore_response_status(method, http, body, rpc, err)))
        return s;
    if (!json_is_array(body)) {
        if (rpc)
            *rpc = RPC_INTERNAL;
        return error_set(err, ST_INTERNAL, "firestore_bad_response",
                         "firestore %s: answer is not a json array", method);
    }
    json_array_foreach(body, i, el)
    {
        e = json_object_get(el, "error");
        if (json_is_object(e)) {
            char msg[160];
            int code = error_object_rpc(e, 200);

            str_copy(msg, sizeof(msg), json_str_or(e, "message", ""));
            if (rpc)
                *rpc = code;
            return rpc_error(err, method, code, msg);
        }
    }
    if (transaction && (el = json_array_get(body, 0)) &&
        json_is_string(tx = json_object_get(el, "transaction")))
        *transaction = xstrdup(json_string_value(tx));
    *elements = json_incref((json_t *)body);
    return ST_OK;
}

enum status firestore_parse_stream(const char *method, long http, const json_t *body,
                                   json_t **elements, char **transaction, struct error *err)
{
    return parse_stream(method, http, body, elements, transaction, NULL, err);
}

json_t *firestore_stream_documents(const json_t *elements)
{
    json_t *docs = json_array(), *el, *doc;
    size_t i;

    json_array_foreach(elements, i, el)
    {
        doc = json_object_get(el, "document");
        if (json_is_object(doc))
            json_array_append(docs, doc);
    }
    return docs;
}

/* ---- values --------------------------------------------------------------- */

static json_t *value1(const char *key, json_t *v)
{
    json_t *o = json_object();

    json_object_set_new(o, key, v);
    return o;
}

json_t *firestore_value_null(void)
{
    return value1("nullValue", json_null());
}

json_t *firestore_value_bool(bool b)
{
    return value1("booleanValue", json_boolean(b));
}

json_t *firestore_value_int(int64_t i)
{
    char s[24];

    str_printf(s, sizeof(s), "%lld", (long long)i);
    return value1("integerValue", json_string(s));
}

json_t *firestore_value_double(double d)
{
    if (isnan(d))
        return value1("doubleValue", json_string("NaN"));
    if (isinf(d))
        return value1("doubleValue", json_string(d > 0 ? "Infinity" : "-Infinity"));
    return value1("doubleValue", json_real(d));
}

json_t *firestore_value_timestamp(int64_t us)
{
    char s[RFC3339_MAX];

    if (us < TS_MIN_US)
        us = TS_MIN_US;
    if (us > TS_MAX_US)
        us = TS_MAX_US;
    if (!time_format_rfc3339(us, s, sizeof(s)))
        BUG("cannot format timestamp %lld", (long long)us);
    return value1("timestampValue", json_string(s));
}

json_t *firestore_value_string(const char *s)
{
    if (!s)
        return firestore_value_null();
    return firestore_value_stringn(s, strlen(s));
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 when invalid (RFC 3629). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len, i;
    unsigned char lo = 0x80, hi = 0xBF;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        len = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        len = 3;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        len = 4;
    else
        return 0;
    if (p[0] == 0xE0)
        lo = 0xA0; /* overlong */
    else if (p[0] == 0xED)
        hi = 0x9F; /* surrogates */
    else if (p[0] == 0xF0)
        lo = 0x90; /* overlong */
    else if (p[0] == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    if (len > n || p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    }
    return len;
}

json_t *firestore_value_stringn(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    json_t *v = json_stringn(s, n);
    char *fixed;
    size_t i, k;

    if (v)
        return value1("stringValue", v);
    /* Not UTF-8 (Firestore refuses it too): each invalid byte becomes U+FFFD. */
    fixed = xmalloc(3 * n + 1);
    for (i = 0, k = 0; i < n;) {
        size_t len = utf8_seq(p + i, n - i);

        if (len == 0) {
            memcpy(fixed + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        } else {
            memcpy(fixed + k, p + i, len);
            k += len;
            i += len;
        }
    }
    v = json_stringn(fixed, k);
    free(fixed);
    if (!v)
        BUG("utf-8 repair of a %zu-byte string failed", n);
    return value1("stringValue", v);
}

json_t *firestore_value_bytes(const void *data, size_t n)
{
    struct buf b;
    json_t *v;

    buf_init(&b, base64_encoded_len(n, B64_STD) + 1);
    if (base64_encode(&b, data, n, B64_STD) != ST_OK)
        BUG("base64 of %zu bytes does not fit", n);
    v = value1("bytesValue", json_stringn(buf_str(&b), b.len));
    buf_release(&b);
    return v;
}

json_t *firestore_value_reference(const char *name)
{
    return value1("referenceValue", json_string(name ? name : ""));
}

json_t *firestore_value_geo(double latitude, double longitude)
{
    return value1("geoPointValue",
                  json_pack("{s:f, s:f}", "latitude", latitude, "longitude", longitude));
}

json_t *firestore_value_array(json_t *values)
{
    json_t *a = json_object();

    if (values && json_array_size(values) > 0)
        json_object_set(a, "values", values);
    json_decref(values);
    return value1("arrayValue", a);
}

json_t *firestore_value_map(json_t *fields)
{
    json_t *m = json_object();

    if (fields && json_object_size(fields) > 0)
        json_object_set(m, "fields", fields);
    json_decref(fields);
    return value1("mapValue", m);
}

static const struct {
    const char *key;
    enum firestore_kind kind;
} kinds[] = {
    {"nullValue", FS_NULL},
    {"booleanValue", FS_BOOL},
    {"integerValue", FS_INT},
    {"doubleValue", FS_DOUBLE},
    {"timestampValue", FS_TIMESTAMP},
    {"stringValue", FS_STRING},
    {"bytesValue", FS_BYTES},
    {"referenceValue", FS_REFERENCE},
    {"geoPointValue", FS_GEO},
    {"arrayValue", FS_ARRAY},
    {"mapValue", FS_MAP},
};

/* The kind and the payload of v. */
static enum firestore_kind kind_of(const json_t *v, json_t **payload)
{
    const char *key;
    json_t *p;
    size_t i;

    if (!json_is_object(v) || json_object_size(v) != 1)
        return FS_INVALID;
    json_object_foreach((json_t *)v, key, p)
    {
        for (i = 0; i < ARRAY_SIZE(kinds); i++) {
            if (strcmp(key, kinds[i].key) != 0)
                continue;
            switch (kinds[i].kind) {
            case FS_NULL:
                if (!json_is_null(p) &&
                    !(json_is_string(p) && strcmp(json_string_value(p), "NULL_VALUE") == 0))
                    return FS_INVALID;
                break;
            case FS_BOOL:
                if (!json_is_boolean(p))
                    return FS_INVALID;
                break;
            case FS_INT:
                if (!json_is_string(p) && !json_is_integer(p))
                    return FS_INVALID;
                break;
            case FS_DOUBLE:
                if (!json_is_number(p) && !json_is_string(p))
                    return FS_INVALID;
                break;
            case FS_TIMESTAMP:
            case FS_STRING:
            case FS_BYTES:
            case FS_REFERENCE:
                if (!json_is_string(p))
                    return FS_INVALID;
                break;
            case FS_GEO:
            case FS_ARRAY:
            case FS_MAP:
                if (!json_is_object(p))
                    return FS_INVALID;
                break;
            case FS_INVALID:
                return FS_INVALID;
            }
            if (payload)
                *payload = p;
            return kinds[i].kind;
        }
    }
    return FS_INVALID;
}

enum firestore_kind firestore_value_kind(const json_t *v)
{
    return kind_of(v, NULL);
}

bool firestore_value_get_bool(const json_t *v, bool *out)
{
    json_t *p;

    if (kind_of(v, &p) != FS_BOOL)
        return false;
    *out = json_is_true(p);
    return true;
}

bool firestore_value_get_int(const json_t *v, int64_t *out)
{
    json_t *p;

    if (kind_of(v, &p) != FS_INT)
        return false;
    if (json_is_integer(p)) {
        *out = json_integer_value(p);
        return true;
    }
    return str_to_i64(json_string_value(p), INT64_MIN, INT64_MAX, out);
}

bool firestore_value_get_double(const json_t *v, double *out)
{
    int64_t i;
    json_t *p;
    const char *s;

    switch (kind_of(v, &p)) {
    case FS_INT:
        if (!firestore_value_get_int(v, &i))
            return false;
        *out = (double)i;
        return true;
    case FS_DOUBLE:
        if (json_is_number(p)) {
            *out = json_number_value(p);
            return true;
        }
        s = json_string_value(p);
        if (strcmp(s, "NaN") == 0)
            *out = NAN;
        else if (strcmp(s, "Infinity") == 0)
            *out = INFINITY;
        else if (strcmp(s, "-Infinity") == 0)
            *out = -INFINITY;
        else
            return str_to_double(s, out);
        return true;
    default:
        return false;
    }
}

bool firestore_value_get_timestamp(const json_t *v, int64_t *us)
{
    json_t *p;

    if (kind_of(v, &p) != FS_TIMESTAMP)
        return false;
    return time_parse_rfc3339(json_string_value(p), us);
}

static bool get_stringish(const json_t *v, enum firestore_kind want, const char **out)
{
    json_t *p;

    if (kind_of(v, &p) != want)
        return false;
    *out = json_string_value(p);
    return true;
}

bool firestore_value_get_string(const json_t *v, const char **out)
{
    return get_stringish(v, FS_STRING, out);
}

bool firestore_value_get_reference(const json_t *v, const char **out)
{
    return get_stringish(v, FS_REFERENCE, out);
}

bool firestore_value_get_geo(const json_t *v, double *latitude, double *longitude)
{
    json_t *p, *lat, *lng;

    if (kind_of(v, &p) != FS_GEO)
        return false;
    lat = json_object_get(p, "latitude");
    lng = json_object_get(p, "longitude");
    if ((lat && !json_is_number(lat)) || (lng && !json_is_number(lng)))
        return false;
    *latitude = lat ? json_number_value(lat) : 0.0;
    *longitude = lng ? json_number_value(lng) : 0.0;
    return true;
}

enum status firestore_value_get_bytes(const json_t *v, struct buf *out)
{
    const char *s;
    json_t *p;

    if (kind_of(v, &p) != FS_BYTES)
        return ST_INVALID;
    s = json_string_value(p);
    return base64_decode(out, s, strlen(s));
}

size_t firestore_array_size(const json_t *v)
{
    json_t *p;

    if (kind_of(v, &p) != FS_ARRAY)
        return 0;
    return json_array_size(json_object_get(p, "values"));
}

json_t *firestore_array_get(const json_t *v, size_t i)
{
    json_t *p;

    if (kind_of(v, &p) != FS_ARRAY)
        return NULL;
    return json_array_get(json_object_get(p, "values"), i);
}

json_t *firestore_map_fields(const json_t *v)
{
    json_t *p, *f;

    if (kind_of(v, &p) != FS_MAP)
        return NULL;
    f = json_object_get(p, "fields");
    return json_is_object(f) && json_object_size(f) > 0 ? f : NULL;
}

json_t *firestore_map_get(const json_t *v, const char *key)
{
    return json_object_get(firestore_map_fields(v), key);
}

/* ---- plain JSON <-> Values ---------------------------------------------------- */

/* A key Firestore refuses in a map: empty, "__...__", or longer than a field path may be. */
static bool key_reserved(const char *k)
{
    size_t n = strlen(k);

    return n == 0 || n > FIRESTORE_PATH_MAX ||
           (n >= 4 && strncmp(k, "__", 2) == 0 && strcmp(k + n - 2, "__") == 0);
}

static enum status from_json(const json_t *p, int depth, bool in_array, json_t **out,
                             struct error *err)
{
    json_t *acc = NULL, *child = NULL, *el;
    const char *key;
    enum status s;
    size_t i;

    *out = NULL;
    switch (json_typeof(p)) {
    case JSON_NULL:
        *out = firestore_value_null();
        return ST_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = firestore_value_bool(json_is_true(p));
        return ST_OK;
    case JSON_INTEGER:
        *out = firestore_value_int(json_integer_value(p));
        return ST_OK;
    case JSON_REAL:
        *out = firestore_value_double(json_real_value(p));
        return ST_OK;
    case JSON_STRING:
        *out = firestore_value_stringn(json_string_value(p), json_string_length(p));
        return ST_OK;
    case JSON_ARRAY:
        if (in_array)
            return error_set(err, ST_INVALID, "firestore_unsupported_value",
                             "an array directly inside an array cannot be stored in firestore");
        if (depth >= FIRESTORE_MAX_DEPTH)
            goto too_deep;
        acc = json_array();
        json_array_foreach(p, i, el)
        {
            if ((s = from_json(el, depth + 1, true, &child, err)))
                goto fail;
            json_array_append_new(acc, child);
        }
        *out = firestore_value_array(acc);
        return ST_OK;
    case JSON_OBJECT:
        if (depth >= FIRESTORE_MAX_DEPTH)
            goto too_deep;
        acc = json_object();
        json_object_foreach((json_t *)p, key, el)
        {
            if (key_reserved(key)) {
                s = error_set(err, ST_INVALID, "firestore_unsupported_value",
                              "map key \"%.40s\" cannot be stored in firestore", key);
                goto fail;
            }
            if ((s = from_json(el, depth + 1, false, &child, err)))
                goto fail;
            json_object_set_new(acc, key, child);
        }
        *out = firestore_value_map(acc);
        return ST_OK;
    }
    return error_set(err, ST_INVALID, NULL, "unknown json type");
too_deep:
    return error_set(err, ST_INVALID, "firestore_unsupported_value",
                     "value nested deeper than %d levels cannot be stored in firestore",
                     FIRESTORE_MAX_DEPTH);
fail:
    json_decref(acc);
    return s;
}

enum status firestore_value_from_json(const json_t *plain, json_t **out, struct error *err)
{
    if (!plain) {
        *out = NULL;
        return error_set(err, ST_INVALID, NULL, "no json value to convert");
    }
    return from_json(plain, 0, false, out, err);
}

static enum status to_json(const json_t *v, int depth, json_t **out, struct error *err)
{
    json_t *p = NULL, *acc = NULL, *child = NULL, *el, *fields;
    const char *key, *s;
    double d, lat, lng;
    int64_t i;
    size_t k;
    bool b;
    enum status st;

    *out = NULL;
    if (depth > FIRESTORE_MAX_DEPTH + 1)
        return error_set(err, ST_INVALID, "firestore_bad_value", "firestore value nested too deep");
    switch (kind_of(v, &p)) {
    case FS_NULL:
        *out = json_null();
        return ST_OK;
    case FS_BOOL:
        firestore_value_get_bool(v, &b);
        *out = json_boolean(b);
        return ST_OK;
    case FS_INT:
        if (!firestore_value_get_int(v, &i))
            break;
        *out = json_integer(i);
        return ST_OK;
    case FS_DOUBLE:
        if (!firestore_value_get_double(v, &d))
            break;
        if (isnan(d))
            *out = json_string("NaN");
        else if (isinf(d))
            *out = json_string(d > 0 ? "Infinity" : "-Infinity");
        else
            *out = json_real(d);
        return ST_OK;
    case FS_TIMESTAMP:
    case FS_STRING:
    case FS_BYTES:
    case FS_REFERENCE:
        *out = json_incref(p);
        return ST_OK;
    case FS_GEO:
        if (!firestore_value_get_geo(v, &lat, &lng))
            break;
        *out = json_pack("{s:f, s:f}", "latitude", lat, "longitude", lng);
        return ST_OK;
    case FS_ARRAY:
        acc = json_array();
        json_array_foreach(json_object_get(p, "values"), k, el)
        {
            if ((st = to_json(el, depth + 1, &child, err))) {
                json_decref(acc);
                return st;
            }
            json_array_append_new(acc, child);
        }
        *out = acc;
        return ST_OK;
    case FS_MAP:
        acc = json_object();
        fields = json_object_get(p, "fields");
        json_object_foreach(fields, key, el)
        {
            if ((st = to_json(el, depth + 1, &child, err))) {
                json_decref(acc);
                return st;
            }
            json_object_set_new(acc, key, child);
        }
        *out = acc;
        return ST_OK;
    case FS_INVALID:
        break;
    }
    s = "?";
    if (json_is_object(v) && json_object_size(v) > 0)
        s = json_object_iter_key(json_object_iter((json_t *)v));
    return error_set(err, ST_INVALID, "firestore_bad_value", "malformed firestore value (%.40s)",
                     s);
}

enum status firestore_value_to_json(const json_t *value, json_t **out, struct error *err)
{
    return to_json(value, 0, out, err);
}

/* ---- documents -------------------------------------------------------------- */

const char *firestore_doc_name(const json_t *doc)
{
    return json_string_value(json_object_get(doc, "name"));
}

const char *firestore_doc_id(const json_t *doc)
{
    const char *name = firestore_doc_name(doc), *slash;

    if (!name)
        return NULL;
    slash = strrchr(name, '/');
    return slash ? slash + 1 : name;
}

json_t *firestore_doc_fields(const json_t *doc)
{
    json_t *f = json_object_get(doc, "fields");

    return json_is_object(f) ? f : NULL;
}

json_t *firestore_doc_get(const json_t *doc, const char *key)
{
    return json_object_get(firestore_doc_fields(doc), key);
}

const char *firestore_doc_update_time(const json_t *doc)
{
    return json_string_value(json_object_get(doc, "updateTime"));
}

/* ---- field paths -------------------------------------------------------------- */

bool firestore_field_simple(const char *segment)
{
    const char *p = segment;

    if (!p || !((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_'))
        return false;
    for (p++; *p; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    }
    return true;
}

enum status firestore_field_quote(struct buf *out, const char *segment)
{
    enum status s;
    const char *p;

    if (!segment || !*segment)
        return ST_INVALID;
    if (firestore_field_simple(segment))
        return buf_append_str(out, segment);
    if ((s = buf_append(out, "`", 1)))
        return s;
    for (p = segment; *p; p++) {
        if ((*p == '`' || *p == '\\') && (s = buf_append(out, "\\", 1)))
            return s;
        if ((s = buf_append(out, p, 1)))
            return s;
    }
    return buf_append(out, "`", 1);
}

enum status firestore_field_path(char *out, size_t cap, const char *const *segments, size_t n)
{
    struct buf b;
    enum status s = ST_OK;
    size_t i;

    if (cap == 0)
        return ST_TOO_LARGE;
    out[0] = '\0';
    if (n == 0)
        return ST_INVALID;
    buf_init(&b, cap - 1 < FIRESTORE_PATH_MAX ? cap - 1 : FIRESTORE_PATH_MAX);
    for (i = 0; i < n && s == ST_OK; i++) {
        if (i > 0)
            s = buf_append(&b, ".", 1);
        if (s == ST_OK)
            s = firestore_field_quote(&b, segments[i]);
    }
    if (s == ST_OK)
        str_copy(out, cap, buf_str(&b));
    buf_release(&b);
    return s;
}

/* ---- writes ------------------------------------------------------------------- */

static json_t *write_doc(const char *name, json_t *fields)
{
    json_t *doc = json_object();

    json_object_set_new(doc, "name", json_string(name));
    json_object_set_new(doc, "fields", fields ? fields : json_object());
    return value1("update", doc);
}

json_t *firestore_write_set(const char *name, json_t *fields)
{
    return write_doc(name, fields);
}

json_t *firestore_write_update(const char *name, json_t *fields)
{
    json_t *w = write_doc(name, fields), *paths = json_array(), *v;
    const char *key;
    struct buf b;

    buf_init(&b, FIRESTORE_PATH_MAX);
    json_object_foreach(json_object_get(json_object_get(w, "update"), "fields"), key, v)
    {
        buf_reset(&b);
        if (firestore_field_quote(&b, key) != ST_OK)
            BUG("field name \"%.40s\" cannot be a field path", key);
        json_array_append_new(paths, json_string(buf_str(&b)));
    }
    buf_release(&b);
    json_object_set_new(w, "updateMask", value1("fieldPaths", paths));
    return w;
}

json_t *firestore_write_transform(const char *name)
{
    json_t *w = write_doc(name, NULL);

    /* An empty mask with transforms: only the transformed fields change (gcp.md 2.13). */
    json_object_set_new(w, "updateMask", json_object());
    return w;
}

json_t *firestore_write_delete(const char *name)
{
    return value1("delete", json_string(name));
}

void firestore_write_mask_add(json_t *write, const char *field_path)
{
    json_t *mask = json_object_get(write, "updateMask"), *paths;

    if (!mask) {
        mask = json_object();
        json_object_set_new(write, "updateMask", mask);
    }
    paths = json_object_get(mask, "fieldPaths");
    if (!paths) {
        paths = json_array();
        json_object_set_new(mask, "fieldPaths", paths);
    }
    json_array_append_new(paths, json_string(field_path));
}

void firestore_write_exists(json_t *write, bool exists)
{
    json_object_set_new(write, "currentDocument", value1("exists", json_boolean(exists)));
}

void firestore_write_update_time(json_t *write, const char *update_time)
{
    json_object_set_new(write, "currentDocument", value1("updateTime", json_string(update_time)));
}

static void add_transform(json_t *write, const char *field_path, const char *kind, json_t *value)
{
    json_t *list = json_object_get(write, "updateTransforms"), *t = json_object();

    if (!list) {
        list = json_array();
        json_object_set_new(write, "updateTransforms", list);
    }
    json_object_set_new(t, "fieldPath", json_string(field_path));
    json_object_set_new(t, kind, value);
    json_array_append_new(list, t);
}

void firestore_write_increment(json_t *write, const char *field_path, json_t *value)
{
    add_transform(write, field_path, "increment", value);
}

void firestore_write_maximum(json_t *write, const char *field_path, json_t *value)
{
    add_transform(write, field_path, "maximum", value);
}

void firestore_write_minimum(json_t *write, const char *field_path, json_t *value)
{
    add_transform(write, field_path, "minimum", value);
}

void firestore_write_request_time(json_t *write, const char *field_path)
{
    add_transform(write, field_path, "setToServerValue", json_string("REQUEST_TIME"));
}

size_t firestore_write_size(const json_t *write)
{
    return json_dumpb(write, NULL, 0, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

/* ---- the client --------------------------------------------------------------- */

enum method {
    M_GET,
    M_BATCH_GET,
    M_COMMIT,
    M_BEGIN,
    M_ROLLBACK,
    M_RUN_QUERY,
    M_RUN_AGGREGATION,
    M_BATCH_WRITE,
    M__COUNT
};

#define RETRY(code) (1u << (code))

static const struct {
    const char *name;
    unsigned retry; /* gRPC codes retried (gcp.md 2.1) */
} methods[M__COUNT] = {
    [M_GET] = {"get", RETRY(RPC_RESOURCE_EXHAUSTED) | RETRY(RPC_UNAVAILABLE) | RETRY(RPC_INTERNAL) |
                          RETRY(RPC_DEADLINE_EXCEEDED)},
    [M_BATCH_GET] = {"batchGet",
                     RETRY(RPC_UNAVAILABLE) | RETRY(RPC_INTERNAL) | RETRY(RPC_DEADLINE_EXCEEDED)},
    [M_COMMIT] = {"commit", RETRY(RPC_RESOURCE_EXHAUSTED) | RETRY(RPC_UNAVAILABLE)},
    [M_BEGIN] = {"beginTransaction", RETRY(RPC_RESOURCE_EXHAUSTED) | RETRY(RPC_UNAVAILABLE) |
                                         RETRY(RPC_INTERNAL) | RETRY(RPC_DEADLINE_EXCEEDED)},
    [M_ROLLBACK] = {"rollback", RETRY(RPC_RESOURCE_EXHAUSTED) | RETRY(RPC_UNAVAILABLE) |
                                    RETRY(RPC_INTERNAL) | RETRY(RPC_DEADLINE_EXCEEDED)},
    [M_RUN_QUERY] = {"runQuery",
                     RETRY(RPC_UNAVAILABLE) | RETRY(RPC_INTERNAL) | RETRY(RPC_DEADLINE_EXCEEDED)},
    [M_RUN_AGGREGATION] = {"runAggregationQuery", RETRY(RPC_UNAVAILABLE) | RETRY(RPC_INTERNAL) |
                                                      RETRY(RPC_DEADLINE_EXCEEDED)},
    [M_BATCH_WRITE] = {"batchWrite",
                       RETRY(RPC_RESOURCE_EXHAUSTED) | RETRY(RPC_UNAVAILABLE) | RETRY(RPC_ABORTED)},
};

struct firestore {
    char base[BASE_MAX];
    char database[FIRESTORE_NAME_MAX];
    char root[FIRESTORE_NAME_MAX];
    struct gcp_auth *auth;
    struct http_client *http;
    bool own_http;
    long timeout_ms;
    int max_attempts;
    long retry_base_ms, retry_cap_ms;
    int tx_max_attempts;
    size_t max_response_bytes;
    struct metric *m_calls, *m_seconds, *m_read, *m_written, *m_tx;
    atomic_uint_fast64_t calls, retries, reads, writes, aborts;
};

struct firestore *firestore_new(const struct firestore_options *o, struct error *err)
{
    struct firestore *fs;
    const char *db;

    if (!o || !o->project_id || !*o->project_id || !firestore_id_valid(o->project_id)) {
        error_set(err, ST_INVALID, NULL, "firestore project id is missing or invalid");
        return NULL;
    }
    db = o->database_id && *o->database_id ? o->database_id : "(default)";
    fs = xcalloc(1, sizeof(*fs));
    if (o->emulator_host && *o->emulator_host) {
        if (!str_printf(fs->base, sizeof(fs->base), "http://%s", o->emulator_host))
            goto too_long;
    } else if (!str_copy(fs->base, sizeof(fs->base),
                         o->base_url && *o->base_url ? o->base_url : FIRESTORE_DEFAULT_BASE)) {
        goto too_long;
    }
    /* No trailing slash: paths are appended with one. */
    while (fs->base[0] && fs->base[strlen(fs->base) - 1] == '/')
        fs->base[strlen(fs->base) - 1] = '\0';
    if (!str_printf(fs->database, sizeof(fs->database), "projects/%s/databases/%s", o->project_id,
                    db) ||
        !str_printf(fs->root, sizeof(fs->root), "%s/documents", fs->database))
        goto too_long;
    /* An emulator gets no token, whatever auth was given: "Bearer owner" (gcp.md 2.12). */
    fs->auth = o->emulator_host && *o->emulator_host ? NULL : o->auth;
    fs->http = o->http;
    if (!fs->http) {
        fs->http = http_client_new(NULL);
        fs->own_http = true;
    }
    fs->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    fs->max_attempts = o->max_attempts > 0 ? o->max_attempts : DEFAULT_ATTEMPTS;
    fs->retry_base_ms = o->retry_base_ms > 0 ? o->retry_base_ms : DEFAULT_RETRY_BASE_MS;
    fs->retry_cap_ms = o->retry_cap_ms > 0 ? o->retry_cap_ms : DEFAULT_RETRY_CAP_MS;
    fs->tx_max_attempts = o->tx_max_attempts > 0 ? o->tx_max_attempts : DEFAULT_TX_ATTEMPTS;
    fs->max_response_bytes =
        o->max_response_bytes > 0 ? o->max_response_bytes : DEFAULT_MAX_RESPONSE;
    fs->m_calls = metric_counter("firestore_calls_total",
                                 "Firestore HTTP calls by method and outcome", "method,outcome");
    fs->m_seconds = metric_histogram("firestore_call_seconds", "Firestore call latency", "method",
                                     metrics_latency_buckets, metrics_latency_buckets_n);
    fs->m_read = metric_counter("firestore_documents_read_total",
                                "Firestore documents read, by method", "method");
    fs->m_written = metric_counter("firestore_documents_written_total",
                                   "Firestore documents written, by method", "method");
    fs->m_tx = metric_counter("firestore_transactions_total",
                              "Firestore transaction attempts by outcome", "outcome");
    return fs;
too_long:
    free(fs);
    error_set(err, ST_INVALID, NULL, "firestore base url or database name is too long");
    return NULL;
}

void firestore_free(struct firestore *fs)
{
    if (!fs)
        return;
    if (fs->own_http)
        http_client_free(fs->http);
    free(fs);
}

const char *firestore_database(const struct firestore *fs)
{
    return fs->database;
}

const char *firestore_root(const struct firestore *fs)
{
    return fs->root;
}

const char *firestore_base_url(const struct firestore *fs)
{
    return fs->base;
}

void firestore_stats(const struct firestore *fs, struct firestore_stats *out)
{
    out->calls = atomic_load(&fs->calls);
    out->retries = atomic_load(&fs->retries);
    out->reads = atomic_load(&fs->reads);
    out->writes = atomic_load(&fs->writes);
    out->aborts = atomic_load(&fs->aborts);
}

bool firestore_id_valid(const char *seg)
{
    size_t n;

    if (!seg || !*seg || strchr(seg, '/') || strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0)
        return false;
    n = strlen(seg);
    return n <= 1500 && !(n >= 4 && strncmp(seg, "__", 2) == 0 && strcmp(seg + n - 2, "__") == 0);
}

enum status firestore_name(const struct firestore *fs, char *out, size_t cap, struct error *err,
                           ...)
{
    const char *seg;
    size_t len;
    va_list ap;

    if (!str_copy(out, cap, fs->root))
        return error_set(err, ST_TOO_LARGE, NULL, "firestore document name is too long");
    len = strlen(out);
    va_start(ap, err);
    while ((seg = va_arg(ap, const char *))) {
        size_t n = strlen(seg);

        if (!firestore_id_valid(seg)) {
            va_end(ap);
            return error_set(err, ST_INVALID, NULL, "\"%.64s\" cannot be a firestore document id",
                             seg);
        }
        if (len + 1 + n >= cap) {
            va_end(ap);
            return error_set(err, ST_TOO_LARGE, NULL, "firestore document name is too long");
        }
        out[len++] = '/';
        memcpy(out + len, seg, n + 1);
        len += n;
    }
    va_end(ap);
    return ST_OK;
}

/* ---- HTTP ----------------------------------------------------------------------- */

/* Appends s percent-encoded, keeping unreserved characters (and extra). */
static bool url_escape(struct buf *b, const char *s, const char *extra)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p;

    for (p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p) || (extra && strchr(extra, *p))) {
            if (buf_append(b, p, 1))
                return false;
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};

            if (buf_append(b, e, 3))
                return false;
        }
    }
    return true;
}

/* base/v1/<name>[:<verb>] into b; false when it does not fit. */
static bool build_url(const struct firestore *fs, struct buf *b, const char *name, const char *verb)
{
    buf_init(b, URL_MAX);
    return buf_append_str(b, fs->base) == ST_OK && buf_append_str(b, "/v1/") == ST_OK &&
           url_escape(b, name, "/()") &&
           (!verb || (buf_append(b, ":", 1) == ST_OK && buf_append_str(b, verb) == ST_OK));
}

static void sleep_backoff(const struct firestore *fs, int attempt)
{
    time_sleep_ms(backoff_jitter_ms(attempt, fs->retry_base_ms, fs->retry_cap_ms, random_unit()));
}

static void count_docs(struct firestore *fs, struct metric *m, enum method method, uint64_t n)
{
    const char *labels[] = {methods[method].name};

    if (n == 0)
        return;
    atomic_fetch_add(m == fs->m_read ? &fs->reads : &fs->writes, n);
    metric_add(m, labels, (double)n);
}

/*
 * One call with the method's retry policy. body (borrowed) may be NULL. For
 * streamed methods *out is the array of elements (and *transaction the id
 * from the first element, when asked), else the response object.
 */
static enum status fs_call(struct firestore *fs, enum method m, const char *http_method,
                           const char *url, const json_t *body, bool stream, json_t **out,
                           char **transaction, struct error *err)
{
    char auth[AUTH_HEADER_MAX];
    const char *headers[2] = {auth, NULL};
    struct http_call call = {0};
    const char *mname = methods[m].name;
    json_t *resp = NULL;
    bool reauthed = false;
    enum status s = ST_OK;
    int attempt, rpc = RPC_OK;
    long http = 0;

    *out = NULL;
    call.method = http_method;
    call.url = url;
    call.headers = headers;
    call.timeout_ms = fs->timeout_ms;
    call.max_response_bytes = fs->max_response_bytes;
    call.idempotent = false; /* retries are ours: the policy depends on error.status */
    for (attempt = 1;; attempt++) {
        const char *labels[2] = {mname, NULL};
        int64_t t0 = time_mono_us();

        json_decref(resp);
        resp = NULL;
        if (transaction) {
            free(*transaction);
            *transaction = NULL;
        }
        if (fs->auth) {
            char token[AUTH_HEADER_MAX - 32];

            if ((s = gcp_auth_header(fs->auth, token, sizeof(token), err))) {
                error_prefix(err, "firestore %s: no access token", mname);
                return s;
            }
            str_printf(auth, sizeof(auth), "Authorization: %s", token[0] ? token : "Bearer owner");
        } else {
            str_copy(auth, sizeof(auth), "Authorization: Bearer owner");
        }
        s = http_client_json(fs->http, &call, body, &http, &resp, err);
        metric_observe(fs->m_seconds, labels, (double)(time_mono_us() - t0) / 1e6);
        atomic_fetch_add(&fs->calls, 1);
        if (attempt > 1)
            atomic_fetch_add(&fs->retries, 1);
        if (s != ST_OK) {
            rpc = s == ST_TIMEOUT       ? RPC_DEADLINE_EXCEEDED
                  : s == ST_UNAVAILABLE ? RPC_UNAVAILABLE
                                        : RPC_UNKNOWN;
            labels[1] = "transport_error";
        } else if (stream) {
            json_t *elements = NULL;

            s = parse_stream(mname, http, resp, &elements, transaction, &rpc, err);
            json_decref(resp);
            resp = elements;
            labels[1] = rpc_table[rpc].lower;
        } else {
            s = firestore_response_status(mname, http, resp, &rpc, err);
            labels[1] = rpc_table[rpc].lower;
        }
        metric_add(fs->m_calls, labels, 1);
        if (s == ST_OK)
            break;
        if (rpc == RPC_UNAUTHENTICATED && fs->auth && !reauthed) {
            gcp_auth_invalidate(fs->auth);
            reauthed = true;
            continue;
        }
        if (!(methods[m].retry & RETRY(rpc)) || attempt >= fs->max_attempts)
            break;
        log_debug("firestore %s: %s, attempt %d of %d", mname, err ? err->message : "failed",
                  attempt, fs->max_attempts);
        sleep_backoff(fs, attempt);
    }
    if (s != ST_OK) {
        json_decref(resp);
        if (transaction) {
            free(*transaction);
            *transaction = NULL;
        }
        if (attempt > 1 && err)
            error_prefix(err, "after %d attempts", attempt);
        return s;
    }
    if (!resp)
        resp = stream ? json_array() : json_object();
    *out = resp;
    return ST_OK;
}

/* Adds "transaction" or "newTransaction" (begin) to a read request. */
static void add_read_tx(json_t *req, const char *transaction, bool begin, const char *retry_of)
{
    json_t *rw;

    if (transaction) {
        json_object_set_new(req, "transaction", json_string(transaction));
    } else if (begin) {
        rw = json_object();
        if (retry_of)
            json_object_set_new(rw, "retryTransaction", json_string(retry_of));
        json_object_set_new(req, "newTransaction", value1("readWrite", rw));
    }
}

static json_t *mask_json(const char *const *mask)
{
    json_t *paths = json_array();

    while (mask && *mask)
        json_array_append_new(paths, json_string(*mask++));
    return value1("fieldPaths", paths);
}

enum status firestore_get(struct firestore *fs, const char *name, const char *const *mask,
                          json_t **doc, struct error *err)
{
    struct buf url;
    enum status s;

    *doc = NULL;
    if (!build_url(fs, &url, name, NULL))
        goto too_long;
    while (mask && *mask) {
        if (buf_append_str(&url, url.len && strchr(buf_str(&url), '?') ? "&" : "?") ||
            buf_append_str(&url, "mask.fieldPaths=") || !url_escape(&url, *mask, NULL))
            goto too_long;
        mask++;
    }
    s = fs_call(fs, M_GET, "GET", buf_str(&url), NULL, false, doc, NULL, err);
    buf_release(&url);
    if (s == ST_OK)
        count_docs(fs, fs->m_read, M_GET, 1);
    return s;
too_long:
    buf_release(&url);
    return error_set(err, ST_TOO_LARGE, NULL, "firestore get: url is too long");
}

static enum status batch_get(struct firestore *fs, const char *const *names, size_t n,
                             const char *const *mask, const char *transaction, bool begin,
                             const char *retry_of, json_t **docs, char **new_tx, struct error *err)
{
    json_t *req = json_object(), *list = json_array(), *elements = NULL, *by_name, *el, *doc;
    struct buf url;
    enum status s;
    size_t i;
    uint64_t found = 0;

    *docs = NULL;
    for (i = 0; i < n; i++)
        json_array_append_new(list, json_string(names[i]));
    json_object_set_new(req, "documents", list);
    if (mask)
        json_object_set_new(req, "mask", mask_json(mask));
    add_read_tx(req, transaction, begin, retry_of);
    if (!build_url(fs, &url, fs->root, "batchGet"))
        BUG("database name does not fit a url");
    s = fs_call(fs, M_BATCH_GET, "POST", buf_str(&url), req, true, &elements, new_tx, err);
    buf_release(&url);
    json_decref(req);
    if (s)
        return s;
    /* Answers come in any order, duplicates elided: align them with the names asked for. */
    by_name = json_object();
    json_array_foreach(elements, i, el)
    {
        doc = json_object_get(el, "found");
        if (json_is_object(doc) && firestore_doc_name(doc)) {
            json_object_set(by_name, firestore_doc_name(doc), doc);
            found++;
        }
    }
    *docs = json_array();
    for (i = 0; i < n; i++) {
        doc = json_object_get(by_name, names[i]);
        json_array_append(*docs, doc ? doc : json_null());
    }
    json_decref(by_name);
    json_decref(elements);
    count_docs(fs, fs->m_read, M_BATCH_GET, found);
    if (begin && new_tx && !*new_tx) {
        json_decref(*docs);
        *docs = NULL;
        return error_set(err, ST_INTERNAL, "firestore_bad_response",
                         "firestore batchGet: no transaction id in the answer");
    }
    return ST_OK;
}

enum status firestore_batch_get(struct firestore *fs, const char *const *names, size_t n,
                                const char *const *mask, const char *transaction, json_t **docs,
                                struct error *err)
{
    return batch_get(fs, names, n, mask, transaction, false, NULL, docs, NULL, err);
}

enum status firestore_commit(struct firestore *fs, const json_t *writes, const char *transaction,
                             json_t **response, struct error *err)
{
    json_t *req = json_object(), *resp = NULL;
    struct buf url;
    enum status s;

    if (response)
        *response = NULL;
    json_object_set(req, "writes", (json_t *)writes);
    if (transaction)
        json_object_set_new(req, "transaction", json_string(transaction));
    if (!build_url(fs, &url, fs->root, "commit"))
        BUG("database name does not fit a url");
    s = fs_call(fs, M_COMMIT, "POST", buf_str(&url), req, false, &resp, NULL, err);
    buf_release(&url);
    json_decref(req);
    if (s)
        return s;
    count_docs(fs, fs->m_written, M_COMMIT, json_array_size(writes));
    if (response)
        *response = resp;
    else
        json_decref(resp);
    return ST_OK;
}

enum status firestore_begin_transaction(struct firestore *fs, bool read_only, const char *retry_of,
                                        char **transaction, struct error *err)
{
    json_t *req = json_object(), *opts = json_object(), *mode = json_object(), *resp = NULL;
    const char *id;
    struct buf url;
    enum status s;

    *transaction = NULL;
    if (!read_only && retry_of)
        json_object_set_new(mode, "retryTransaction", json_string(retry_of));
    json_object_set_new(opts, read_only ? "readOnly" : "readWrite", mode);
    json_object_set_new(req, "options", opts);
    if (!build_url(fs, &url, fs->root, "beginTransaction"))
        BUG("database name does not fit a url");
    s = fs_call(fs, M_BEGIN, "POST", buf_str(&url), req, false, &resp, NULL, err);
    buf_release(&url);
    json_decref(req);
    if (s)
        return s;
    id = json_str_or(resp, "transaction", NULL);
    if (id && *id)
        *transaction = xstrdup(id);
    json_decref(resp);
    if (!*transaction)
        return error_set(err, ST_INTERNAL, "firestore_bad_response",
                         "firestore beginTransaction: no transaction id in the answer");
    return ST_OK;
}

enum status firestore_rollback(struct firestore *fs, const char *transaction, struct error *err)
{
    json_t *req = json_pack("{s:s}", "transaction", transaction), *resp = NULL;
    struct buf url;
    enum status s;

    if (!build_url(fs, &url, fs->root, "rollback"))
        BUG("database name does not fit a url");
    s = fs_call(fs, M_ROLLBACK, "POST", buf_str(&url), req, false, &resp, NULL, err);
    buf_release(&url);
    json_decref(req);
    json_decref(resp);
    return s;
}

static enum status run_query(struct firestore *fs, const char *parent, const json_t *query,
                             const char *transaction, bool begin, const char *retry_of,
                             json_t **docs, char **new_tx, struct error *err)
{
    json_t *req = json_object(), *elements = NULL;
    struct buf url;
    enum status s;

    *docs = NULL;
    json_object_set(req, "structuredQuery", (json_t *)query);
    add_read_tx(req, transaction, begin, retry_of);
    if (!build_url(fs, &url, parent, "runQuery")) {
        buf_release(&url);
        json_decref(req);
        return error_set(err, ST_TOO_LARGE, NULL, "firestore runQuery: url is too long");
    }
    s = fs_call(fs, M_RUN_QUERY, "POST", buf_str(&url), req, true, &elements, new_tx, err);
    buf_release(&url);
    json_decref(req);
    if (s)
        return s;
    *docs = firestore_stream_documents(elements);
    json_decref(elements);
    count_docs(fs, fs->m_read, M_RUN_QUERY, json_array_size(*docs));
    if (begin && new_tx && !*new_tx) {
        json_decref(*docs);
        *docs = NULL;
        return error_set(err, ST_INTERNAL, "firestore_bad_response",
                         "firestore runQuery: no transaction id in the answer");
    }
    return ST_OK;
}

enum status firestore_run_query(struct firestore *fs, const char *parent, const json_t *query,
                                const char *transaction, json_t **docs, struct error *err)
{
    return run_query(fs, parent, query, transaction, false, NULL, docs, NULL, err);
}

enum status firestore_run_aggregation(struct firestore *fs, const char *parent,
                                      const json_t *aggregation, const char *transaction,
                                      json_t **fields, struct error *err)
{
    json_t *req = json_object(), *elements = NULL, *el, *f;
    struct buf url;
    enum status s;
    size_t i;

    *fields = NULL;
    json_object_set(req, "structuredAggregationQuery", (json_t *)aggregation);
    if (transaction)
        json_object_set_new(req, "transaction", json_string(transaction));
    if (!build_url(fs, &url, parent, "runAggregationQuery")) {
        buf_release(&url);
        json_decref(req);
        return error_set(err, ST_TOO_LARGE, NULL, "firestore runAggregationQuery: url too long");
    }
    s = fs_call(fs, M_RUN_AGGREGATION, "POST", buf_str(&url), req, true, &elements, NULL, err);
    buf_release(&url);
    json_decref(req);
    if (s)
        return s;
    json_array_foreach(elements, i, el)
    {
        f = json_object_get(json_object_get(el, "result"), "aggregateFields");
        if (json_is_object(f)) {
            *fields = json_incref(f);
            break;
        }
    }
    json_decref(elements);
    if (!*fields)
        return error_set(err, ST_INTERNAL, "firestore_bad_response",
                         "firestore runAggregationQuery: no result in the answer");
    count_docs(fs, fs->m_read, M_RUN_AGGREGATION, 1);
    return ST_OK;
}

static bool write_code_retryable(int code)
{
    return code == RPC_ABORTED || code == RPC_RESOURCE_EXHAUSTED || code == RPC_UNAVAILABLE;
}

enum status firestore_batch_write(struct firestore *fs, const json_t *writes, int *codes,
                                  struct error *err)
{
    size_t n = json_array_size(writes), i, j, pending = n, *idx = NULL;
    json_t *req = NULL, *list, *resp = NULL, *status, *st;
    struct buf url;
    enum status s = ST_OK;
    uint64_t applied = 0;
    int round;

    for (i = 0; i < n; i++)
        codes[i] = -1;
    if (n == 0)
        return ST_OK;
    if (!build_url(fs, &url, fs->root, "batchWrite"))
        BUG("database name does not fit a url");
    idx = xcalloc(n, sizeof(*idx));
    for (round = 1; pending > 0; round++) {
        req = json_object();
        list = json_array();
        for (i = 0, j = 0; i < n; i++) {
            if (codes[i] == -1 || write_code_retryable(codes[i])) {
                json_array_append(list, json_array_get(writes, i));
                idx[j++] = i;
            }
        }
        json_object_set_new(req, "writes", list);
        s = fs_call(fs, M_BATCH_WRITE, "POST", buf_str(&url), req, false, &resp, NULL, err);
        json_decref(req);
        if (s)
            break;
        status = json_object_get(resp, "status");
        pending = 0;
        for (i = 0; i < j; i++) {
            st = json_array_get(status, i);
            codes[idx[i]] = (int)json_int_or(st, "code", 0);
            if (codes[idx[i]] == RPC_OK)
                applied++;
            else if (write_code_retryable(codes[idx[i]]))
                pending++;
        }
        json_decref(resp);
        resp = NULL;
        if (pending == 0 || round >= fs->max_attempts)
            break;
        sleep_backoff(fs, round);
    }
    count_docs(fs, fs->m_written, M_BATCH_WRITE, applied);
    buf_release(&url);
    free(idx);
    return s;
}

/* ---- transactions ------------------------------------------------------------ */

struct firestore_tx {
    struct firestore *fs;
    char *id;       /* NULL until the first read began the transaction */
    char *retry_of; /* the aborted attempt's id */
    json_t *writes;
    size_t bytes;
    int attempt;
};

enum status firestore_tx_get(struct firestore_tx *tx, const char *const *names, size_t n,
                             const char *const *mask, json_t **docs, struct error *err)
{
    if (tx->id)
        return batch_get(tx->fs, names, n, mask, tx->id, false, NULL, docs, NULL, err);
    return batch_get(tx->fs, names, n, mask, NULL, true, tx->retry_of, docs, &tx->id, err);
}

enum status firestore_tx_query(struct firestore_tx *tx, const char *parent, const json_t *query,
                               json_t **docs, struct error *err)
{
    if (tx->id)
        return run_query(tx->fs, parent, query, tx->id, false, NULL, docs, NULL, err);
    return run_query(tx->fs, parent, query, NULL, true, tx->retry_of, docs, &tx->id, err);
}

void firestore_tx_write(struct firestore_tx *tx, json_t *write)
{
    tx->bytes += firestore_write_size(write) + 1;
    json_array_append_new(tx->writes, write);
}

size_t firestore_tx_write_count(const struct firestore_tx *tx)
{
    return json_array_size(tx->writes);
}

size_t firestore_tx_write_bytes(const struct firestore_tx *tx)
{
    return tx->bytes;
}

int firestore_tx_attempt(const struct firestore_tx *tx)
{
    return tx->attempt;
}

struct firestore *firestore_tx_client(const struct firestore_tx *tx)
{
    return tx->fs;
}

static void tx_outcome(struct firestore *fs, const char *outcome)
{
    const char *labels[] = {outcome};

    metric_add(fs->m_tx, labels, 1);
}

/* Ends an attempt that will not commit: releases its locks, keeping err as it is. */
static void tx_abandon(struct firestore_tx *tx)
{
    struct error rerr = {0};

    if (tx->id && firestore_rollback(tx->fs, tx->id, &rerr) != ST_OK)
        log_debug("firestore: cannot roll back a transaction: %s", rerr.message);
}

enum status firestore_run_transaction(struct firestore *fs, firestore_tx_fn fn, void *ud,
                                      struct error *err)
{
    struct firestore_tx tx = {.fs = fs};
    enum status s;

    for (tx.attempt = 1;; tx.attempt++) {
        json_decref(tx.writes);
        tx.writes = json_array();
        tx.bytes = 0;
        s = fn(&tx, ud, err);
        if (s == ST_OK) {
            if (json_array_size(tx.writes) == 0) {
                tx_abandon(&tx);
                tx_outcome(fs, "read_only");
                break;
            }
            if (tx.bytes > FIRESTORE_REQUEST_LIMIT - 4096) {
                tx_abandon(&tx);
                s = error_set(err, ST_TOO_LARGE, NULL,
                              "firestore transaction: %zu writes of %zu bytes exceed the "
                              "request limit",
                              json_array_size(tx.writes), tx.bytes);
                tx_outcome(fs, "failed");
                break;
            }
            s = firestore_commit(fs, tx.writes, tx.id, NULL, err);
            if (s == ST_OK) {
                tx_outcome(fs, "committed");
                break;
            }
        }
        /*
         * Roll back whatever failed, ABORTED included: Firestore has usually ended an aborted
         * transaction already (the rollback then fails harmlessly), but an emulator or a
         * proxy may not have, and its locks would stall the retry.
         */
        tx_abandon(&tx);
        if (s != ST_ABORTED) {
            tx_outcome(fs, "failed");
            break;
        }
        tx_outcome(fs, "aborted");
        atomic_fetch_add(&fs->aborts, 1);
        if (tx.attempt >= fs->tx_max_attempts) {
            error_prefix(err, "transaction aborted %d times", tx.attempt);
            break;
        }
        /* Retry with the aborted id: the new transaction keeps the old one's priority. */
        if (tx.id) {
            free(tx.retry_of);
            tx.retry_of = tx.id;
            tx.id = NULL;
        }
        time_sleep_ms(
            backoff_jitter_ms(tx.attempt, TX_BACKOFF_BASE_MS, TX_BACKOFF_CAP_MS, random_unit()));
    }
    if (s == ST_OK && tx.attempt > 1)
        error_clear(err);
    json_decref(tx.writes);
    free(tx.id);
    free(tx.retry_of);
    return s;
}
