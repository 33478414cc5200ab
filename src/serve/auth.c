/* Bearer-token check (see auth.h). */
#include "serve/auth.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* compares every byte of both strings' common length; no early exit on the first difference */
static int same(const char *a, size_t na, const char *b, size_t nb) {
    unsigned diff = (unsigned)(na ^ nb);
    size_t n = na < nb ? na : nb;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
    return diff == 0;
}

int auth_check(const char *const *keys, int n_keys, const char *authorization) {
    if (n_keys <= 0) return 1;
    if (!authorization) return 0;
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t')) return 0;
    return auth_check_key(keys, n_keys, p + 6);
}

int auth_check_key(const char *const *keys, int n_keys, const char *key) {
    if (n_keys <= 0) return 1;
    if (!key) return 0;
    const char *p = key;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n && isspace((unsigned char)p[n - 1])) n--;
    int ok = 0;
    for (int i = 0; i < n_keys; i++) ok |= same(keys[i], strlen(keys[i]), p, n);
    return ok;
}
