/* stack.c - task stacks: mmap'd, guarded or canaried, pooled per worker.
 *
 * Each guard page splits a kernel mapping and vm.max_map_count (65,530 by
 * default) caps the mappings of a process, so guarded stacks stop near
 * 32,000. In TG_STACK_GUARD_AUTO mode stacks are guarded until
 * GUARDED_LIMIT are alive; later ones get a canary instead: the lowest
 * CANARY_BYTES of the stack must stay zero. A zero canary is never written,
 * so the page below stays untouched and costs no memory, which is what
 * lets 100,000 idle tasks fit in a few KiB each. */
#include "internal.h"

#include <errno.h>
#if defined(TG_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { GUARDED_LIMIT = 24000, POOL_LIMIT = 64, CANARY_BYTES = 64 };

static atomic_long guarded_alive;
static atomic_long unguarded_alive;
static atomic_long pooled;

static size_t page_size(void) {
  static size_t size;
  if (!size) size = (size_t)sysconf(_SC_PAGESIZE);
  return size;
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static tg__stack *stack_map(size_t size, bool guarded, int *err) {
  size_t page = page_size();
  size_t map_size = round_up(size + sizeof(tg__stack), page) + (guarded ? page : 0);
  void *base = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (base == MAP_FAILED) {
    *err = -errno;
    return NULL;
  }
  if (guarded && mprotect(base, page, PROT_NONE) != 0) {
    *err = -errno;
    munmap(base, map_size);
    return NULL;
  }
  uintptr_t top = ((uintptr_t)base + map_size - sizeof(tg__stack)) & ~(uintptr_t)63;
  tg__stack *s = (tg__stack *)top;
  s->next_free = NULL;
  s->base = base;
  s->map_size = map_size;
  s->guarded = guarded;
  s->usable = top - (uintptr_t)base - (guarded ? page : CANARY_BYTES);
  atomic_fetch_add(guarded ? &guarded_alive : &unguarded_alive, 1);
  return s;
}

/* A task that ended left its frames' redzones poisoned in ASan's shadow;
 * the next task on this memory (or a new mapping at the same address)
 * must start clean. */
static void forget_frames(tg__stack *s) {
#if defined(TG_ASAN)
  __asan_unpoison_memory_region(s->base, (size_t)((char *)s - (char *)s->base));
#else
  (void)s;
#endif
}

static void stack_unmap(tg__stack *s) {
  forget_frames(s);
  atomic_fetch_sub(s->guarded ? &guarded_alive : &unguarded_alive, 1);
  munmap(s->base, s->map_size);
}

static bool wants_guard(tg_stack_guard guard) {
  if (guard == TG_STACK_GUARD_ALWAYS) return true;
  if (guard == TG_STACK_GUARD_NEVER) return false;
  return atomic_load_explicit(&guarded_alive, memory_order_relaxed) < GUARDED_LIMIT;
}

tg__stack *tg__stack_get(tg__worker *w, size_t size, tg_stack_guard guard, int *err) {
  bool guarded = wants_guard(guard);
  int scanned = 0; /* a few candidates only: getting a stack stays O(1) */
  for (tg__stack **p = &w->stack_pool; *p && scanned < 8; p = &(*p)->next_free, scanned++) {
    tg__stack *s = *p;
    if (s->usable >= size && s->guarded == guarded) {
      *p = s->next_free;
      w->stack_pool_len--;
      atomic_fetch_sub_explicit(&pooled, 1, memory_order_relaxed);
      forget_frames(s);
      return s;
    }
  }
  return stack_map(size, guarded, err);
}

void tg__stack_put(tg__worker *w, tg__stack *s) {
  if (w->stack_pool_len >= POOL_LIMIT || !tg__stack_canary_ok(s)) {
    stack_unmap(s);
    return;
  }
  s->next_free = w->stack_pool;
  w->stack_pool = s;
  w->stack_pool_len++;
  atomic_fetch_add_explicit(&pooled, 1, memory_order_relaxed);
}

bool tg__stack_canary_ok(const tg__stack *s) {
  if (s->guarded) return true;
  static const unsigned char zero[CANARY_BYTES];
  return memcmp(s->base, zero, CANARY_BYTES) == 0;
}

void tg__stack_pool_drain(tg__worker *w) {
  while (w->stack_pool) {
    tg__stack *s = w->stack_pool;
    w->stack_pool = s->next_free;
    atomic_fetch_sub_explicit(&pooled, 1, memory_order_relaxed);
    stack_unmap(s);
  }
  w->stack_pool_len = 0;
}

void tg__stack_counts(uint64_t *guarded, uint64_t *unguarded, uint64_t *in_pool) {
  *guarded = (uint64_t)atomic_load(&guarded_alive);
  *unguarded = (uint64_t)atomic_load(&unguarded_alive);
  *in_pool = (uint64_t)atomic_load(&pooled);
}
