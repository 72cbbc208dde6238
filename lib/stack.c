/* stack.c - task stacks: carved from slabs, guarded or canaried, pooled
 * per worker.
 *
 * A stack per mapping cost an mmap at a task's first run and an munmap at
 * its end (plus an mprotect for its guard page): 100,000 short-lived tasks
 * made 200,000 system calls and as many VMA changes and TLB shootdowns.
 * Stacks are therefore carved from slabs: one mapping holds many slots of
 * one size and kind, the first slab of a kind has 16 slots and each next
 * one twice as many as the last, up to 256, so 100,000 stacks take a few
 * hundred mmaps. A slab is unmapped when its last stack comes back.
 *
 * Guard pages stay per stack: a guarded slab protects the lowest page of
 * each slot when it is mapped, once for the slab's life, however often the
 * slot is reused. Where the kernel has guard regions (Linux 6.13), all of
 * a slab's guard pages are installed by one process_madvise call and split
 * no mapping; elsewhere each is an mprotect, which splits the slab's
 * mapping, and vm.max_map_count (65,530 by default) caps the mappings of a
 * process. So in TG_STACK_GUARD_AUTO mode stacks are guarded until
 * GUARDED_LIMIT guarded slots exist, whichever way they are installed;
 * later ones get a canary instead: the lowest CANARY_BYTES of the stack
 * must stay zero. A zero canary is never written, so it costs no memory,
 * which is what lets 100,000 idle tasks fit in a few KiB each. It is read
 * whenever its task leaves the CPU, so an unguarded slab is laid out for
 * that read to find a page that is resident anyway: each slot's canary is
 * the last CANARY_BYTES of the page that holds the top of the slot below
 * (the first slot's, of a lead page), instead of the first bytes of a page
 * of its own that the read would fault in - one page fault per stack, not
 * two.
 *
 * A slot that comes back keeps the pages its task touched until its whole
 * slab is unmapped (the per-stack munmap gave them back at once); the
 * workers' pools in front of the slabs make this the case only past
 * POOL_LIMIT free stacks a worker.
 *
 * Slabs are shared by every worker under one lock: a stack may end on
 * another worker than the one whose pool it came from. The lock is taken
 * only when a worker's pool is empty or full, and held for list work
 * only: the system calls that map and unmap slabs and the page fault of a
 * slot's first use (carving writes its top page) come after it is
 * released, so that two workers starting tasks at once do not queue
 * behind each other's page faults. */
#include "internal.h"

#include <errno.h>
#if defined(TG_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Guard regions (Linux 6.13) and the calling process as a pidfd (6.15);
 * libc headers may predate them. */
#if !defined(MADV_GUARD_INSTALL)
#define MADV_GUARD_INSTALL 102
#endif
#define PIDFD_SELF_PROCESS (-10001)

enum {
  GUARDED_LIMIT = 24000,
  POOL_LIMIT = 64,
  CANARY_BYTES = 64,
  SLAB_FIRST_SLOTS = 16,
  SLAB_MAX_SLOTS = 256,
};

/* One mapping of `slots` stacks of `slot_size` bytes each. */
typedef struct tg__slab {
  struct tg__slab *prev, *next; /* in its kind's list of slabs with a free slot */
  struct slab_kind *kind;
  char *map; /* the mapping, map_len bytes */
  size_t map_len;
  char *base; /* slot 0; each next one slot_size above */
  size_t slots, used;
  tg__stack *free;   /* free slots, chained by next_free */
  size_t never_used; /* slots [slots - never_used, slots) not yet carved */
} tg__slab;

/* Slabs of one slot size and guard kind. Kinds are few (one per stack size
 * a program uses, times two) and never freed before the process ends. */
typedef struct slab_kind {
  struct slab_kind *next;
  size_t slot_size;
  bool guarded;
  size_t next_slots; /* the size of the next slab */
  tg__slab *partial; /* slabs with a free slot */
} slab_kind;

static tg__lock slabs_lock;
static slab_kind *kinds;             /* under slabs_lock */
static size_t guarded_slots;         /* slots of guarded slabs, mapped or being mapped; under slabs_lock */
static atomic_bool no_guard_regions; /* the kernel refused them once: mprotect from then on */

static atomic_long guarded_alive;
static atomic_long unguarded_alive;
static atomic_long pooled;
static atomic_long slabs_mapped;

static size_t page_size(void) {
  static size_t size;
  if (!size) size = (size_t)sysconf(_SC_PAGESIZE);
  return size;
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* The whole slot for a stack of `size` usable bytes (the struct at the
 * top is aligned to 64 bytes, see slot_carve). */
static size_t slot_size_for(size_t size, bool guarded) {
  size_t page = page_size();
  return round_up(size + round_up(sizeof(tg__stack), 64) + (guarded ? 0 : CANARY_BYTES), page) + (guarded ? page : 0);
}

static slab_kind *kind_get(size_t slot_size, bool guarded) {
  for (slab_kind *k = kinds; k; k = k->next)
    if (k->slot_size == slot_size && k->guarded == guarded) return k;
  slab_kind *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  *k = (slab_kind){.next = kinds, .slot_size = slot_size, .guarded = guarded, .next_slots = SLAB_FIRST_SLOTS};
  kinds = k;
  return k;
}

static void partial_push(slab_kind *k, tg__slab *s) {
  s->prev = NULL;
  s->next = k->partial;
  if (k->partial) k->partial->prev = s;
  k->partial = s;
}

static void partial_remove(slab_kind *k, tg__slab *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    k->partial = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

/* A task that ended left its frames' redzones poisoned in ASan's shadow;
 * the next task on this memory (or a new mapping at the same address)
 * must start clean. */
static void forget_frames(void *from, size_t len) {
#if defined(TG_ASAN)
  __asan_unpoison_memory_region(from, len);
#else
  (void)from, (void)len;
#endif
}

/* Makes the lowest page of each of a guarded slab's slots inaccessible:
 * one call for the slab where the kernel has guard regions, else one
 * mprotect a slot. Returns 0 or -errno. */
static int guards_install(char *base, size_t slots, size_t slot_size) {
  size_t page = page_size();
  if (!atomic_load_explicit(&no_guard_regions, memory_order_relaxed)) {
    struct iovec *iov = malloc(slots * sizeof *iov);
    if (!iov) return TG_ENOMEM;
    for (size_t i = 0; i < slots; i++) iov[i] = (struct iovec){.iov_base = base + i * slot_size, .iov_len = page};
    long done = syscall(SYS_process_madvise, PIDFD_SELF_PROCESS, iov, slots, MADV_GUARD_INSTALL, 0);
    free(iov);
    if (done == (long)(slots * page)) return 0;
    /* an older kernel: every slot below, guarded or not yet */
    atomic_store_explicit(&no_guard_regions, true, memory_order_relaxed);
  }
  for (size_t i = 0; i < slots; i++)
    if (mprotect(base + i * slot_size, page, PROT_NONE) != 0) return -errno; /* ENOMEM: map count exhausted */
  return 0;
}

/* The number of slots of k's next slab, counted in guarded_slots already
 * (so wants_guard sees a slab being mapped). Under slabs_lock. */
static size_t slab_reserve(slab_kind *k) {
  size_t slots = k->next_slots;
  if (k->next_slots < SLAB_MAX_SLOTS) k->next_slots *= 2;
  if (k->guarded) guarded_slots += slots;
  return slots;
}

/* A new slab of `slots` slots of kind k (reserved by slab_reserve), or
 * NULL with *err set. Without slabs_lock. */
static tg__slab *slab_map(slab_kind *k, size_t slots, int *err) {
  size_t page = page_size();
  tg__slab *s = calloc(1, sizeof *s);
  if (!s) {
    *err = TG_ENOMEM;
    return NULL;
  }
  /* An unguarded slab leads with a page whose end is slot 0's canary, so
   * that every slot's top lies CANARY_BYTES below a page boundary, where
   * the next slot's canary begins. */
  size_t lead = k->guarded ? 0 : page, len = lead + slots * k->slot_size;
  char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (map == MAP_FAILED) {
    *err = -errno;
    free(s);
    return NULL;
  }
  char *base = k->guarded ? map : map + page - CANARY_BYTES;
  int r = k->guarded ? guards_install(base, slots, k->slot_size) : 0;
  if (r != 0) {
    *err = r;
    munmap(map, len);
    free(s);
    return NULL;
  }
  *s = (tg__slab){.kind = k, .map = map, .map_len = len, .base = base, .slots = slots, .never_used = slots};
  atomic_fetch_add_explicit(&slabs_mapped, 1, memory_order_relaxed);
  return s;
}

/* Without slabs_lock: the slab is off every list already. */
static void slab_unmap(tg__slab *s) {
  forget_frames(s->map, s->map_len);
  munmap(s->map, s->map_len);
  atomic_fetch_sub_explicit(&slabs_mapped, 1, memory_order_relaxed);
  free(s);
}

/* Slot i of a fresh slab, set up as an empty stack: writes the slot's top
 * page, so the caller does not hold slabs_lock. */
static tg__stack *slot_carve(tg__slab *slab, size_t i) {
  slab_kind *k = slab->kind;
  char *base = slab->base + i * k->slot_size;
  uintptr_t top = ((uintptr_t)base + k->slot_size - sizeof(tg__stack)) & ~(uintptr_t)63;
  tg__stack *s = (tg__stack *)top;
  *s = (tg__stack){.base = base, .map_size = k->slot_size, .guarded = k->guarded, .slab = slab};
  s->usable = top - (uintptr_t)base - (k->guarded ? page_size() : CANARY_BYTES);
  return s;
}

/* Takes a slot of kind k from a slab with room: a slot used before is
 * returned in *reused, else *slab and *index name one never used, for the
 * caller to carve once the lock is released. False when no slab has room.
 * Under slabs_lock. */
static bool slot_take(slab_kind *k, tg__stack **reused, tg__slab **slab, size_t *index) {
  tg__slab *sl = k->partial;
  if (!sl) return false;
  *reused = sl->free;
  if (sl->free)
    sl->free = sl->free->next_free;
  else
    *index = sl->slots - sl->never_used--;
  *slab = sl;
  if (++sl->used == sl->slots) partial_remove(k, sl);
  return true;
}

/* Gives a slot back to its slab. Returns the slab when that was its last
 * slot in use: it is off the lists then, for the caller to unmap once the
 * lock is released. Under slabs_lock. */
static tg__slab *slot_give(tg__stack *s) {
  tg__slab *slab = s->slab;
  slab_kind *k = slab->kind;
  if (slab->used-- == slab->slots) partial_push(k, slab);
  if (slab->used == 0) {
    partial_remove(k, slab);
    if (k->guarded) guarded_slots -= slab->slots;
    return slab;
  }
  s->next_free = slab->free;
  slab->free = s;
  return NULL;
}

/* In AUTO mode: guarded while a guarded slot is free or a new guarded
 * slab keeps the guard pages within GUARDED_LIMIT. Under slabs_lock. */
static bool wants_guard(tg_stack_guard guard, size_t slot_guarded) {
  if (guard == TG_STACK_GUARD_ALWAYS) return true;
  if (guard == TG_STACK_GUARD_NEVER) return false;
  slab_kind *k = kind_get(slot_guarded, true);
  return k && (k->partial || guarded_slots + k->next_slots <= GUARDED_LIMIT);
}

tg__stack *tg__stack_get(tg__worker *w, size_t size, tg_stack_guard guard, int *err) {
  bool want_guarded = guard != TG_STACK_GUARD_NEVER;
  int scanned = 0; /* a few candidates only: getting a stack stays O(1) */
  for (tg__stack **p = &w->stack_pool; *p && scanned < 8; p = &(*p)->next_free, scanned++) {
    tg__stack *s = *p;
    /* AUTO takes whichever kind the pool has: both are in budget already */
    if (s->usable >= size && (guard == TG_STACK_GUARD_AUTO || s->guarded == want_guarded)) {
      *p = s->next_free;
      w->stack_pool_len--;
      atomic_fetch_sub_explicit(&pooled, 1, memory_order_relaxed);
      forget_frames(s->base, (size_t)((char *)s - (char *)s->base));
      return s;
    }
  }
  size_t slot_guarded = slot_size_for(size, true), index = 0, reserved = 0;
  tg__stack *s = NULL;
  tg__slab *slab = NULL;
  tg__lock_acquire(&slabs_lock);
  bool guarded = wants_guard(guard, slot_guarded);
  slab_kind *k = kind_get(guarded ? slot_guarded : slot_size_for(size, false), guarded);
  bool taken = k && slot_take(k, &s, &slab, &index);
  if (k && !taken) reserved = slab_reserve(k);
  tg__lock_release(&slabs_lock);
  if (!k) {
    *err = TG_ENOMEM;
    return NULL;
  }
  if (!taken) { /* a new slab, mapped without the lock; another worker may map one too */
    tg__slab *fresh = slab_map(k, reserved, err);
    tg__lock_acquire(&slabs_lock);
    if (fresh) {
      partial_push(k, fresh);
      taken = slot_take(k, &s, &slab, &index);
    } else if (k->guarded) {
      guarded_slots -= reserved;
    }
    tg__lock_release(&slabs_lock);
    if (!taken) return NULL;
  }
  if (s) {
    s->next_free = NULL;
    forget_frames(s->base, (size_t)((char *)s - (char *)s->base));
  } else {
    s = slot_carve(slab, index);
  }
  atomic_fetch_add(s->guarded ? &guarded_alive : &unguarded_alive, 1);
  return s;
}

/* A stack whose canary was overwritten is not reused: its task's end
 * stopped the process already (scheduler.c), this is the second line. */
static void stack_release(tg__stack *s) {
  atomic_fetch_sub(s->guarded ? &guarded_alive : &unguarded_alive, 1);
  if (!tg__stack_canary_ok(s)) return;
  tg__lock_acquire(&slabs_lock);
  tg__slab *emptied = slot_give(s);
  tg__lock_release(&slabs_lock);
  if (emptied) slab_unmap(emptied);
}

void tg__stack_put(tg__worker *w, tg__stack *s) {
  if (w->stack_pool_len >= POOL_LIMIT || !tg__stack_canary_ok(s)) {
    stack_release(s);
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
    stack_release(s);
  }
  w->stack_pool_len = 0;
}

void tg__stack_counts(uint64_t *guarded, uint64_t *unguarded, uint64_t *in_pool) {
  *guarded = (uint64_t)atomic_load(&guarded_alive);
  *unguarded = (uint64_t)atomic_load(&unguarded_alive);
  *in_pool = (uint64_t)atomic_load(&pooled);
}

uint64_t tg__stack_slabs(void) { return (uint64_t)atomic_load(&slabs_mapped); }
