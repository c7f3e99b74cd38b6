/*
 * page_token.h - the opaque page tokens of store listings, shared by the
 * adapters so a token means the same thing whatever the store:
 * base64url("<kind>1.<tag>.<number>.<id>"), kind 'i' (items, number =
 * index) or 'b' (batches, number = created_at), tag = 8 hex of sha256 of
 * the listing's scope, so that a token only continues the listing it came
 * from.
 */
#ifndef STORE_PAGE_TOKEN_H
#define STORE_PAGE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "store/store.h"

#define PAGE_TOKEN_TAG_LEN 8

/* The tag of a listing: its scope (batch or user id) and filter (may be NULL). */
void page_token_tag(const char *scope, const char *filter, char tag[PAGE_TOKEN_TAG_LEN + 1]);

/* Encodes a position; ids are ours ([A-Za-z0-9_-]), so a token always fits. */
void page_token_encode(char kind, const char *tag, int64_t number, const char *id,
                       char out[PAGE_TOKEN_MAX]);

/*
 * Decodes a token of `kind` for the listing `tag`. ST_INVALID with code
 * invalid_page_token for anything we did not produce, or a token of another
 * listing.
 */
enum status page_token_decode(const char *token, char kind, const char *tag, int64_t *number,
                              char *id, size_t id_cap, struct error *err);

#endif
