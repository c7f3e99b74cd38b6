#include "core/config.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

const char *config_getenv(const char *name, void *ud)
{
    UNUSED(ud);
    return getenv(name);
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    size_t i;

    for (i = 0; i < ARRAY_SIZE(yes); i++) {
        if (str_ieq(s, yes[i])) {
            *out = true;
            return true;
        }
        if (str_ieq(s, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool in_choices(const char *choices, const char *s)
{
    size_t n = strlen(s);
    const char *p = choices;

    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);

        if (len == n && strncmp(p, s, n) == 0)
            return true;
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

static enum status bad(struct error *err, const struct config_var *v, const char *value,
                       const char *why)
{
    if (v->flags & CFG_SECRET)
        value = "(secret)";
    return error_set(err, ST_INVALID, "invalid_config", "invalid %s=\"%s\": %s", v->name, value,
                     why);
}

static enum status parse_one(const struct config_var *v, const char *value, char *base,
                             struct error *err)
{
    char why[160];

    switch (v->type) {
    case CFG_STRING:
    case CFG_ENUM: {
        char **slot = (char **)(base + v->offset);

        if (value && v->type == CFG_ENUM && !in_choices(v->choices, value)) {
            snprintf(why, sizeof(why), "must be one of %s", v->choices);
            return bad(err, v, value, why);
        }
        free(*slot);
        *slot = xstrdup(value);
        return ST_OK;
    }
    case CFG_INT: {
        int64_t *slot = (int64_t *)(base + v->offset);
        int64_t i;

        if (!value)
            return ST_OK;
        if (!str_to_i64(value, (int64_t)v->min, (int64_t)v->max, &i)) {
            snprintf(why, sizeof(why), "must be an integer in [%lld, %lld]", (long long)v->min,
                     (long long)v->max);
            return bad(err, v, value, why);
        }
        *slot = i;
        return ST_OK;
    }
    case CFG_DOUBLE: {
        double *slot = (double *)(base + v->offset);
        double d;

        if (!value)
            return ST_OK;
        if (!str_to_double(value, &d) || d < v->min || d > v->max) {
            snprintf(why, sizeof(why), "must be a number in [%g, %g]", v->min, v->max);
            return bad(err, v, value, why);
        }
        *slot = d;
        return ST_OK;
    }
    case CFG_BOOL: {
        bool *slot = (bool *)(base + v->offset);
        bool b;

        if (!value)
            return ST_OK;
        if (!parse_bool(value, &b))
            return bad(err, v, value, "must be true or false");
        *slot = b;
        return ST_OK;
    }
    }
    BUG("unknown config type %d for %s", (int)v->type, v->name);
}

enum status config_load(const struct config_var *table, size_t n, unsigned scope, void *settings,
                        config_getenv_fn get, void *ud, struct error *err)
{
    char *base = settings;
    size_t i;

    for (i = 0; i < n; i++) {
        const struct config_var *v = &table[i];
        const char *value;
        enum status st;

        if (!(v->scope & scope))
            continue;
        value = get(v->name, ud);
        if (value && !*value)
            value = NULL;
        if (!value && (v->flags & CFG_REQUIRED))
            return error_set(err, ST_INVALID, "invalid_config", "missing %s: %s", v->name, v->help);
        if (!value && v->def) {
            /* Defaults go through the same parser, so a bad default is caught in tests. */
            st = parse_one(v, v->def, base, err);
            if (st != ST_OK)
                BUG("bad default for %s: %s", v->name, err ? err->message : "");
            continue;
        }
        st = parse_one(v, value, base, err);
        if (st != ST_OK)
            return st;
    }
    return ST_OK;
}

void config_release(const struct config_var *table, size_t n, void *settings)
{
    char *base = settings;
    size_t i;

    for (i = 0; i < n; i++) {
        if (table[i].type == CFG_STRING || table[i].type == CFG_ENUM) {
            char **slot = (char **)(base + table[i].offset);

            free(*slot);
            *slot = NULL;
        }
    }
}

static const char *type_name(const struct config_var *v)
{
    switch (v->type) {
    case CFG_STRING:
        return "string";
    case CFG_INT:
        return "integer";
    case CFG_DOUBLE:
        return "number";
    case CFG_BOOL:
        return "bool";
    case CFG_ENUM:
        return v->choices;
    }
    return "?";
}

void config_print_help(FILE *out, const char *program, const char *summary,
                       const struct config_var *table, size_t n, unsigned scope)
{
    size_t i;

    fprintf(out, "usage: %s [--help]\n\n%s\n\nConfiguration (environment variables):\n\n", program,
            summary);
    for (i = 0; i < n; i++) {
        const struct config_var *v = &table[i];

        if (!(v->scope & scope))
            continue;
        fprintf(out, "  %-30s %s", v->name, type_name(v));
        if (v->type == CFG_INT)
            fprintf(out, " [%lld..%lld]", (long long)v->min, (long long)v->max);
        else if (v->type == CFG_DOUBLE)
            fprintf(out, " [%g..%g]", v->min, v->max);
        if (v->flags & CFG_REQUIRED)
            fprintf(out, ", required");
        else if (v->def)
            fprintf(out, ", default %s", (v->flags & CFG_SECRET) ? "(secret)" : v->def);
        fprintf(out, "\n      %s\n", v->help);
    }
}
