#include <stddef.h>
#include <string.h>

#include "check_main.h"
#include "core/config.h"

struct settings {
    int64_t port;
    char *backend;
    char *name;
    double rate;
    bool flag;
    char *secret;
};

static const struct config_var table[] = {
    {"PORT", CFG_INT, "8080", 1, 65535, NULL, "port", offsetof(struct settings, port), 0, 1},
    {"BACKEND", CFG_ENUM, "local", 0, 0, "local|gcp", "runtime", offsetof(struct settings, backend),
     0, 1},
    {"NAME", CFG_STRING, NULL, 0, 0, NULL, "a name", offsetof(struct settings, name), 0, 1},
    {"RATE", CFG_DOUBLE, "1.5", 0, 500, NULL, "rate", offsetof(struct settings, rate), 0, 1},
    {"FLAG", CFG_BOOL, "false", 0, 0, NULL, "flag", offsetof(struct settings, flag), 0, 1},
    {"TOKEN", CFG_STRING, NULL, 0, 0, NULL, "secret", offsetof(struct settings, secret), CFG_SECRET,
     2},
};

/* env is a NULL-terminated list of NAME=value strings. */
static const char *fake_getenv(const char *name, void *ud)
{
    const char *const *env = ud;
    size_t n = strlen(name);

    for (; *env; env++)
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    return NULL;
}

START_TEST(defaults)
{
    const char *env[] = {NULL};
    struct settings s = {0};
    struct error err;

    ck_assert_int_eq(config_load(table, 6, 1, &s, fake_getenv, env, &err), ST_OK);
    ck_assert_int_eq(s.port, 8080);
    ck_assert_str_eq(s.backend, "local");
    ck_assert_ptr_null(s.name);
    ck_assert_double_eq(s.rate, 1.5);
    ck_assert(!s.flag);
    config_release(table, 6, &s);
}
END_TEST

START_TEST(values)
{
    const char *env[] = {"PORT=9000", "BACKEND=gcp", "NAME=x", "RATE=2.25",
                         "FLAG=yes",  "PORTX=1",     NULL};
    struct settings s = {0};
    struct error err;

    ck_assert_int_eq(config_load(table, 6, 1, &s, fake_getenv, env, &err), ST_OK);
    ck_assert_int_eq(s.port, 9000);
    ck_assert_str_eq(s.backend, "gcp");
    ck_assert_str_eq(s.name, "x");
    ck_assert_double_eq(s.rate, 2.25);
    ck_assert(s.flag);
    config_release(table, 6, &s);
}
END_TEST

static const struct {
    const char *env;
    const char *message;
} bad[] = {
    {"PORT=abc", "invalid PORT=\"abc\": must be an integer in [1, 65535]"},
    {"PORT=0", "invalid PORT=\"0\": must be an integer in [1, 65535]"},
    {"PORT=70000", "invalid PORT=\"70000\": must be an integer in [1, 65535]"},
    {"BACKEND=aws", "invalid BACKEND=\"aws\": must be one of local|gcp"},
    {"RATE=-1", "invalid RATE=\"-1\": must be a number in [0, 500]"},
    {"RATE=nan", "invalid RATE=\"nan\": must be a number in [0, 500]"},
    {"FLAG=maybe", "invalid FLAG=\"maybe\": must be true or false"},
};

START_TEST(bad_values)
{
    const char *env[] = {bad[_i].env, NULL};
    struct settings s = {0};
    struct error err;

    ck_assert_int_eq(config_load(table, 6, 1, &s, fake_getenv, env, &err), ST_INVALID);
    ck_assert_str_eq(err.message, bad[_i].message);
    config_release(table, 6, &s);
}
END_TEST

START_TEST(required_and_secret)
{
    struct config_var req[] = {{"NEED", CFG_INT, NULL, 0, 10, NULL, "needed thing",
                                offsetof(struct settings, port), CFG_REQUIRED, 1},
                               {"TOKEN", CFG_INT, NULL, 0, 10, NULL, "secret",
                                offsetof(struct settings, port), CFG_SECRET, 1}};
    const char *none[] = {NULL};
    const char *secret[] = {"NEED=1", "TOKEN=hunter2", NULL};
    struct settings s = {0};
    struct error err;

    ck_assert_int_eq(config_load(req, 1, 1, &s, fake_getenv, none, &err), ST_INVALID);
    ck_assert_str_eq(err.message, "missing NEED: needed thing");
    ck_assert_int_eq(config_load(req, 2, 1, &s, fake_getenv, secret, &err), ST_INVALID);
    ck_assert(strstr(err.message, "hunter2") == NULL);
    ck_assert_str_eq(err.message, "invalid TOKEN=\"(secret)\": must be an integer in [0, 10]");
}
END_TEST

START_TEST(help_lists_scope)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    config_print_help(f, "creator", "the partner api", table, 6, 1);
    fclose(f);
    ck_assert(strstr(text, "PORT") != NULL);
    ck_assert(strstr(text, "default 8080") != NULL);
    ck_assert(strstr(text, "local|gcp") != NULL);
    ck_assert(strstr(text, "TOKEN") == NULL); /* other scope */
    free(text);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_config");
    TCase *tc = tcase_create("config");

    tcase_add_test(tc, defaults);
    tcase_add_test(tc, values);
    tcase_add_loop_test(tc, bad_values, 0, sizeof(bad) / sizeof(bad[0]));
    tcase_add_test(tc, required_and_secret);
    tcase_add_test(tc, help_lists_scope);
    suite_add_tcase(s, tc);
    return s;
}
