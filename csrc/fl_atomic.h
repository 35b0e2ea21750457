/* fl_atomic.h: the few atomic operations the C code needs (an int, an int64 and a pointer),
 * portable to MSVC.
 *
 * C11 <stdatomic.h> where the compiler has it. MSVC's C compiler has it only from VS 2022 17.5
 * and only with /experimental:c11atomics, so with MSVC the Interlocked intrinsics of <intrin.h>
 * stand in (defining FL_ATOMIC_INTERLOCKED selects them under MinGW-w64 too, which is how the
 * Windows build of the pool is tested on Linux, under wine). Every operation is sequentially
 * consistent: the Interlocked intrinsics are full barriers, and a seq_cst load is a plain load
 * on x86-64 and an LDAR on AArch64. Nothing here is on a per-element path, but for
 * fl_atomic_load_flag: a relaxed load of a setting that orders nothing (the form of the
 * subnormal products, read in vector loops), a plain load on every target (an aligned 32-bit
 * read is atomic on x86 and AArch64: MSVC's volatile read is one).
 */
#ifndef FL_ATOMIC_H
#define FL_ATOMIC_H

#if defined(FL_ATOMIC_INTERLOCKED) || (defined(_MSC_VER) && !defined(__clang__))

#include <intrin.h>
#include <stdint.h>

typedef volatile long fl_atomic_int;
typedef volatile long long fl_atomic_i64;
typedef void *volatile fl_atomic_ptr;

static inline int fl_atomic_load(fl_atomic_int *p) { return (int)_InterlockedCompareExchange(p, 0, 0); }
static inline int fl_atomic_load_flag(fl_atomic_int *p) { return (int)*p; }
static inline void fl_atomic_store(fl_atomic_int *p, int v) { (void)_InterlockedExchange(p, (long)v); }
/* returns the value before the addition */
static inline int fl_atomic_fetch_add(fl_atomic_int *p, int d) { return (int)_InterlockedExchangeAdd(p, (long)d); }
/* *p = desired if *p == expected; returns whether it did */
static inline int fl_atomic_cas(fl_atomic_int *p, int expected, int desired)
{
    return _InterlockedCompareExchange(p, (long)desired, (long)expected) == (long)expected;
}

/* the 64-bit ones through compare-exchange, which 32-bit x86 has too (cmpxchg8b) */
static inline int64_t fl_atomic_load_i64(fl_atomic_i64 *p) { return (int64_t)_InterlockedCompareExchange64(p, 0, 0); }
static inline void fl_atomic_store_i64(fl_atomic_i64 *p, int64_t v)
{
    long long old = *p;
    for (long long seen; (seen = _InterlockedCompareExchange64(p, (long long)v, old)) != old;) old = seen;
}
static inline int fl_atomic_cas_i64(fl_atomic_i64 *p, int64_t expected, int64_t desired)
{
    return _InterlockedCompareExchange64(p, (long long)desired, (long long)expected) == (long long)expected;
}

static inline const void *fl_atomic_load_ptr(fl_atomic_ptr *p)
{
    return _InterlockedCompareExchangePointer(p, NULL, NULL);
}
static inline void fl_atomic_store_ptr(fl_atomic_ptr *p, const void *v)
{
    (void)_InterlockedExchangePointer(p, (void *)(uintptr_t)v); /* const dropped: stored, never written through */
}
static inline int fl_atomic_cas_ptr(fl_atomic_ptr *p, const void *expected, const void *desired)
{
    return _InterlockedCompareExchangePointer(p, (void *)(uintptr_t)desired, (void *)(uintptr_t)expected) == expected;
}

#else

#include <stdatomic.h>
#include <stdint.h>

typedef atomic_int fl_atomic_int;
typedef _Atomic(int64_t) fl_atomic_i64;
typedef _Atomic(const void *) fl_atomic_ptr;

static inline int fl_atomic_load(fl_atomic_int *p) { return atomic_load(p); }
static inline int fl_atomic_load_flag(fl_atomic_int *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static inline void fl_atomic_store(fl_atomic_int *p, int v) { atomic_store(p, v); }
static inline int fl_atomic_fetch_add(fl_atomic_int *p, int d) { return atomic_fetch_add(p, d); }
static inline int fl_atomic_cas(fl_atomic_int *p, int expected, int desired)
{
    return atomic_compare_exchange_strong(p, &expected, desired);
}

static inline int64_t fl_atomic_load_i64(fl_atomic_i64 *p) { return atomic_load(p); }
static inline void fl_atomic_store_i64(fl_atomic_i64 *p, int64_t v) { atomic_store(p, v); }
static inline int fl_atomic_cas_i64(fl_atomic_i64 *p, int64_t expected, int64_t desired)
{
    return atomic_compare_exchange_strong(p, &expected, desired);
}

static inline const void *fl_atomic_load_ptr(fl_atomic_ptr *p) { return atomic_load(p); }
static inline void fl_atomic_store_ptr(fl_atomic_ptr *p, const void *v) { atomic_store(p, v); }
static inline int fl_atomic_cas_ptr(fl_atomic_ptr *p, const void *expected, const void *desired)
{
    return atomic_compare_exchange_strong(p, &expected, desired);
}

#endif

#endif /* FL_ATOMIC_H */
