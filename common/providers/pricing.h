/*
 * pricing.h - what one output item costs, in US dollars, by batch type,
 * model and options (reference providers.md section 5), for the cost
 * estimate of a batch.
 *
 * The built-in table (prices of mid-2026, several from third parties):
 *
 *   virtual-staging (Gemini), per image
 *     gemini-2.5-flash-image       0.0394  (0.039 output + ~0.0004 input)
 *     gemini-3.1-flash-image       0.067   (1K; 2K/4K prices unknown, the same is used)
 *     gemini-3-pro-image           0.134   (1K and 2K), 0.24 at imageSize 4K
 *   video-runway, per second of video (duration option, default 5)
 *     gen4_turbo 0.05, gen4.5 0.12, gen3a_turbo 0.05   (5 / 12 / 5 credits at $0.01)
 *   video-pixverse, credits (v3.5..v5 table) times $0.01 per credit
 *     5 s: 360p 45, 540p 45, 720p 60, 1080p 120; 8 s: twice that
 *     motionMode "fast": twice the 5 s price
 *     other durations (v5.5, v5.6, v6, c1 bill per second, prices not
 *     published): the 5 s credits pro rata, e.g. 10 s = 2 x 5 s
 *
 * The PixVerse credit price is an assumption: $0.01 is the pay-as-you-go
 * rate ($1 = 100 credits); the Essential subscription works out at about
 * $0.0067. Override "pixverse:credit" to match the account's plan. Prices
 * carry no retry margin: a caller estimating a batch adds its own (e.g.
 * +10 %, since some failures are billed).
 *
 * Overrides (configuration) use one JSON object of keys to numbers >= 0:
 *
 *   "gemini:<model>"                   USD per image, any size
 *   "gemini:<model>:<size>"            USD per image at imageSize 512, 1K, 2K or 4K
 *   "<model>"                          short for "gemini:<model>" when the id
 *                                      starts with "gemini-"
 *   "runway:<model>:per_second"        USD per second of video
 *   "pixverse:credit"                  USD per credit
 *   "pixverse:fast_multiplier"         factor for motionMode "fast"
 *   "pixverse:<quality>:<n>s"          credits for n seconds (n 1..15) at a quality
 *   "pixverse:<model>:<quality>:<n>s"  the same for one model only (wins)
 *
 * e.g. {"gemini-3.1-flash-image": 0.067, "runway:gen4_turbo:per_second": 0.05,
 * "pixverse:credit": 0.0067, "runway:veo3:per_second": 0.4}. Keys may name
 * models the built-in table lacks. Lookups are thread-safe; loading
 * replaces the previous overrides as a whole.
 */
#ifndef PROVIDERS_PRICING_H
#define PROVIDERS_PRICING_H

#include <jansson.h>

#include "core/error.h"

/*
 * The cost in USD of one output item of a batch of type ("virtual-staging",
 * "video-runway", "video-pixverse"). The model is options "model" for the
 * video types, else model_or_null (the configured model, may be NULL), else
 * the provider's default (providers/gemini.h, runway.h, pixverse.h); for
 * virtual-staging options "model" is not a batch option and is ignored.
 * Other options with no value take the provider's defaults (duration 5,
 * quality 540p, imageSize none). options may be NULL.
 * Returns a negative number when no price is known (unknown type or model).
 */
double pricing_item_cost(const char *type, const char *model_or_null, const json_t *options);

/*
 * Parses json_text (an object, see the top of this file) and makes it the
 * set of overrides, replacing any earlier one. NULL or "" clears them. On
 * error (malformed JSON, an unknown key form, a value that is not a finite
 * number >= 0) nothing changes and ST_INVALID is returned with code
 * "invalid_pricing" and a message naming the key.
 */
enum status pricing_load_overrides(const char *json_text, struct error *err);

/* The price behind one key ("runway:gen4_turbo:per_second"...), override first; < 0 if none. */
double pricing_lookup(const char *key);

#endif
