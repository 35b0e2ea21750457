/* test_os.h: what test_pool.c needs from the operating system beyond the pool itself (its own
 * threads, thread identity, clocks, sleeping, the environment), for POSIX and Windows. The test
 * starts its callers with these, independently of the pool's own threading (fl_thread.h). */
#ifndef FL_TEST_OS_H
#define FL_TEST_OS_H

#include <stdlib.h>

#if defined(_WIN32)

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

typedef HANDLE test_thread;
typedef DWORD test_tid;

typedef struct {
    void *(*fn)(void *);
    void *arg;
} test_start;

static DWORD WINAPI test_trampoline(LPVOID p)
{
    test_start s = *(test_start *)p;
    free(p);
    s.fn(s.arg);
    return 0;
}

/* 0 on success */
static int test_thread_create(test_thread *t, void *(*fn)(void *), void *arg)
{
    test_start *s = (test_start *)malloc(sizeof *s);
    if (!s) return -1;
    s->fn = fn;
    s->arg = arg;
    *t = CreateThread(NULL, 0, test_trampoline, s, 0, NULL);
    if (*t == NULL) {
        free(s);
        return -1;
    }
    return 0;
}
static void test_thread_join(test_thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}
static test_tid test_self(void) { return GetCurrentThreadId(); }
static int test_same_thread(test_tid a, test_tid b) { return a == b; }
static void test_yield(void) { SwitchToThread(); }
static void test_sleep_ms(int ms) { Sleep((DWORD)ms); }

static double test_now_s(void)
{
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}

/* CPU time of the whole process, user + kernel */
static double test_cpu_s(void)
{
    FILETIME created, exited, kernel, user;
    if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user)) return 0.0;
    ULARGE_INTEGER k, u;
    k.LowPart = kernel.dwLowDateTime;
    k.HighPart = kernel.dwHighDateTime;
    u.LowPart = user.dwLowDateTime;
    u.HighPart = user.dwHighDateTime;
    return (double)(k.QuadPart + u.QuadPart) * 1e-7; /* 100 ns units */
}

static void test_setenv(const char *name, const char *value) { _putenv_s(name, value); }
static void test_unsetenv(const char *name) { _putenv_s(name, ""); /* "" removes it */ }

/* the processors a default pool would use (fl_default_num_threads without the variable) */
static int test_cpus(void) { return (int)GetActiveProcessorCount(ALL_PROCESSOR_GROUPS); }

#else /* POSIX */

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

typedef pthread_t test_thread;
typedef pthread_t test_tid;

static int test_thread_create(test_thread *t, void *(*fn)(void *), void *arg)
{
    return pthread_create(t, NULL, fn, arg) == 0 ? 0 : -1;
}
static void test_thread_join(test_thread t) { pthread_join(t, NULL); }
static test_tid test_self(void) { return pthread_self(); }
static int test_same_thread(test_tid a, test_tid b) { return pthread_equal(a, b); }
static void test_yield(void) { sched_yield(); }
static void test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double test_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_setenv(const char *name, const char *value) { setenv(name, value, 1); }
static void test_unsetenv(const char *name) { unsetenv(name); }

static int test_cpus(void)
{
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
#endif
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

#endif /* _WIN32 */

#endif /* FL_TEST_OS_H */
