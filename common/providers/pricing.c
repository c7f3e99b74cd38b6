#include "providers/pricing.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "core/util.h"
#include "providers/gemini.h"
#include "providers/pixverse.h"
#include "providers/runway.h"

#define KEY_MAX 160

/* ---- the built-in table (see pricing.h) ------------------------------------- */

static const struct {
    const char *key;
    double value;
} builtin[] = {
    {"gemini:gemini-2.5-flash-image", 0.0394},
    {"gemini:gemini-3.1-flash-image", 0.067},
    {"gemini:gemini-3-pro-image", 0.134},
    {"gemini:gemini-3-pro-image:4K", 0.24},
    {"runway:gen4_turbo:per_second", 0.05},
    {"runway:gen4.5:per_second", 0.12},
    {"runway:gen3a_turbo:per_second", 0.05},
    {"pixverse:credit", 0.01},
    {"pixverse:fast_multiplier", 2},
    {"pixverse:360p:5s", 45},
    {"pixverse:540p:5s", 45},
    {"pixverse:720p:5s", 60},
    {"pixverse:1080p:5s", 120},
    {"pixverse:360p:8s", 90},
    {"pixverse:540p:8s", 90},
    {"pixverse:720p:8s", 120},
    {"pixverse:1080p:8s", 240},
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *overrides; /* {"key": number}, guarded by lock; NULL when none */

double pricing_lookup(const char *key)
{
    double v = -1;
    json_t *o;
    size_t i;

    if (!key)
        return -1;
    pthread_mutex_lock(&lock);
    o = json_object_get(overrides, key);
    if (o)
        v = json_number_value(o);
    pthread_mutex_unlock(&lock);
    if (v >= 0)
        return v;
    for (i = 0; i < ARRAY_SIZE(builtin); i++)
        if (strcmp(builtin[i].key, key) == 0)
            return builtin[i].value;
    return -1;
}

/* ---- keys --------------------------------------------------------------------- */

static bool model_name_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > 64)
        return false;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-' && s[i] != '_')
            return false;
    return true;
}

static bool one_of(const char *s, size_t n, const char *const *list)
{
    size_t i;

    for (i = 0; list[i]; i++)
        if (strlen(list[i]) == n && memcmp(s, list[i], n) == 0)
            return true;
    return false;
}

static const char *const sizes[] = {"512", "1K", "2K", "4K", NULL};
static const char *const qualities[] = {"360p", "540p", "720p", "1080p", NULL};

/* "<n>s" with n in 1..15. */
static bool seconds_ok(const char *s)
{
    int64_t n;
    char num[8];
    size_t len = strlen(s);

    if (len < 2 || len > 3 || s[len - 1] != 's')
        return false;
    memcpy(num, s, len - 1);
    num[len - 1] = '\0';
    return isdigit((unsigned char)num[0]) && str_to_i64(num, 1, 15, &n);
}

/* Splits key at ':' into at most 5 parts (pointers into buf). */
static size_t split(const char *key, char *buf, size_t cap, const char **parts)
{
    size_t n = 0;
    char *p;

    if (!str_copy(buf, cap, key))
        return 0;
    parts[n++] = buf;
    for (p = buf; *p; p++) {
        if (*p != ':')
            continue;
        if (n == 5)
            return 0;
        *p = '\0';
        parts[n++] = p + 1;
    }
    return n;
}

/* The canonical form of an override key into out, or false when it is not one (see pricing.h). */
static bool key_canonical(const char *key, char *out, size_t cap)
{
    char buf[KEY_MAX];
    const char *p[5];
    size_t n;

    if (str_starts_with(key, "gemini-") && !strchr(key, ':'))
        return model_name_ok(key, strlen(key)) && str_printf(out, cap, "gemini:%s", key);
    n = split(key, buf, sizeof(buf), p);
    if (n == 0 || !str_copy(out, cap, key))
        return false;
    if (strcmp(p[0], "gemini") == 0)
        return (n == 2 || n == 3) && model_name_ok(p[1], strlen(p[1])) &&
               (n == 2 || one_of(p[2], strlen(p[2]), sizes));
    if (strcmp(p[0], "runway") == 0)
        return n == 3 && model_name_ok(p[1], strlen(p[1])) && strcmp(p[2], "per_second") == 0;
    if (strcmp(p[0], "pixverse") != 0)
        return false;
    if (n == 2)
        return strcmp(p[1], "credit") == 0 || strcmp(p[1], "fast_multiplier") == 0;
    if (n == 3)
        return one_of(p[1], strlen(p[1]), qualities) && seconds_ok(p[2]);
    return n == 4 && model_name_ok(p[1], strlen(p[1])) && one_of(p[2], strlen(p[2]), qualities) &&
           seconds_ok(p[3]);
}

enum status pricing_load_overrides(const char *json_text, struct error *err)
{
    json_t *root, *fresh, *old, *v;
    struct error perr;
    const char *key;
    char canon[KEY_MAX];

    if (!json_text || !json_text[0]) {
        fresh = NULL;
        goto swap;
    }
    root = json_parse(json_text, strlen(json_text), &perr);
    if (!root)
        return error_set(err, ST_INVALID, "invalid_pricing", "invalid price overrides: %s",
                         perr.message);
    if (!json_is_object(root)) {
        json_decref(root);
        return error_set(err, ST_INVALID, "invalid_pricing",
                         "invalid price overrides: not a json object");
    }
    fresh = json_object();
    json_object_foreach(root, key, v)
    {
        double d = json_is_number(v) ? json_number_value(v) : -1;
        enum status st = ST_OK;

        /* key belongs to root: the message is written before root goes. */
        if (!key_canonical(key, canon, sizeof(canon)))
            st = error_set(err, ST_INVALID, "invalid_pricing",
                           "invalid price override \"%.64s\": not a known key form (e.g. "
                           "\"gemini:<model>\", \"runway:<model>:per_second\", "
                           "\"pixverse:<quality>:<n>s\")",
                           key);
        else if (!isfinite(d) || d < 0)
            st = error_set(err, ST_INVALID, "invalid_pricing",
                           "invalid price override \"%.64s\": must be a number >= 0", key);
        if (st != ST_OK) {
            json_decref(fresh);
            json_decref(root);
            return st;
        }
        json_object_set_new(fresh, canon, json_real(d));
    }
    json_decref(root);
swap:
    pthread_mutex_lock(&lock);
    old = overrides;
    overrides = fresh;
    pthread_mutex_unlock(&lock);
    json_decref(old);
    return ST_OK;
}

/* ---- costs ---------------------------------------------------------------------- */

static const char *video_model(const char *model_or_null, const json_t *options, const char *def)
{
    const char *m = json_str_or(options, "model", NULL);

    if (m && m[0])
        return m;
    return model_or_null && model_or_null[0] ? model_or_null : def;
}

static int64_t duration_of(const json_t *options, int64_t def)
{
    int64_t d = json_int_or(options, "duration", def);

    return d > 0 && d <= 3600 ? d : def;
}

static double gemini_cost(const char *model, const json_t *options)
{
    const char *size = json_str_or(options, "imageSize", NULL);
    char key[KEY_MAX];
    double v = -1;

    if (size && str_printf(key, sizeof(key), "gemini:%s:%s", model, size))
        v = pricing_lookup(key);
    if (v < 0 && str_printf(key, sizeof(key), "gemini:%s", model))
        v = pricing_lookup(key);
    return v;
}

static double runway_cost(const char *model, const json_t *options)
{
    char key[KEY_MAX];
    double per_s;

    if (!str_printf(key, sizeof(key), "runway:%s:per_second", model))
        return -1;
    per_s = pricing_lookup(key);
    return per_s < 0 ? -1 : per_s * (double)duration_of(options, RUNWAY_DEFAULT_DURATION);
}

/* Credits for d seconds at a quality: the model's own entry, the general one, else 5 s pro rata. */
static double pixverse_credits(const char *model, const char *quality, int64_t d)
{
    char key[KEY_MAX];
    double v = -1;

    if (str_printf(key, sizeof(key), "pixverse:%s:%s:%llds", model, quality, (long long)d))
        v = pricing_lookup(key);
    if (v < 0 && str_printf(key, sizeof(key), "pixverse:%s:%llds", quality, (long long)d))
        v = pricing_lookup(key);
    if (v >= 0 || d == 5)
        return v;
    v = pixverse_credits(model, quality, 5);
    return v < 0 ? -1 : v * (double)d / 5;
}

static double pixverse_cost(const char *model, const json_t *options)
{
    static const char *const models[] = {"v3.5", "v4", "v4.5", "v5", "v5.5",
                                         "v5.6", "v6", "c1",   NULL};
    const char *quality = json_str_or(options, "quality", PIXVERSE_DEFAULT_QUALITY);
    const char *motion = json_str_or(options, "motionMode", NULL);
    int64_t d = duration_of(options, PIXVERSE_DEFAULT_DURATION);
    double credits, credit = pricing_lookup("pixverse:credit");
    char key[KEY_MAX];

    /* A model is known when it is built in or priced by an override of its own. */
    if (!one_of(model, strlen(model), models) &&
        !(str_printf(key, sizeof(key), "pixverse:%s:%s:5s", model, quality) &&
          pricing_lookup(key) >= 0))
        return -1;
    credits = pixverse_credits(model, quality, d);
    if (credits < 0 || credit < 0)
        return -1;
    if (motion && strcmp(motion, "fast") == 0) {
        double f = pricing_lookup("pixverse:fast_multiplier");

        credits *= f >= 0 ? f : 2;
    }
    return credits * credit;
}

double pricing_item_cost(const char *type, const char *model_or_null, const json_t *options)
{
    if (!type)
        return -1;
    if (options && !json_is_object(options))
        options = NULL;
    if (strcmp(type, "virtual-staging") == 0)
        return gemini_cost(model_or_null && model_or_null[0] ? model_or_null : GEMINI_DEFAULT_MODEL,
                           options);
    if (strcmp(type, "video-runway") == 0)
        return runway_cost(video_model(model_or_null, options, RUNWAY_DEFAULT_MODEL), options);
    if (strcmp(type, "video-pixverse") == 0)
        return pixverse_cost(video_model(model_or_null, options, PIXVERSE_DEFAULT_MODEL), options);
    return -1;
}
