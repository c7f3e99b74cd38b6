#include "core/json.h"

#include <math.h>
#include <stdlib.h>

json_t *json_parse(const char *data, size_t len, struct error *err)
{
    json_error_t jerr;
    json_t *v;

    v = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!v) {
        error_set(err, ST_INVALID, "malformed_json", "malformed json at line %d column %d: %s",
                  jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    return v;
}

char *json_dump_compact(const json_t *v)
{
    if (!v)
        return NULL;
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
}

/* Looks the field up; a JSON null counts as missing. */
static json_t *field_value(const json_t *obj, const char *field)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, field) : NULL;

    return json_is_null(v) ? NULL : v;
}

static enum status missing(const char *field, enum json_need need, struct error *err)
{
    if (need == JSON_OPTIONAL)
        return ST_OK;
    return error_set(err, ST_INVALID, "invalid_field", "field \"%s\" is required", field);
}

enum status json_get_string(const json_t *obj, const char *field, enum json_need need,
                            const char **out, struct error *err)
{
    json_t *v = field_value(obj, field);

    if (!v)
        return missing(field, need, err);
    if (!json_is_string(v))
        return error_set(err, ST_INVALID, "invalid_field", "field \"%s\" must be a string", field);
    *out = json_string_value(v);
    return ST_OK;
}

enum status json_get_int(const json_t *obj, const char *field, enum json_need need, int64_t min,
                         int64_t max, int64_t *out, struct error *err)
{
    json_t *v = field_value(obj, field);
    json_int_t i;

    if (!v)
        return missing(field, need, err);
    if (!json_is_integer(v))
        goto bad;
    i = json_integer_value(v);
    if (i < min || i > max)
        goto bad;
    *out = i;
    return ST_OK;
bad:
    return error_set(err, ST_INVALID, "invalid_field",
                     "field \"%s\" must be an integer in [%lld, %lld]", field, (long long)min,
                     (long long)max);
}

enum status json_get_double(const json_t *obj, const char *field, enum json_need need, double min,
                            double max, double *out, struct error *err)
{
    json_t *v = field_value(obj, field);
    double d;

    if (!v)
        return missing(field, need, err);
    if (!json_is_number(v))
        goto bad;
    d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max)
        goto bad;
    *out = d;
    return ST_OK;
bad:
    return error_set(err, ST_INVALID, "invalid_field", "field \"%s\" must be a number in [%g, %g]",
                     field, min, max);
}

enum status json_get_bool(const json_t *obj, const char *field, enum json_need need, bool *out,
                          struct error *err)
{
    json_t *v = field_value(obj, field);

    if (!v)
        return missing(field, need, err);
    if (!json_is_boolean(v))
        return error_set(err, ST_INVALID, "invalid_field", "field \"%s\" must be a boolean", field);
    *out = json_is_true(v);
    return ST_OK;
}

enum status json_get_object(const json_t *obj, const char *field, enum json_need need, json_t **out,
                            struct error *err)
{
    json_t *v = field_value(obj, field);

    if (!v)
        return missing(field, need, err);
    if (!json_is_object(v))
        return error_set(err, ST_INVALID, "invalid_field", "field \"%s\" must be an object", field);
    *out = v;
    return ST_OK;
}

enum status json_get_array(const json_t *obj, const char *field, enum json_need need, json_t **out,
                           struct error *err)
{
    json_t *v = field_value(obj, field);

    if (!v)
        return missing(field, need, err);
    if (!json_is_array(v))
        return error_set(err, ST_INVALID, "invalid_field", "field \"%s\" must be an array", field);
    *out = v;
    return ST_OK;
}

const char *json_str_or(const json_t *obj, const char *field, const char *def)
{
    json_t *v = field_value(obj, field);

    return json_is_string(v) ? json_string_value(v) : def;
}

int64_t json_int_or(const json_t *obj, const char *field, int64_t def)
{
    json_t *v = field_value(obj, field);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}
