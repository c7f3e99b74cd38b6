/*
 * fs_blob.h - the embedded blob adapter: objects are files under a root
 * directory, written atomically (temporary file + rename) and served by the
 * creator at <public_base>/files/<key>.
 */
#ifndef BLOB_FS_BLOB_H
#define BLOB_FS_BLOB_H

#include "blob/blob.h"

/*
 * Opens (creating if needed) the root directory. public_base is the URL
 * prefix partners use, e.g. "http://127.0.0.1:8080/files". NULL with err on
 * failure.
 */
struct blob *blob_fs_open(const char *root, const char *public_base, struct error *err);

#endif
