/* serve/exit_watchdog.h: a detached thread that sleeps until the deadline, then ends the process. */
#include "serve/exit_watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static _Atomic(const char *) g_phase = "stopping";
static atomic_int g_armed;
static double g_seconds;

void serve_exit_phase(const char *phase) { atomic_store(&g_phase, phase); }

static void *countdown(void *arg) {
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)g_seconds;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
    fprintf(stderr, "pagoda: shutdown did not finish in %.0f s (stuck while %s): exiting\n", g_seconds,
            atomic_load(&g_phase));
    fflush(stderr);
    _exit(1);
    return NULL;
}

void serve_exit_watchdog_arm(double seconds) {
    if (atomic_exchange(&g_armed, 1)) return;
    g_seconds = seconds > 1 ? seconds : 1;
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, countdown, NULL) != 0)
        fprintf(stderr, "pagoda: cannot start the shutdown watchdog (shutting down without it)\n");
    pthread_attr_destroy(&a);
}
