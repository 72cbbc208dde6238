/* rng.h - the seeded pseudo-random numbers of the demo.
 *
 * Every component draws from its own stream, derived from the run's seed
 * and a stream number, so one component's draws never shift another's and
 * a run replays exactly under the virtual clock. SplitMix64: small, fast
 * and good enough for simulated sensors; not for anything secret. */
#ifndef TELEGATE_RNG_H
#define TELEGATE_RNG_H

#include <stdint.h>

typedef struct rng {
  uint64_t state;
} rng;

static inline uint64_t rng_next(rng *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* A stream for (seed, stream): distinct streams are uncorrelated. */
static inline rng rng_stream(uint64_t seed, uint64_t stream) {
  rng r = {seed ^ (stream * 0xd1b54a32d192ed03ull)};
  rng_next(&r);
  return r;
}

/* Uniform in [0, 1). */
static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform in [lo, hi). */
static inline double rng_range(rng *r, double lo, double hi) { return lo + (hi - lo) * rng_unit(r); }

/* Uniform integer in [0, n), n > 0. */
static inline uint32_t rng_below(rng *r, uint32_t n) { return (uint32_t)(rng_next(r) % n); }

#endif
