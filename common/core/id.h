/*
 * id.h - random identifiers from the kernel's CSPRNG.
 */
#ifndef CORE_ID_H
#define CORE_ID_H

#include <stddef.h>
#include <stdint.h>

/* Fills buf with n random bytes; aborts if the kernel cannot supply them. */
void random_bytes(void *buf, size_t n);

/* A uniform double in [0, 1). */
double random_unit(void);

/*
 * Writes prefix followed by n random characters from [0-9a-z] into out
 * (capacity cap). Returns false when it does not fit.
 */
int id_random(char *out, size_t cap, const char *prefix, size_t n);

/* A random UUID v4 in canonical form into out[37]. */
void id_uuid4(char out[37]);

/* A random 128-bit trace id (32 hex) into out[33]. */
void id_trace(char out[33]);

#endif
