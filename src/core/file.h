/* Opening files a model folder names (weights, config.json, tokenizer files): regular files only.
 * A FIFO, a device or a socket under a model file's name would block the open or the read forever
 * (a FIFO with no writer) or never end (/dev/zero); these refuse them with an error naming the file. */
#ifndef PG_CORE_FILE_H
#define PG_CORE_FILE_H

#include <stddef.h>
#include <sys/stat.h>

#include "pagoda.h"

/* Opens path read-only (close-on-exec) without blocking on a FIFO, and refuses anything but a
 * regular file. On success *fd is a blocking descriptor the caller closes and *sb (optional) its
 * fstat. Errors name the path: "<path>: not a regular file", "<path>: cannot open: ...". */
pagoda_status pg_open_regular(const char *path, int *fd, struct stat *sb);

/* Reads a whole regular file of at most max_bytes into a malloc'd buffer, NUL-terminated (the
 * NUL is not counted in *len); the caller frees *data. A larger file fails ("<path>: larger than
 * N bytes") without reading it. */
pagoda_status pg_read_file(const char *path, size_t max_bytes, char **data, size_t *len);

#endif
