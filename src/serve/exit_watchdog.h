/* A last resort for shutdown: once a stop signal has arrived, the process ends within a bounded time
 * even when a part of the shutdown hangs (an HTTP worker stuck in a callback, an engine that does not
 * stop), and says in which phase it was stuck, so that the hang can be found. A normal shutdown ends
 * long before it fires. */
#ifndef PG_SERVE_EXIT_WATCHDOG_H
#define PG_SERVE_EXIT_WATCHDOG_H

/* Starts the countdown (once; later calls do nothing): after `seconds` the process exits with
 * status 1, naming the last phase. */
void serve_exit_watchdog_arm(double seconds);
/* The shutdown phase now running (a string literal: kept, never copied). */
void serve_exit_phase(const char *phase);

#endif
