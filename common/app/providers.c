#include "app/providers.h"

#include <string.h>

#include "core/codec.h"
#include "core/log.h"
#include "core/util.h"
#include "providers/fetch.h"
#include "providers/gemini.h"
#include "providers/pixverse.h"
#include "providers/pricing.h"
#include "providers/runway.h"

static const struct {
    const char *provider, *type;
} primary[] = {
    {"gemini", "virtual-staging"},
    {"runway", "video-runway"},
    {"pixverse", "video-pixverse"},
};

static const char *type_of(const char *provider)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(primary); i++)
        if (strcmp(primary[i].provider, provider) == 0)
            return primary[i].type;
    return NULL;
}

static struct provider *by_name(const struct provider_set *ps, const char *name)
{
    if (strcmp(name, "gemini") == 0)
        return ps->gemini;
    if (strcmp(name, "runway") == 0)
        return ps->runway;
    if (strcmp(name, "pixverse") == 0)
        return ps->pixverse;
    return NULL;
}

static struct breaker *breaker_of(const struct provider_set *ps, const char *name)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(primary); i++)
        if (strcmp(primary[i].provider, name) == 0)
            return ps->breakers[i];
    return NULL;
}

static enum status add_route(struct provider_set *ps, const char *type, const char *provider,
                             struct error *err)
{
    struct provider *p = by_name(ps, provider);
    size_t i;

    if (!p)
        return ST_OK; /* not configured here: the chain skips it */
    for (i = 0; i < ps->n_routes; i++)
        if (strcmp(ps->routes[i].type, type) == 0 && ps->routes[i].provider == p)
            return ST_OK;
    if (ps->n_routes == PROVIDERS_ROUTES_MAX)
        return error_set(err, ST_INVALID, "invalid_config", "too many provider routes");
    ps->routes[ps->n_routes].type = type;
    ps->routes[ps->n_routes].provider = p;
    ps->routes[ps->n_routes].breaker = breaker_of(ps, provider);
    ps->n_routes++;
    return ST_OK;
}

/* The canonical type string for a name written in the settings, or NULL. */
static const char *known_type(const char *type)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(primary); i++)
        if (strcmp(primary[i].type, type) == 0)
            return primary[i].type;
    return NULL;
}

/* PROVIDER_FALLBACKS="video-runway=pixverse;virtual-staging=..." */
static enum status add_fallbacks(struct provider_set *ps, const char *text, struct error *err)
{
    char *copy = xstrdup(text), *rule = copy;
    enum status st = ST_OK;

    while (rule && *rule && st == ST_OK) {
        char *next = strchr(rule, ';'), *eq, *prov;
        const char *type;

        if (next)
            *next++ = '\0';
        eq = strchr(rule, '=');
        if (eq)
            *eq = '\0';
        type = eq ? known_type(rule) : NULL;
        if (!type) {
            st = error_set(err, ST_INVALID, "invalid_config",
                           "invalid PROVIDER_FALLBACKS rule \"%.64s\": want type=provider[,...] "
                           "with a known type",
                           rule);
            break;
        }
        for (prov = eq + 1; *prov && st == ST_OK;) {
            char *comma = strchr(prov, ',');

            if (comma)
                *comma = '\0';
            if (!type_of(prov))
                st = error_set(err, ST_INVALID, "invalid_config",
                               "invalid PROVIDER_FALLBACKS: unknown provider \"%.32s\"", prov);
            else
                st = add_route(ps, type, prov, err);
            if (!comma)
                break;
            prov = comma + 1;
        }
        rule = next;
    }
    free(copy);
    return st;
}

static bool loopback(const char *url)
{
    return str_starts_with(url, "http://127.") || str_starts_with(url, "http://localhost");
}

enum status provider_set_open(const struct settings *s, struct http_client *client,
                              struct provider_set *ps, struct error *err)
{
    struct breaker_options bo = {(int)s->breaker_failures, s->breaker_open_ms};
    size_t i;

    memset(ps, 0, sizeof(*ps));
    ps->client = client;
    ps->allow_insecure = s->allow_insecure_urls;
    ps->fetch_max_bytes = (size_t)s->fetch_max_bytes;
    for (i = 0; i < ARRAY_SIZE(primary); i++)
        ps->breakers[i] = breaker_new(primary[i].provider, &bo);
    if (s->gemini_api_key) {
        struct gemini_options o;

        memset(&o, 0, sizeof(o));
        o.base_url = s->gemini_base_url;
        o.api_key = s->gemini_api_key;
        o.model = s->gemini_model;
        o.timeout_ms = s->provider_timeout_ms;
        o.fetch_max_bytes = (size_t)s->fetch_max_bytes;
        o.allow_insecure = s->allow_insecure_urls;
        o.max_output_bytes = (size_t)s->output_max_bytes;
        if (!(ps->gemini = provider_gemini_new(&o, client)))
            return error_set(err, ST_INVALID, "invalid_config",
                             "invalid Gemini settings (GEMINI_*): see the log");
    }
    if (s->runway_api_key) {
        struct runway_options o;

        memset(&o, 0, sizeof(o));
        o.base_url = s->runway_base_url;
        o.api_key = s->runway_api_key;
        o.model = s->runway_model;
        o.submit_timeout_ms = s->provider_timeout_ms;
        o.max_download_bytes = (size_t)s->output_max_bytes;
        o.allow_insecure = s->allow_insecure_urls;
        if (!(ps->runway = provider_runway_new(&o, client)))
            return error_set(err, ST_INVALID, "invalid_config",
                             "invalid Runway settings (RUNWAY_*): see the log");
    }
    if (s->pixverse_api_key) {
        struct pixverse_options o;

        memset(&o, 0, sizeof(o));
        o.base_url = s->pixverse_base_url;
        o.api_key = s->pixverse_api_key;
        o.model = s->pixverse_model;
        o.submit_timeout_ms = s->provider_timeout_ms;
        o.fetch_max_bytes = (size_t)s->fetch_max_bytes;
        o.max_download_bytes = (size_t)s->output_max_bytes;
        o.allow_insecure = s->allow_insecure_urls;
        if (!(ps->pixverse = provider_pixverse_new(&o, client)))
            return error_set(err, ST_INVALID, "invalid_config",
                             "invalid PixVerse settings (PIXVERSE_*): see the log");
    }
    for (i = 0; i < ARRAY_SIZE(primary); i++)
        if (add_route(ps, primary[i].type, primary[i].provider, err) != ST_OK)
            return ST_INVALID;
    if (s->provider_fallbacks && add_fallbacks(ps, s->provider_fallbacks, err) != ST_OK)
        return ST_INVALID;
    for (i = 0; i < ps->n_routes; i++) {
        const char *base = strcmp(ps->routes[i].provider->name, "gemini") == 0 ? s->gemini_base_url
                           : strcmp(ps->routes[i].provider->name, "runway") == 0
                               ? s->runway_base_url
                               : s->pixverse_base_url;

        log_write(LOG_INFO,
                  json_pack("{s:s, s:s}", "type", ps->routes[i].type, "provider",
                            ps->routes[i].provider->name),
                  "%s served by %s at %s%s", ps->routes[i].type, ps->routes[i].provider->name, base,
                  loopback(base) ? " (the provider simulator)" : "");
    }
    for (i = 0; i < ARRAY_SIZE(primary); i++)
        if (!by_name(ps, primary[i].provider))
            log_warn("no key for %s: %s items fail as not configured unless a fallback serves "
                     "them",
                     primary[i].provider, primary[i].type);
    return ST_OK;
}

void provider_set_close(struct provider_set *ps)
{
    size_t i;

    provider_free(ps->gemini);
    provider_free(ps->runway);
    provider_free(ps->pixverse);
    for (i = 0; i < ARRAY_SIZE(ps->breakers); i++)
        breaker_free(ps->breakers[i]);
    memset(ps, 0, sizeof(*ps));
}

enum status providers_load_prices(const struct settings *s, struct error *err)
{
    if (!s->prices)
        return ST_OK;
    if (pricing_load_overrides(s->prices, err) != ST_OK) {
        error_prefix(err, "invalid PRICES");
        return ST_INVALID;
    }
    return ST_OK;
}

enum status providers_validate_options(const char *type, const json_t *options, struct error *err)
{
    if (!options)
        return ST_OK;
    if (strcmp(type, "video-runway") == 0)
        return runway_validate_options(options, err);
    if (strcmp(type, "video-pixverse") == 0)
        return pixverse_validate_options(options, err);
    return ST_OK;
}

double providers_item_cost(const char *type, const char *provider, const json_t *options)
{
    /* A fallback's price is its own type's: pixverse serving a runway item costs pixverse. */
    const char *priced = provider ? type_of(provider) : type;
    double cost = pricing_item_cost(priced ? priced : type, NULL, options);

    return cost < 0 ? 0 : cost;
}

enum status providers_fetch(void *ud, const char *url, struct buf *out, char content_type[64],
                            struct error *err)
{
    struct provider_set *ps = ud;
    struct fetch_limits lim;

    memset(&lim, 0, sizeof(lim));
    lim.max_bytes = ps->fetch_max_bytes;
    lim.allow_insecure = ps->allow_insecure;
    return fetch_image(ps->client, url, &lim, out, content_type, err);
}

enum status providers_deliver(void *ud, const char *url, const char *const *headers,
                              const char *body, struct error *err)
{
    struct provider_set *ps = ud;
    struct http_call call;
    struct http_result res;
    enum status st;

    memset(&call, 0, sizeof(call));
    call.method = "POST";
    call.url = url;
    call.headers = headers;
    call.body = body;
    call.body_len = strlen(body);
    call.timeout_ms = 10000;
    call.max_response_bytes = 64 * 1024;
    call.block_private_addresses = !ps->allow_insecure;
    call.allow_http = ps->allow_insecure;
    http_result_init(&res);
    st = http_client_do(ps->client, &call, &res, err);
    if (st == ST_OK && (res.status < 200 || res.status > 299)) {
        /* Standard Webhooks: any non-2xx is a failed attempt; 4xx other than these say the
         * receiver refuses for good. */
        bool retry = res.status >= 500 || res.status == 408 || res.status == 409 ||
                     res.status == 425 || res.status == 429;

        st = error_set(err, retry ? ST_UNAVAILABLE : ST_PERMISSION_DENIED, "webhook_refused",
                       "webhook receiver answered %ld", res.status);
    }
    http_result_release(&res);
    return st;
}

enum status providers_webhook_key(const char *secret, struct buf *out, struct error *err)
{
    if (str_starts_with(secret, "whsec_")) {
        if (base64_decode(out, secret + 6, strlen(secret + 6)) != ST_OK || out->len < 16)
            return error_set(err, ST_INVALID, "invalid_config",
                             "invalid WEBHOOK_SECRET: want whsec_ and base64 of 16+ bytes");
        return ST_OK;
    }
    if (strlen(secret) < 16)
        return error_set(err, ST_INVALID, "invalid_config",
                         "invalid WEBHOOK_SECRET: at least 16 characters");
    return buf_append_str(out, secret);
}
