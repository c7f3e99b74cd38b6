/*
 * store_contract.h - the behavioural suite of the store port (store.h).
 *
 * The suite drives a store only through the port, so it runs unchanged on
 * every adapter: test_store_sqlite.c runs it on a fresh SQLite file per test,
 * a Firestore runner does the same on the emulator. It checks the port's
 * semantics and the invariants of DESIGN.md section 5 after every mutating
 * scenario (sum(processed) == terminal items, success + failure + cancelled
 * == processed, per status).
 *
 * One suite per process: the callbacks are kept in file-level state.
 */
#ifndef TESTS_CONTRACT_STORE_CONTRACT_H
#define TESTS_CONTRACT_STORE_CONTRACT_H

#include <check.h>
#include <stdint.h>

#include "store/store.h"

/*
 * Builds the suite `name`. open_fresh returns a new, empty store (it fails
 * the test itself when it cannot); close_fn releases it and whatever backs
 * it. Adapters may add their own TCases to the returned suite.
 */
Suite *store_contract_suite(const char *name, struct store *(*open_fresh)(void),
                            void (*close_fn)(struct store *));

/* ---- helpers shared with adapter-specific tests ----------------------- */

/* A fixed clock for the tests: 2026-01-01T00:00:00Z in µs. */
#define CONTRACT_T0 INT64_C(1767225600000000)

/* Fills b with a valid creating batch of generation 1 (b is initialised first). */
void contract_batch_fill(struct batch *b, const char *id, const char *user_id, int64_t total,
                         int shards, int64_t created_at);

/*
 * Creates batch id with n items (ids from item_id_for_index, urls
 * "https://img.example/<i>.jpg") and moves it to processing.
 */
void contract_make_batch(struct store *s, const char *id, int64_t n, int shards);

/*
 * Asserts invariant 2 for the batch: counting items by status through
 * list_items (all pages), processed == terminal items, success ==
 * completed, failure == failed, cancelled == cancelled, and
 * success + failure + cancelled == processed.
 */
void contract_check_counts(struct store *s, const char *batch_id);

#endif
