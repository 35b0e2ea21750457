/* fl_thread.h: the operating system's threads as the pool (fl_pool.c) uses them, one small
 * vocabulary over POSIX threads and Win32 (Vista and later: slim reader/writer locks and
 * condition variables, both statically initialisable). Only what the pool needs: start and
 * join a thread, a mutex, a condition variable, thread-local storage, yielding and the spin
 * hint. The pool's logic, and so its static split, is the same code on both.
 */
#ifndef FL_THREAD_H
#define FL_THREAD_H

#if defined(_WIN32)

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <process.h>
#include <stdint.h>
#include <windows.h>

typedef HANDLE fl_thread;
typedef SRWLOCK fl_mutex;
typedef CONDITION_VARIABLE fl_cond;
#define FL_MUTEX_INIT SRWLOCK_INIT
#define FL_COND_INIT CONDITION_VARIABLE_INIT
#if defined(_MSC_VER) && !defined(__clang__)
#define FL_THREAD_LOCAL __declspec(thread)
#else
#define FL_THREAD_LOCAL _Thread_local
#endif

/* a thread's entry point: FL_THREAD_MAIN(name, arg) { ...; FL_THREAD_END; } */
#define FL_THREAD_MAIN(name, arg) static unsigned __stdcall name(void *arg)
#define FL_THREAD_END return 0
typedef unsigned(__stdcall *fl_thread_main)(void *);

/* 0 on success; _beginthreadex (not CreateThread) so the C runtime is set up for the thread */
static inline int fl_thread_start(fl_thread *t, fl_thread_main fn, void *arg)
{
    uintptr_t h = _beginthreadex(NULL, 0, fn, arg, 0, NULL);
    if (h == 0) return -1;
    *t = (HANDLE)h;
    return 0;
}
static inline void fl_thread_join(fl_thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}
static inline void fl_mutex_lock(fl_mutex *m) { AcquireSRWLockExclusive(m); }
static inline void fl_mutex_unlock(fl_mutex *m) { ReleaseSRWLockExclusive(m); }
static inline int fl_cond_init(fl_cond *c) { InitializeConditionVariable(c); return 0; }
static inline void fl_cond_destroy(fl_cond *c) { (void)c; /* nothing to free */ }
static inline void fl_cond_wait(fl_cond *c, fl_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
static inline void fl_cond_signal(fl_cond *c) { WakeConditionVariable(c); }
static inline void fl_yield(void) { SwitchToThread(); }
#define FL_CPU_RELAX() YieldProcessor()

#else /* POSIX */

#include <pthread.h>
#include <sched.h>
#include <signal.h>

typedef pthread_t fl_thread;
typedef pthread_mutex_t fl_mutex;
typedef pthread_cond_t fl_cond;
#define FL_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define FL_COND_INIT PTHREAD_COND_INITIALIZER
#define FL_THREAD_LOCAL _Thread_local

#define FL_THREAD_MAIN(name, arg) static void *name(void *arg)
#define FL_THREAD_END return NULL
typedef void *(*fl_thread_main)(void *);

/* 0 on success. The thread starts with every signal blocked, so that signals go to the
   application's own threads. */
static inline int fl_thread_start(fl_thread *t, fl_thread_main fn, void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    int masked = pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
    int rc = pthread_create(t, NULL, fn, arg);
    if (masked) pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : -1;
}
static inline void fl_thread_join(fl_thread t) { pthread_join(t, NULL); }
static inline void fl_mutex_lock(fl_mutex *m) { pthread_mutex_lock(m); }
static inline void fl_mutex_unlock(fl_mutex *m) { pthread_mutex_unlock(m); }
static inline int fl_cond_init(fl_cond *c) { return pthread_cond_init(c, NULL) == 0 ? 0 : -1; }
static inline void fl_cond_destroy(fl_cond *c) { pthread_cond_destroy(c); }
static inline void fl_cond_wait(fl_cond *c, fl_mutex *m) { pthread_cond_wait(c, m); }
static inline void fl_cond_signal(fl_cond *c) { pthread_cond_signal(c); }
static inline void fl_yield(void) { sched_yield(); }
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FL_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__GNUC__) && (defined(__aarch64__) || defined(__arm__))
#define FL_CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define FL_CPU_RELAX() ((void)0)
#endif

#endif /* _WIN32 */

#endif /* FL_THREAD_H */
