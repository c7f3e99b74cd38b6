/*
 * json.h - helpers over jansson: parsing with a clear error, typed getters
 * that name the field that was wrong, compact dumping.
 *
 * Getters borrow: strings returned through `const char **` stay valid as
 * long as the object holding them does.
 */
#ifndef CORE_JSON_H
#define CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/error.h"

/*
 * Parses len bytes of JSON (any top-level value; duplicate keys refused).
 * Returns a new reference (caller frees with json_decref) or NULL with err
 * set to ST_INVALID, code "malformed_json", naming line and column.
 */
json_t *json_parse(const char *data, size_t len, struct error *err);

/*
 * Dumps v compactly with reals printed to 17 significant digits.
 * Returns a malloc'd string (caller frees with free()); NULL only if v is NULL.
 */
char *json_dump_compact(const json_t *v);

/* Presence: a field that is absent or JSON null is "missing". */
enum json_need { JSON_OPTIONAL, JSON_REQUIRED };

/*
 * Typed getters. On success they return ST_OK and set *out (unchanged when
 * an optional field is missing). On a missing required field or a value of
 * the wrong type or range they return ST_INVALID with code "invalid_field"
 * and a message naming the field, e.g. `field "limit" must be an integer in [1, 1000]`.
 */
enum status json_get_string(const json_t *obj, const char *field, enum json_need need,
                            const char **out, struct error *err);
enum status json_get_int(const json_t *obj, const char *field, enum json_need need, int64_t min,
                         int64_t max, int64_t *out, struct error *err);
enum status json_get_double(const json_t *obj, const char *field, enum json_need need, double min,
                            double max, double *out, struct error *err);
enum status json_get_bool(const json_t *obj, const char *field, enum json_need need, bool *out,
                          struct error *err);
/* Borrowed object/array values. */
enum status json_get_object(const json_t *obj, const char *field, enum json_need need, json_t **out,
                            struct error *err);
enum status json_get_array(const json_t *obj, const char *field, enum json_need need, json_t **out,
                           struct error *err);

/* Convenience: the string value of field, or def when missing or not a string. Borrowed. */
const char *json_str_or(const json_t *obj, const char *field, const char *def);

/* Convenience: the integer value of field, or def when missing or not an integer. */
int64_t json_int_or(const json_t *obj, const char *field, int64_t def);

#endif
