/* KV block pool: which of the cache's blocks are in use, by how many sequences, and which free
 * blocks still hold a reusable prompt prefix.
 *
 * Every block is either referenced (ref > 0: in some sequences' block tables) or on the free
 * queue. A full block can be published under the chained hash of its tokens
 * (hash(parent block's hash, its tokens)), salted by the adapter (LoRA) id its K/V were computed
 * with: the chain starts at kv_root_hash(adapter), and the adapter id is stored with the block
 * and compared on lookup, so two adapters never share a block. It stays findable by kv_pool_lookup while referenced
 * and after its last user lets go, until kv_pool_alloc needs the memory. The free queue is an
 * LRU: plain free blocks are handed out first, then cached ones, least recently freed first.
 * Pure bookkeeping: no tensor memory here (see kv_cache.h). */
#ifndef PG_KV_BLOCK_POOL_H
#define PG_KV_BLOCK_POOL_H

#include <stdint.h>

#include "pagoda.h"

typedef struct kv_pool kv_pool;

pagoda_status kv_pool_create(int32_t n_blocks, int32_t block_size, kv_pool **out);
void kv_pool_destroy(kv_pool *p); /* NULL is a no-op */

int32_t kv_pool_n_blocks(const kv_pool *p);
int32_t kv_pool_block_size(const kv_pool *p);
/* Blocks kv_pool_alloc can hand out now (plain free + cached-but-unreferenced). */
int32_t kv_pool_n_free(const kv_pool *p);
/* Unreferenced blocks that still hold a published prefix. */
int32_t kv_pool_n_cached(const kv_pool *p);

/* Takes a block (ref = 1), evicting the least recently freed cached block if no plain one is
 * left (its hash is forgotten). -1 if every block is referenced. */
int32_t kv_pool_alloc(kv_pool *p);
/* One more user of block b (taking it off the free queue if it was there). */
void kv_pool_ref(kv_pool *p, int32_t b);
/* One user fewer; at zero the block joins the free queue (cached ones at the LRU tail). */
void kv_pool_unref(kv_pool *p, int32_t b);
int32_t kv_pool_ref_count(const kv_pool *p, int32_t b);

/* Chained hash of one full block: hash of the parent's hash and the block's block_size tokens. */
uint64_t kv_block_hash(uint64_t parent_hash, const int32_t *tokens, int32_t n);
#define KV_ROOT_HASH 0x9e3779b97f4a7c15ull /* parent hash of a sequence's first block (adapter 0) */
/* Parent hash of the first block of a sequence run with this adapter id (0: the base model,
 * KV_ROOT_HASH); different adapters start different chains. */
uint64_t kv_root_hash(int32_t adapter);

/* The block published with this hash, parent hash, adapter and tokens (all compared: a hash
 * collision is a miss, never wrong KV), or -1. Does not take a reference. */
int32_t kv_pool_lookup(const kv_pool *p, uint64_t hash, uint64_t parent_hash, int32_t adapter, const int32_t *tokens);
/* Publishes referenced block b as holding these block_size tokens after parent_hash, computed
 * with this adapter. No-op if another block already holds that prefix or b is already published. */
void kv_pool_publish(kv_pool *p, int32_t b, uint64_t hash, uint64_t parent_hash, int32_t adapter, const int32_t *tokens);

/* Forgets every published prefix (the whole prefix cache): no later lookup finds a block
 * published before. Referenced blocks keep their K/V and users; unreferenced ones that held a
 * prefix become plain free blocks, handed out first. Returns how many blocks were unpublished. */
int32_t kv_pool_flush(kv_pool *p);

/* Whether block b is published; if so its hash and its block_size tokens (borrowed). For tests. */
int kv_pool_block_published(const kv_pool *p, int32_t b, uint64_t *hash, const int32_t **tokens);

/* Checks the pool's own invariants (free queue links and count, hash index); returns 0 if
 * consistent, else writes what is wrong to pagoda_last_error() and returns -1. For tests. */
int kv_pool_check(const kv_pool *p);

#endif
