/*
 * The Firestore client's pure parts, without an emulator: Value builders and
 * readers, plain JSON conversion, field paths, write builders, error
 * mapping and the framing of streamed answers.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check_main.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/util.h"
#include "gcp/firestore.h"

static json_t *parse(const char *text)
{
    struct error err = {0};
    json_t *v = json_parse(text, strlen(text), &err);

    ck_assert_msg(v != NULL, "cannot parse %s: %s", text, err.message);
    return v;
}

/* Asserts that v dumps (compactly) to want, and releases v. */
static void dumps_as(json_t *v, const char *want)
{
    char *got;

    ck_assert_ptr_nonnull(v);
    got = json_dump_compact(v);
    ck_assert_msg(strcmp(got, want) == 0, "got %s, want %s", got, want);
    free(got);
    json_decref(v);
}

/* ---- integers ------------------------------------------------------------ */

static const struct {
    int64_t v;
    const char *json;
} int_rows[] = {
    {0, "{\"integerValue\":\"0\"}"},
    {-1, "{\"integerValue\":\"-1\"}"},
    {INT64_MAX, "{\"integerValue\":\"9223372036854775807\"}"},
    {INT64_MIN, "{\"integerValue\":\"-9223372036854775808\"}"},
    {1767225600000000, "{\"integerValue\":\"1767225600000000\"}"},
};

START_TEST(integers_round_trip)
{
    json_t *v = firestore_value_int(int_rows[_i].v);
    int64_t got = 0;

    ck_assert_int_eq(firestore_value_kind(v), FS_INT);
    ck_assert(firestore_value_get_int(v, &got));
    ck_assert_int_eq(got, int_rows[_i].v);
    dumps_as(v, int_rows[_i].json);
    v = parse(int_rows[_i].json);
    ck_assert(firestore_value_get_int(v, &got));
    ck_assert_int_eq(got, int_rows[_i].v);
    json_decref(v);
}
END_TEST

static const struct {
    const char *json;
    bool ok;
    int64_t want;
} int_parse_rows[] = {
    {"{\"integerValue\":42}", true, 42}, /* a number on input is accepted */
    {"{\"integerValue\":\"9223372036854775808\"}", false, 0},
    {"{\"integerValue\":\"-9223372036854775809\"}", false, 0},
    {"{\"integerValue\":\"12x\"}", false, 0},
    {"{\"integerValue\":\"\"}", false, 0},
    {"{\"integerValue\":true}", false, 0},
    {"{\"doubleValue\":1}", false, 0},
};

START_TEST(integers_parse_strictly)
{
    json_t *v = parse(int_parse_rows[_i].json);
    int64_t got = 0;

    ck_assert_int_eq(firestore_value_get_int(v, &got), int_parse_rows[_i].ok);
    if (int_parse_rows[_i].ok)
        ck_assert_int_eq(got, int_parse_rows[_i].want);
    json_decref(v);
}
END_TEST

/* ---- doubles --------------------------------------------------------------- */

START_TEST(doubles_round_trip)
{
    static const double values[] = {0.0, -0.0, 0.1, -2.5, 1e308, 4.9e-324, 1.0 / 3.0, 12.375};
    static const struct {
        double v;
        const char *json;
    } special[] = {
        {NAN, "{\"doubleValue\":\"NaN\"}"},
        {INFINITY, "{\"doubleValue\":\"Infinity\"}"},
        {-INFINITY, "{\"doubleValue\":\"-Infinity\"}"},
    };
    json_t *v, *back;
    double got;
    char *text;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(values); i++) {
        v = firestore_value_double(values[i]);
        text = json_dump_compact(v); /* as sent: 17 significant digits */
        back = parse(text);
        ck_assert(firestore_value_get_double(back, &got));
        ck_assert_msg(memcmp(&got, &values[i], sizeof(got)) == 0, "%.17g came back as %.17g",
                      values[i], got);
        free(text);
        json_decref(back);
        json_decref(v);
    }
    for (i = 0; i < ARRAY_SIZE(special); i++) {
        v = firestore_value_double(special[i].v);
        ck_assert(firestore_value_get_double(v, &got));
        if (isnan(special[i].v))
            ck_assert(isnan(got));
        else
            ck_assert(got == special[i].v);
        dumps_as(v, special[i].json);
        v = parse(special[i].json);
        ck_assert(firestore_value_get_double(v, &got));
        ck_assert(isnan(special[i].v) ? isnan(got) : got == special[i].v);
        json_decref(v);
    }
    /* The server may send an integral double as a JSON integer; integers read as doubles too. */
    v = parse("{\"doubleValue\":2}");
    ck_assert(firestore_value_get_double(v, &got));
    ck_assert(got == 2.0);
    json_decref(v);
    v = parse("{\"integerValue\":\"-7\"}");
    ck_assert(firestore_value_get_double(v, &got));
    ck_assert(got == -7.0);
    json_decref(v);
    v = parse("{\"doubleValue\":\"inf\"}");
    ck_assert(!firestore_value_get_double(v, &got));
    json_decref(v);
}
END_TEST

/* ---- timestamps -------------------------------------------------------------- */

static const struct {
    int64_t us;
    const char *text;
} ts_rows[] = {
    {0, "1970-01-01T00:00:00.000000Z"},
    {1, "1970-01-01T00:00:00.000001Z"},
    {-1, "1969-12-31T23:59:59.999999Z"},
    {1767225600123456, "2026-01-01T00:00:00.123456Z"},
    {-62135596800000000, "0001-01-01T00:00:00.000000Z"},
    {253402300799999999, "9999-12-31T23:59:59.999999Z"},
};

START_TEST(timestamps_round_trip)
{
    json_t *v = firestore_value_timestamp(ts_rows[_i].us);
    char want[128];
    int64_t got = 0;

    ck_assert_int_eq(firestore_value_kind(v), FS_TIMESTAMP);
    ck_assert(firestore_value_get_timestamp(v, &got));
    ck_assert_int_eq(got, ts_rows[_i].us);
    str_printf(want, sizeof(want), "{\"timestampValue\":\"%s\"}", ts_rows[_i].text);
    dumps_as(v, want);
}
END_TEST

START_TEST(timestamps_parse_and_clamp)
{
    static const struct {
        const char *json;
        int64_t want;
    } rows[] = {
        {"{\"timestampValue\":\"2026-01-01T00:00:00Z\"}", 1767225600000000},
        {"{\"timestampValue\":\"2026-01-01T00:00:00.123Z\"}", 1767225600123000},
        {"{\"timestampValue\":\"2026-01-01T00:00:00.123456789Z\"}", 1767225600123456},
        {"{\"timestampValue\":\"2026-01-01T01:00:00+01:00\"}", 1767225600000000},
    };
    int64_t got;
    json_t *v;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        v = parse(rows[i].json);
        ck_assert_msg(firestore_value_get_timestamp(v, &got), "%s", rows[i].json);
        ck_assert_int_eq(got, rows[i].want);
        json_decref(v);
    }
    v = parse("{\"timestampValue\":\"yesterday\"}");
    ck_assert(!firestore_value_get_timestamp(v, &got));
    json_decref(v);
    /* Beyond Firestore's range: clamped to it. */
    dumps_as(firestore_value_timestamp(INT64_MAX),
             "{\"timestampValue\":\"9999-12-31T23:59:59.999999Z\"}");
    dumps_as(firestore_value_timestamp(INT64_MIN),
             "{\"timestampValue\":\"0001-01-01T00:00:00.000000Z\"}");
}
END_TEST

/* ---- bytes, strings, references, geo points ------------------------------------ */

START_TEST(bytes_all_values)
{
    unsigned char data[256];
    struct buf out;
    json_t *v, *back;
    char *text;
    int i;

    for (i = 0; i < 256; i++)
        data[i] = (unsigned char)i;
    v = firestore_value_bytes(data, sizeof(data));
    ck_assert_int_eq(firestore_value_kind(v), FS_BYTES);
    text = json_dump_compact(v);
    ck_assert_ptr_null(strchr(text, '-')); /* standard alphabet, with padding */
    ck_assert_ptr_nonnull(strstr(text, "+/w==\""));
    back = parse(text);
    buf_init(&out, 1024);
    ck_assert_int_eq(firestore_value_get_bytes(back, &out), ST_OK);
    ck_assert_uint_eq(out.len, sizeof(data));
    ck_assert(memcmp(out.data, data, sizeof(data)) == 0);
    buf_release(&out);
    free(text);
    json_decref(back);
    json_decref(v);

    dumps_as(firestore_value_bytes("", 0), "{\"bytesValue\":\"\"}");
    v = parse("{\"bytesValue\":\"AP8\"}"); /* unpadded is accepted */
    buf_init(&out, 16);
    ck_assert_int_eq(firestore_value_get_bytes(v, &out), ST_OK);
    ck_assert_uint_eq(out.len, 2);
    ck_assert_int_eq((unsigned char)out.data[1], 0xff);
    buf_release(&out);
    json_decref(v);
    v = parse("{\"bytesValue\":\"not base64!\"}");
    buf_init(&out, 16);
    ck_assert_int_eq(firestore_value_get_bytes(v, &out), ST_INVALID);
    buf_release(&out);
    json_decref(v);
}
END_TEST

START_TEST(other_kinds)
{
    double lat, lng;
    const char *s;
    json_t *v, *plain = NULL;
    bool b;

    dumps_as(firestore_value_null(), "{\"nullValue\":null}");
    dumps_as(firestore_value_string(NULL), "{\"nullValue\":null}");
    v = firestore_value_bool(true);
    ck_assert(firestore_value_get_bool(v, &b) && b);
    dumps_as(v, "{\"booleanValue\":true}");
    v = firestore_value_string("héllo \"w\"");
    ck_assert(firestore_value_get_string(v, &s));
    ck_assert_str_eq(s, "héllo \"w\"");
    ck_assert(!firestore_value_get_reference(v, &s));
    json_decref(v);
    v = firestore_value_reference("projects/p/databases/(default)/documents/a/b");
    ck_assert(firestore_value_get_reference(v, &s));
    ck_assert_str_eq(s, "projects/p/databases/(default)/documents/a/b");
    json_decref(v);
    v = firestore_value_geo(48.85, 2.35);
    ck_assert(firestore_value_get_geo(v, &lat, &lng));
    ck_assert(lat == 48.85 && lng == 2.35);
    ck_assert_int_eq(firestore_value_to_json(v, &plain, NULL), ST_OK);
    dumps_as(plain, "{\"latitude\":48.850000000000001,\"longitude\":2.3500000000000001}");
    json_decref(v);
    v = parse("{\"geoPointValue\":{\"latitude\":1.5}}"); /* zero fields are omitted */
    ck_assert(firestore_value_get_geo(v, &lat, &lng));
    ck_assert(lat == 1.5 && lng == 0.0);
    json_decref(v);
    /* Invalid UTF-8: each bad byte becomes U+FFFD, the valid sequences stay. */
    dumps_as(firestore_value_stringn("ok\xff\xc3\xa9\xed\xa0\x80!", 9),
             "{\"stringValue\":\"ok\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd"
             "\xef\xbf\xbd!\"}");
    dumps_as(firestore_value_stringn("\xc3", 1), "{\"stringValue\":\"\xef\xbf\xbd\"}");
    v = parse("{\"nullValue\":\"NULL_VALUE\"}");
    ck_assert_int_eq(firestore_value_kind(v), FS_NULL);
    json_decref(v);

    /* Not Values. */
    static const char *const bad[] = {
        "{}",
        "{\"integerValue\":\"1\",\"stringValue\":\"x\"}",
        "{\"fooValue\":1}",
        "[]",
        "3",
        "{\"booleanValue\":\"true\"}",
        "{\"mapValue\":[]}",
        "{\"stringValue\":null}",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        v = parse(bad[i]);
        ck_assert_msg(firestore_value_kind(v) == FS_INVALID, "%s", bad[i]);
        ck_assert_int_eq(firestore_value_to_json(v, &plain, NULL), ST_INVALID);
        json_decref(v);
    }
}
END_TEST

/* ---- maps and arrays -------------------------------------------------------------- */

static const struct {
    const char *value;
    const char *plain;
} empty_rows[] = {
    {"{\"mapValue\":{}}", "{}"},
    {"{\"mapValue\":{\"fields\":{}}}", "{}"},
    {"{\"arrayValue\":{}}", "[]"},
    {"{\"arrayValue\":{\"values\":[]}}", "[]"},
};

START_TEST(empty_containers_both_shapes)
{
    json_t *v = parse(empty_rows[_i].value), *plain = NULL;

    ck_assert_int_eq(firestore_value_to_json(v, &plain, NULL), ST_OK);
    dumps_as(plain, empty_rows[_i].plain);
    ck_assert_uint_eq(firestore_array_size(v), 0);
    ck_assert_ptr_null(firestore_map_fields(v));
    ck_assert_ptr_null(firestore_array_get(v, 0));
    json_decref(v);
}
END_TEST

static const char *const plain_rows[] = {
    "{}",
    "[]",
    "{\"a\":{\"b\":{\"c\":[1,2.5,null,true,\"x\",{\"d\":[]}]}}}",
    "{\"ключ\":\"значение\",\"日本\":[\"語\"],\"emoji 🎉\":{\"k-e.y\":1}}",
    "{\"n\":-9223372036854775808,\"m\":9223372036854775807,\"r\":1.5e300,\"z\":-0.0}",
    "[{\"a\":[]},{},[]]",
    "\"just a string\"",
    "null",
};

START_TEST(plain_json_round_trips)
{
    json_t *plain = parse(plain_rows[_i]), *v = NULL, *back = NULL;
    struct error err = {0};
    char *a, *b;

    if (strcmp(plain_rows[_i], "[{\"a\":[]},{},[]]") == 0) {
        /* An array directly inside an array: Firestore refuses it, so do we. */
        ck_assert_int_eq(firestore_value_from_json(plain, &v, &err), ST_INVALID);
        ck_assert_ptr_nonnull(strstr(err.message, "array"));
        json_decref(plain);
        return;
    }
    ck_assert_int_eq(firestore_value_from_json(plain, &v, &err), ST_OK);
    ck_assert_int_eq(firestore_value_to_json(v, &back, &err), ST_OK);
    a = json_dump_compact(plain);
    b = json_dump_compact(back);
    ck_assert_msg(json_equal(plain, back), "%s came back as %s", a, b);
    free(a);
    free(b);
    json_decref(plain);
    json_decref(back);
    json_decref(v);
}
END_TEST

START_TEST(plain_json_shapes_and_refusals)
{
    struct error err = {0};
    json_t *plain, *v = NULL, *deep;
    int i;

    plain = parse("{\"a\":1,\"b\":[1.5,\"s\"],\"c\":{}}");
    ck_assert_int_eq(firestore_value_from_json(plain, &v, &err), ST_OK);
    dumps_as(v, "{\"mapValue\":{\"fields\":{\"a\":{\"integerValue\":\"1\"},\"b\":{\"arrayValue\":"
                "{\"values\":[{\"doubleValue\":1.5},{\"stringValue\":\"s\"}]}},\"c\":{"
                "\"mapValue\":{}}}}}");
    json_decref(plain);

    static const char *const refused[] = {"{\"__name__\":1}", "{\"\":1}", "{\"a\":[[1]]}",
                                          "{\"x\":{\"__k__\":true}}"};
    size_t k;

    for (k = 0; k < ARRAY_SIZE(refused); k++) {
        plain = parse(refused[k]);
        error_clear(&err);
        ck_assert_msg(firestore_value_from_json(plain, &v, &err) == ST_INVALID, "%s", refused[k]);
        ck_assert_ptr_null(v);
        json_decref(plain);
    }
    /* Keys that merely look special are fine. */
    plain = parse("{\"__a\":1,\"b__\":2,\"_\":3,\"____\":4}");
    error_clear(&err);
    ck_assert_int_eq(firestore_value_from_json(plain, &v, &err), ST_INVALID); /* "____" */
    json_decref(plain);
    plain = parse("{\"__a\":1,\"b__\":2,\"_\":3,\"___\":4}");
    ck_assert_int_eq(firestore_value_from_json(plain, &v, &err), ST_OK);
    json_decref(v);
    json_decref(plain);

    /* Nesting: 20 levels are fine, 21 are not. */
    for (k = 20; k <= 21; k++) {
        deep = json_integer(1);
        for (i = 0; i < (int)k; i++)
            deep = json_pack("{s:o}", "d", deep);
        ck_assert_int_eq(firestore_value_from_json(deep, &v, &err), k == 20 ? ST_OK : ST_INVALID);
        json_decref(v);
        v = NULL;
        json_decref(deep);
    }

    /* Other kinds to plain JSON. */
    v = parse("{\"mapValue\":{\"fields\":{\"t\":{\"timestampValue\":\"2026-01-01T00:00:00Z\"},"
              "\"b\":{\"bytesValue\":\"AP8=\"},\"n\":{\"doubleValue\":\"NaN\"},"
              "\"r\":{\"referenceValue\":\"projects/p/databases/d/documents/a/b\"}}}}");
    ck_assert_int_eq(firestore_value_to_json(v, &plain, &err), ST_OK);
    dumps_as(plain, "{\"t\":\"2026-01-01T00:00:00Z\",\"b\":\"AP8=\",\"n\":\"NaN\","
                    "\"r\":\"projects/p/databases/d/documents/a/b\"}");
    json_decref(v);
}
END_TEST

/* ---- documents -------------------------------------------------------------------- */

START_TEST(document_accessors)
{
    json_t *doc = parse("{\"name\":\"projects/p/databases/(default)/documents/batches/b1/items/"
                        "i-7\",\"fields\":{\"x\":{\"integerValue\":\"3\"}},\"updateTime\":"
                        "\"2026-01-01T00:00:00.000001Z\"}");
    int64_t x = 0;

    ck_assert_str_eq(firestore_doc_id(doc), "i-7");
    ck_assert_str_eq(firestore_doc_update_time(doc), "2026-01-01T00:00:00.000001Z");
    ck_assert(firestore_value_get_int(firestore_doc_get(doc, "x"), &x));
    ck_assert_int_eq(x, 3);
    ck_assert_ptr_null(firestore_doc_get(doc, "y"));
    json_decref(doc);
    doc = parse("{\"name\":\"projects/p/databases/(default)/documents/a/b\"}");
    ck_assert_ptr_null(firestore_doc_fields(doc)); /* a document without fields */
    ck_assert_ptr_null(firestore_doc_get(doc, "x"));
    json_decref(doc);
}
END_TEST

/* ---- field paths -------------------------------------------------------------------- */

static const struct {
    const char *segment;
    const char *quoted;
} path_rows[] = {
    {"a", "a"},
    {"_ok9", "_ok9"},
    {"camelCase", "camelCase"},
    {"a.b", "`a.b`"},
    {"x-y", "`x-y`"},
    {"1abc", "`1abc`"},
    {"bak`tik", "`bak\\`tik`"},
    {"back\\slash", "`back\\\\slash`"},
    {"with space", "`with space`"},
    {"ünï", "`ünï`"},
    {"日本", "`日本`"},
    {"`", "`\\``"},
};

START_TEST(field_path_quoting)
{
    char out[64];
    const char *seg[1] = {path_rows[_i].segment};

    ck_assert_int_eq(firestore_field_simple(path_rows[_i].segment),
                     strcmp(path_rows[_i].segment, path_rows[_i].quoted) == 0);
    ck_assert_int_eq(firestore_field_path(out, sizeof(out), seg, 1), ST_OK);
    ck_assert_str_eq(out, path_rows[_i].quoted);
}
END_TEST

START_TEST(field_path_joining_and_bounds)
{
    const char *segs[] = {"stats", "hits-2026", "a.b", "x"};
    const char *empty[] = {"a", ""};
    char out[64], small[8], big[2000];
    char *longseg = xmalloc(1600);

    ck_assert_int_eq(firestore_field_path(out, sizeof(out), segs, 4), ST_OK);
    ck_assert_str_eq(out, "stats.`hits-2026`.`a.b`.x");
    ck_assert_int_eq(firestore_field_path(out, sizeof(out), empty, 2), ST_INVALID);
    ck_assert_int_eq(firestore_field_path(out, sizeof(out), segs, 0), ST_INVALID);
    ck_assert_int_eq(firestore_field_path(small, sizeof(small), segs, 2), ST_TOO_LARGE);
    memset(longseg, 'a', 1599);
    longseg[1599] = '\0';
    segs[0] = longseg;
    ck_assert_int_eq(firestore_field_path(big, sizeof(big), segs, 1), ST_TOO_LARGE); /* > 1500 */
    free(longseg);
}
END_TEST

/* ---- writes ----------------------------------------------------------------------- */

START_TEST(write_builders)
{
    const char *name = "projects/p/databases/(default)/documents/jobs/j1";
    json_t *f = json_object(), *w;

    json_object_set_new(f, "state", firestore_value_string("done"));
    json_object_set_new(f, "a.b", firestore_value_int(1));
    w = firestore_write_update(name, f);
    firestore_write_mask_add(w, "gone");
    firestore_write_update_time(w, "2026-05-01T12:00:00.123456Z");
    dumps_as(w, "{\"update\":{\"name\":\"projects/p/databases/(default)/documents/jobs/j1\","
                "\"fields\":{\"state\":{\"stringValue\":\"done\"},\"a.b\":{\"integerValue\":"
                "\"1\"}}},\"updateMask\":{\"fieldPaths\":[\"state\",\"`a.b`\",\"gone\"]},"
                "\"currentDocument\":{\"updateTime\":\"2026-05-01T12:00:00.123456Z\"}}");

    w = firestore_write_transform(name);
    firestore_write_exists(w, true);
    firestore_write_increment(w, "count", firestore_value_int(1));
    firestore_write_request_time(w, "lastAt");
    firestore_write_maximum(w, "`x-y`", firestore_value_double(2.5));
    firestore_write_minimum(w, "low", firestore_value_int(-3));
    ck_assert_uint_gt(firestore_write_size(w), 100);
    dumps_as(w, "{\"update\":{\"name\":\"projects/p/databases/(default)/documents/jobs/j1\","
                "\"fields\":{}},\"updateMask\":{},\"currentDocument\":{\"exists\":true},"
                "\"updateTransforms\":[{\"fieldPath\":\"count\",\"increment\":{\"integerValue\":"
                "\"1\"}},{\"fieldPath\":\"lastAt\",\"setToServerValue\":\"REQUEST_TIME\"},"
                "{\"fieldPath\":\"`x-y`\",\"maximum\":{\"doubleValue\":2.5}},{\"fieldPath\":"
                "\"low\",\"minimum\":{\"integerValue\":\"-3\"}}]}");

    w = firestore_write_set(name, NULL);
    firestore_write_exists(w, false);
    dumps_as(w, "{\"update\":{\"name\":\"projects/p/databases/(default)/documents/jobs/j1\","
                "\"fields\":{}},\"currentDocument\":{\"exists\":false}}");
    dumps_as(firestore_write_delete(name),
             "{\"delete\":\"projects/p/databases/(default)/documents/jobs/j1\"}");
}
END_TEST

START_TEST(names_and_client_options)
{
    struct firestore_options o = {.project_id = "demo-p", .emulator_host = "127.0.0.1:8080"};
    struct error err = {0};
    struct firestore *fs;
    char name[FIRESTORE_NAME_MAX], tiny[40];

    fs = firestore_new(&o, &err);
    ck_assert_msg(fs != NULL, "%s", err.message);
    ck_assert_str_eq(firestore_base_url(fs), "http://127.0.0.1:8080");
    ck_assert_str_eq(firestore_database(fs), "projects/demo-p/databases/(default)");
    ck_assert_str_eq(firestore_root(fs), "projects/demo-p/databases/(default)/documents");
    ck_assert_int_eq(
        firestore_name(fs, name, sizeof(name), &err, "batches", "b1", "items", "9f2c-00042", NULL),
        ST_OK);
    ck_assert_str_eq(name,
                     "projects/demo-p/databases/(default)/documents/batches/b1/items/9f2c-00042");
    ck_assert_int_eq(firestore_name(fs, name, sizeof(name), &err, "batches", "a/b", NULL),
                     ST_INVALID);
    ck_assert_int_eq(firestore_name(fs, name, sizeof(name), &err, "batches", "..", NULL),
                     ST_INVALID);
    ck_assert_int_eq(firestore_name(fs, name, sizeof(name), &err, "__x__", NULL), ST_INVALID);
    ck_assert_int_eq(firestore_name(fs, name, sizeof(name), &err, "batches", "", NULL), ST_INVALID);
    ck_assert_int_eq(firestore_name(fs, tiny, sizeof(tiny), &err, "batches", NULL), ST_TOO_LARGE);
    firestore_free(fs);

    o.emulator_host = NULL;
    o.database_id = "other-db";
    fs = firestore_new(&o, &err);
    ck_assert_str_eq(firestore_base_url(fs), FIRESTORE_DEFAULT_BASE);
    ck_assert_str_eq(firestore_database(fs), "projects/demo-p/databases/other-db");
    firestore_free(fs);
    o.project_id = "";
    ck_assert_ptr_null(firestore_new(&o, &err));
    ck_assert_int_eq(err.status, ST_INVALID);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------- */

static const struct {
    long http;
    const char *body; /* NULL: no body */
    enum status want;
    int rpc;
    const char *code;
} error_rows[] = {
    {200, "{}", ST_OK, 0, ""},
    {409,
     "{\"error\":{\"code\":409,\"message\":\"Transaction lock timeout.\",\"status\":"
     "\"ABORTED\"}}",
     ST_ABORTED, 10, "firestore_aborted"},
    {409,
     "{\"error\":{\"code\":409,\"message\":\"entity already exists\",\"status\":"
     "\"ALREADY_EXISTS\"}}",
     ST_ALREADY_EXISTS, 6, "firestore_already_exists"},
    {400, "{\"error\":{\"code\":400,\"message\":\"stale\",\"status\":\"FAILED_PRECONDITION\"}}",
     ST_FAILED_PRECONDITION, 9, "firestore_failed_precondition"},
    {400, "{\"error\":{\"code\":400,\"message\":\"bad\",\"status\":\"INVALID_ARGUMENT\"}}",
     ST_INVALID, 3, "firestore_invalid_argument"},
    {404, "{\"error\":{\"code\":404,\"message\":\"no doc\",\"status\":\"NOT_FOUND\"}}",
     ST_NOT_FOUND, 5, "firestore_not_found"},
    {429, "{\"error\":{\"code\":429,\"message\":\"quota\",\"status\":\"RESOURCE_EXHAUSTED\"}}",
     ST_RATE_LIMITED, 8, "firestore_resource_exhausted"},
    {503, "{\"error\":{\"code\":503,\"message\":\"down\",\"status\":\"UNAVAILABLE\"}}",
     ST_UNAVAILABLE, 14, "firestore_unavailable"},
    {504, "{\"error\":{\"code\":504,\"status\":\"DEADLINE_EXCEEDED\"}}", ST_TIMEOUT, 4,
     "firestore_deadline_exceeded"},
    {500, "{\"error\":{\"code\":500,\"message\":\"oops\",\"status\":\"INTERNAL\"}}", ST_INTERNAL,
     13, "firestore_internal"},
    {401, "{\"error\":{\"code\":401,\"status\":\"UNAUTHENTICATED\"}}", ST_UNAUTHENTICATED, 16,
     "firestore_unauthenticated"},
    {403, "{\"error\":{\"code\":403,\"status\":\"PERMISSION_DENIED\"}}", ST_PERMISSION_DENIED, 7,
     "firestore_permission_denied"},
    /* The status name beats the HTTP code, which is the fallback. */
    {200, "{\"error\":{\"code\":409,\"status\":\"ABORTED\"}}", ST_ABORTED, 10, "firestore_aborted"},
    {409, "{\"error\":{\"code\":409,\"message\":\"no status\"}}", ST_ABORTED, 10,
     "firestore_aborted"},
    {400, "{\"error\":{\"code\":400,\"status\":\"SOMETHING_NEW\"}}", ST_INVALID, 3,
     "firestore_invalid_argument"},
    {429, NULL, ST_RATE_LIMITED, 8, "firestore_resource_exhausted"},
    {502, NULL, ST_UNAVAILABLE, 14, "firestore_unavailable"},
    {503, "\"<html>\"", ST_UNAVAILABLE, 14, "firestore_unavailable"},
    {418, NULL, ST_INTERNAL, 2, "firestore_unknown"},
};

START_TEST(error_bodies)
{
    json_t *body = error_rows[_i].body ? parse(error_rows[_i].body) : NULL;
    struct error err = {0};
    int rpc = -1;

    ck_assert_int_eq(firestore_response_status("commit", error_rows[_i].http, body, &rpc, &err),
                     error_rows[_i].want);
    ck_assert_int_eq(rpc, error_rows[_i].rpc);
    ck_assert_str_eq(err.code, error_rows[_i].code);
    if (error_rows[_i].want != ST_OK) {
        ck_assert_int_eq(err.status, error_rows[_i].want);
        ck_assert(str_starts_with(err.message, "firestore commit: "));
    }
    json_decref(body);
}
END_TEST

START_TEST(rpc_codes)
{
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    int i;

    for (i = 0; i < (int)ARRAY_SIZE(names); i++) {
        ck_assert_int_eq(firestore_rpc_code(names[i]), i);
        ck_assert_str_eq(firestore_rpc_name(i), names[i]);
    }
    ck_assert_int_eq(firestore_rpc_code("NOPE"), -1);
    ck_assert_ptr_null(firestore_rpc_name(17));
    ck_assert_int_eq(firestore_rpc_status(10), ST_ABORTED);
    ck_assert_int_eq(firestore_rpc_status(6), ST_ALREADY_EXISTS);
    ck_assert_int_eq(firestore_rpc_status(8), ST_RATE_LIMITED);
    ck_assert_int_eq(firestore_rpc_status(99), ST_INTERNAL);
}
END_TEST

/* ---- streamed answers ---------------------------------------------------------------- */

static const struct {
    long http;
    const char *body;
    enum status want;
    size_t docs;
    const char *tx;
} stream_rows[] = {
    {200,
     "[{\"document\":{\"name\":\"a\",\"fields\":{}},\"readTime\":\"2026-01-01T00:00:00Z\"},"
     "{\"document\":{\"name\":\"b\"},\"readTime\":\"2026-01-01T00:00:00Z\",\"done\":true}]",
     ST_OK, 2, NULL},
    {200, "[{\"readTime\":\"2026-01-01T00:00:00Z\"}]", ST_OK, 0, NULL},
    {200, "[]", ST_OK, 0, NULL},
    {200,
     "[{\"transaction\":\"EQUAAAAAAAAA\"},{\"document\":{\"name\":\"a\"},\"readTime\":"
     "\"2026-01-01T00:00:00Z\"}]",
     ST_OK, 1, "EQUAAAAAAAAA"},
    {200, "[{\"skippedResults\":3,\"readTime\":\"2026-01-01T00:00:00Z\"}]", ST_OK, 0, NULL},
    {200,
     "[{\"document\":{\"name\":\"a\"}},{\"error\":{\"code\":409,\"message\":\"lock\",\"status\":"
     "\"ABORTED\"}}]",
     ST_ABORTED, 0, NULL},
    {200, "[{\"error\":{\"code\":10,\"message\":\"grpc code\"}}]", ST_ABORTED, 0, NULL},
    {400,
     "{\"error\":{\"code\":400,\"message\":\"The query requires an index.\",\"status\":"
     "\"FAILED_PRECONDITION\"}}",
     ST_FAILED_PRECONDITION, 0, NULL},
    {400, "[{\"error\":{\"code\":400,\"message\":\"bad\",\"status\":\"INVALID_ARGUMENT\"}}]",
     ST_INVALID, 0, NULL},
    {200, "{\"document\":{}}", ST_INTERNAL, 0, NULL},
};

START_TEST(stream_framing)
{
    json_t *body = parse(stream_rows[_i].body), *elements = NULL, *docs;
    struct error err = {0};
    char *tx = NULL;

    ck_assert_int_eq(
        firestore_parse_stream("runQuery", stream_rows[_i].http, body, &elements, &tx, &err),
        stream_rows[_i].want);
    if (stream_rows[_i].want == ST_OK) {
        docs = firestore_stream_documents(elements);
        ck_assert_uint_eq(json_array_size(docs), stream_rows[_i].docs);
        json_decref(docs);
        if (stream_rows[_i].tx)
            ck_assert_str_eq(tx, stream_rows[_i].tx);
        else
            ck_assert_ptr_null(tx);
    } else {
        ck_assert_ptr_null(elements);
        ck_assert_ptr_null(tx);
        ck_assert(str_starts_with(err.message, "firestore runQuery: "));
    }
    free(tx);
    json_decref(elements);
    json_decref(body);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("firestore_codec");
    TCase *tc = tcase_create("values");

    tcase_add_loop_test(tc, integers_round_trip, 0, ARRAY_SIZE(int_rows));
    tcase_add_loop_test(tc, integers_parse_strictly, 0, ARRAY_SIZE(int_parse_rows));
    tcase_add_test(tc, doubles_round_trip);
    tcase_add_loop_test(tc, timestamps_round_trip, 0, ARRAY_SIZE(ts_rows));
    tcase_add_test(tc, timestamps_parse_and_clamp);
    tcase_add_test(tc, bytes_all_values);
    tcase_add_test(tc, other_kinds);
    tcase_add_loop_test(tc, empty_containers_both_shapes, 0, ARRAY_SIZE(empty_rows));
    tcase_add_loop_test(tc, plain_json_round_trips, 0, ARRAY_SIZE(plain_rows));
    tcase_add_test(tc, plain_json_shapes_and_refusals);
    tcase_add_test(tc, document_accessors);
    suite_add_tcase(s, tc);

    tc = tcase_create("paths_and_writes");
    tcase_add_loop_test(tc, field_path_quoting, 0, ARRAY_SIZE(path_rows));
    tcase_add_test(tc, field_path_joining_and_bounds);
    tcase_add_test(tc, write_builders);
    tcase_add_test(tc, names_and_client_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors_and_framing");
    tcase_add_loop_test(tc, error_bodies, 0, ARRAY_SIZE(error_rows));
    tcase_add_test(tc, rpc_codes);
    tcase_add_loop_test(tc, stream_framing, 0, ARRAY_SIZE(stream_rows));
    suite_add_tcase(s, tc);
    return s;
}
