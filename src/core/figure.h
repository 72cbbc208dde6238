/* figure.h - counters that one task writes and any thread may read.
 *
 * The pipeline's figures are read by serve_figures_get from whatever task
 * or thread asks (the HTTP side, on any worker) while the stage that owns
 * them keeps counting. A figure is an atomic 64-bit word: its owner adds
 * with a relaxed load and store (a plain add on x86, no locked
 * instruction on the hot path), readers load it relaxed. A figure with
 * several writers uses figure_add_shared. */
#ifndef TELEGATE_FIGURE_H
#define TELEGATE_FIGURE_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t figure;

/* Only from the figure's one writer. */
static inline void figure_add(figure *f, uint64_t n) {
  atomic_store_explicit(f, atomic_load_explicit(f, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void figure_add_shared(figure *f, uint64_t n) { atomic_fetch_add_explicit(f, n, memory_order_relaxed); }

static inline uint64_t figure_get(const figure *f) { return atomic_load_explicit(f, memory_order_relaxed); }

#endif
