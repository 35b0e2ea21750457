/* test_pool_process.h: the thread pool's process-level tests of test_pool.c: set_num_threads,
 * fork (the pool rebuilt in the child), FASTLOGITS_NUM_THREADS and an idle pool's CPU.
 * Included once by test_pool.c, where these tests stood (they use its helpers and
 * globals defined above the include). */
/* ------------------------------------------------------------ set_num_threads */

static void test_set_num_threads(void)
{
    static const int seq[] = {4, 2, 1, 3, 8, 2, 16, 1, 2};
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        fl_set_num_threads(seq[i]);
        CHECK(fl_get_num_threads() == seq[i]);
        rec_reset(&g_rec);
        fl_parallel_for(100, rec_task, &g_rec);
        check_split(&g_rec, 100, seq[i], "after fl_set_num_threads");
    }
    fl_set_num_threads(0);
    CHECK(fl_get_num_threads() == 1);
    fl_set_num_threads(-7);
    CHECK(fl_get_num_threads() == 1);
    fl_set_num_threads(1 << 30);
    CHECK(fl_get_num_threads() == FL_POOL_MAX_THREADS);
    fl_set_num_threads(3);
    /* shutdown and lazy rebuild */
    fl_pool_shutdown();
    rec_reset(&g_rec);
    fl_parallel_for(30, rec_task, &g_rec);
    check_split(&g_rec, 30, 3, "after fl_pool_shutdown");
    printf("fl_set_num_threads changes / shutdown + rebuild: done\n");
}

/* ------------------------------------------------------------ fork (POSIX) */

#if !defined(_WIN32)

static int child_jobs(void)
{
    int bad = g_failures;
    for (int th = 1; th <= 4; th++) {
        fl_set_num_threads(th);
        for (int64_t n = 0; n < 50; n += 7) {
            rec_reset(&g_rec);
            fl_parallel_for(n, rec_task, &g_rec);
            int T = (int64_t)th < n ? th : (int)(n < 1 ? 1 : n);
            check_split(&g_rec, n, T, "forked child");
        }
    }
    return g_failures == bad ? 0 : 1;
}

static int run_in_child(int (*body)(void))
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(body());
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (!WIFEXITED(status)) return -2;
    return WEXITSTATUS(status);
}

static atomic_int g_bg_stop;
static void *bg_jobs(void *arg)
{
    caller_arg *a = (caller_arg *)arg;
    enum { N = 64 };
    int64_t in[N], out[N];
    while (!atomic_load(&g_bg_stop)) {
        for (int i = 0; i < N; i++) in[i] = i;
        sq_ctx c = {in, out};
        fl_parallel_for(N, sq_task, &c);
        for (int i = 0; i < N; i++)
            if (out[i] != in[i] * in[i] + 1) a->errors++;
    }
    return NULL;
}

static void test_fork(void)
{
    /* make sure the parent has a live pool */
    fl_set_num_threads(4);
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 4, "parent before fork");
    int rc = run_in_child(child_jobs);
    CHECK(rc == 0);
    printf("fork child (idle pool in parent): exit code %d\n", rc);

    /* fork while another thread keeps the pool busy */
    test_thread bg;
    caller_arg a = {0, 0};
    atomic_store(&g_bg_stop, 0);
    fl_set_num_threads(2);
    CHECK(test_thread_create(&bg, bg_jobs, &a) == 0);
    int worst = 0;
    for (int i = 0; i < 10; i++) {
        test_sleep_ms(2);
        rc = run_in_child(child_jobs);
        if (rc != 0) worst = rc;
    }
    atomic_store(&g_bg_stop, 1);
    test_thread_join(bg);
    CHECK(worst == 0);
    CHECK(a.errors == 0);
    printf("fork child x10 while pool busy in another thread: worst exit code %d, parent errors %d\n",
           worst, a.errors);

    /* parent still works after forking */
    fl_set_num_threads(3);
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 3, "parent after fork");
}

static int child_affinity(void)
{
    /* restrict to a single CPU: the default must follow the affinity mask */
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 2;
    int first = -1;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) {
            first = i;
            break;
        }
    if (first < 0) return 3;
    CPU_ZERO(&set);
    CPU_SET(first, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) return 4;
    unsetenv("FASTLOGITS_NUM_THREADS");
    if (fl_default_num_threads() != 1) return 5;
    if (fl_reset_default_num_threads() != 1 || fl_get_num_threads() != 1) return 6;
    setenv("FASTLOGITS_NUM_THREADS", "6", 1);
    if (fl_default_num_threads() != 6) return 7;
    return 0;
}
#endif /* !_WIN32 */

/* ------------------------------------------------------------ FASTLOGITS_NUM_THREADS */

static void test_env(void)
{
    int cpus = test_cpus();
    if (cpus < 1) cpus = 1;
    struct {
        const char *v;
        int want; /* 0: the CPU count */
    } cases[] = {
        {"3", 3},       {"1", 1},         {" 5 ", 5},     {"+2", 2},       {"12\n", 12},
        {"0", 0},       {"-2", 0},        {"abc", 0},     {"4x", 0},       {"", 0},
        {" ", 0},       {"2.5", 0},       {"0x10", 0},    {"99999999999", 0}, {"2147483648", 0},
        {"2147483647", FL_POOL_MAX_THREADS}, {"5000", FL_POOL_MAX_THREADS}, {"007", 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_setenv("FASTLOGITS_NUM_THREADS", cases[i].v);
        int want = cases[i].want ? cases[i].want : cpus;
        int got = fl_default_num_threads();
        if (got != want) {
            fprintf(stderr, "FASTLOGITS_NUM_THREADS='%s': got %d want %d\n", cases[i].v, got, want);
            g_failures++;
        }
    }
    test_unsetenv("FASTLOGITS_NUM_THREADS");
    CHECK(fl_default_num_threads() == cpus);
    test_setenv("FASTLOGITS_NUM_THREADS", "5");
    CHECK(fl_reset_default_num_threads() == 5);
    CHECK(fl_get_num_threads() == 5);
    rec_reset(&g_rec);
    fl_parallel_for(100, rec_task, &g_rec);
    check_split(&g_rec, 100, 5, "after fl_reset_default_num_threads");
    test_unsetenv("FASTLOGITS_NUM_THREADS");
    CHECK(fl_reset_default_num_threads() == cpus);
#if !defined(_WIN32)
    int rc = run_in_child(child_affinity);
    CHECK(rc == 0);
    printf("affinity child exit code %d\n", rc);
#endif
    printf("FASTLOGITS_NUM_THREADS parsing (%d CPUs): done\n", cpus);
}

/* ------------------------------------------------------------ idle CPU */

static void test_idle(void)
{
    fl_set_num_threads(4);
    for (int i = 0; i < 100; i++) {
        rec_reset(&g_rec);
        fl_parallel_for(64, rec_task, &g_rec);
    }
    test_sleep_ms(50); /* let the spinning phase end */
    double c0 = test_cpu_s(), w0 = test_now_s();
    test_sleep_ms(300);
    double dc = test_cpu_s() - c0, dw = test_now_s() - w0;
    CHECK(dc < 0.02);
    printf("idle: %.3f ms CPU over %.0f ms wall with 3 live workers\n", dc * 1e3, dw * 1e3);
}
