/*
 * providers.h - wiring of the providers: which provider serves which type
 * (and the fallback chains), their circuit breakers, and the hooks the
 * domain takes from the provider layer (option checks, prices, the image
 * fetch of the result cache).
 */
#ifndef APP_PROVIDERS_H
#define APP_PROVIDERS_H

#include "app/settings.h"
#include "batch/batch.h"
#include "http/client.h"

#define PROVIDERS_ROUTES_MAX 8

struct provider_set {
    struct provider *gemini, *runway, *pixverse;
    struct breaker *breakers[3];
    struct provider_route routes[PROVIDERS_ROUTES_MAX];
    size_t n_routes;
    struct http_client *client;
    bool allow_insecure;
    size_t fetch_max_bytes;
};

/*
 * Builds the providers whose keys are set, and the routes: each type's own
 * provider first, then its PROVIDER_FALLBACKS. Fails on a bad setting
 * (unknown provider or type in the chains, a provider refusing its options).
 */
enum status provider_set_open(const struct settings *s, struct http_client *client,
                              struct provider_set *ps, struct error *err);
void provider_set_close(struct provider_set *ps);

/* Loads PRICES overrides (both binaries). */
enum status providers_load_prices(const struct settings *s, struct error *err);

/* batch_env hooks. */
enum status providers_validate_options(const char *type, const json_t *options, struct error *err);
double providers_item_cost(const char *type, const char *provider, const json_t *options);
/* Webhook delivery over the client: no redirects, private targets refused unless insecure. */
enum status providers_deliver(void *ud, const char *url, const char *const *headers,
                              const char *body, struct error *err);

/* Decodes WEBHOOK_SECRET ("whsec_<base64>" or raw text) into out. */
enum status providers_webhook_key(const char *secret, struct buf *out, struct error *err);

enum status providers_fetch(void *ud, const char *url, struct buf *out, char content_type[64],
                            struct error *err);

#endif
