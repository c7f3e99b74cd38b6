/*
 * lang.h - the partner API speaks the seed's Portuguese by default and
 * English on request (Accept-Language: en). Messages are looked up by their
 * stable code; codes never change with the language.
 */
#ifndef BATCH_LANG_H
#define BATCH_LANG_H

#include "core/error.h"

enum lang { LANG_PT = 0, LANG_EN };

/* Picks the language from an Accept-Language header (NULL -> Portuguese). */
enum lang lang_from_header(const char *accept_language);

/*
 * Fills err with status, code and the code's message in lang, formatted
 * with the arguments (the same conversions in both languages). Codes
 * without an entry keep a generic message. Returns status.
 */
enum status lang_error(struct error *err, enum lang lang, enum status status, const char *code,
                       ...);

/*
 * Re-words an error produced below the domain (HTTP layer, JSON parsing) in
 * lang when its code has an entry; leaves it untouched otherwise.
 */
void lang_localize(struct error *err, enum lang lang);

#endif
