/* API keys: "Authorization: Bearer KEY" (or "x-api-key: KEY") against the configured keys. */
#ifndef PG_SERVE_AUTH_H
#define PG_SERVE_AUTH_H

/* 1 if no keys are configured or the header carries one of them, else 0. The comparison takes
 * the same time whatever the bytes of the key that differ. header may be NULL. */
int auth_check(const char *const *keys, int n_keys, const char *authorization);
/* The same for a header that holds the bare key (Anthropic's "x-api-key: KEY"). */
int auth_check_key(const char *const *keys, int n_keys, const char *key);

#endif
