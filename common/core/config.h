/*
 * config.h - configuration from one declarative table of environment
 * variables (after Redis's standardConfig).
 *
 * A table row names a variable, its type, default, bounds and help text, and
 * where the parsed value lives in the caller's settings struct. The table is
 * parsed once at start-up; the first bad value fails the whole load with a
 * message naming the variable and the value. The settings are then passed
 * around const.
 */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

enum config_type {
    CFG_STRING, /* char * (heap copy, freed by config_release) */
    CFG_INT,    /* int64_t within [min, max] */
    CFG_DOUBLE, /* double within [min, max] */
    CFG_BOOL,   /* bool: true/false, 1/0, yes/no, on/off */
    CFG_ENUM,   /* char * restricted to the '|'-separated choices */
};

enum config_flags {
    CFG_REQUIRED = 1 << 0, /* no default: the variable must be set */
    CFG_SECRET = 1 << 1,   /* never print the value */
};

struct config_var {
    const char *name;
    enum config_type type;
    const char *def; /* default as text; NULL means "unset" (strings become NULL) */
    double min, max; /* numeric bounds, inclusive */
    const char *choices;
    const char *help;
    size_t offset; /* of the field in the settings struct */
    unsigned flags;
    unsigned scope; /* caller-defined mask (which binaries use the variable) */
};

/* Looks a variable up; tests pass their own instead of getenv. */
typedef const char *(*config_getenv_fn)(const char *name, void *ud);

/*
 * Parses every row whose scope intersects `scope` into settings. Empty
 * values count as unset. On error returns ST_INVALID with a message such as
 * `invalid PORT="abc": must be an integer in [1, 65535]` and leaves
 * already-parsed strings for config_release() to free.
 */
enum status config_load(const struct config_var *table, size_t n, unsigned scope, void *settings,
                        config_getenv_fn get, void *ud, struct error *err);

/* Frees the strings config_load() stored in settings. */
void config_release(const struct config_var *table, size_t n, void *settings);

/* Prints the table (rows within scope) as help text. */
void config_print_help(FILE *out, const char *program, const char *summary,
                       const struct config_var *table, size_t n, unsigned scope);

/* getenv wrapper matching config_getenv_fn. */
const char *config_getenv(const char *name, void *ud);

#endif
