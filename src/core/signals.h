/* signals.h - SIGINT, SIGTERM and SIGHUP as a call on an ordinary thread.
 *
 * A signal handler may do almost nothing safely; this one writes the
 * signal number to a pipe (write(2) is async-signal-safe). A watcher
 * thread reads the pipe and calls `fn(ctx, signo)` - a plain function on
 * a plain thread, which may log and fire a cancel token. What a signal
 * means is fn's to decide; telegate's meanings are these:
 *
 * - SIGINT and SIGTERM ask for the ordered shutdown, in serve and in the
 *   demo. Their handlers are installed with SA_RESETHAND: a second one
 *   kills the process the default way, should an orderly shutdown ever
 *   hang.
 * - SIGHUP must never cost a reading, and its default action ends the
 *   process at once, readings in flight and all. serve reloads its
 *   configuration and goes on serving: a daemon's SIGHUP asks for a
 *   reload. The demo runs in a terminal, and there SIGHUP means
 *   the terminal went away: it shuts down in order, as after SIGINT. The
 *   SIGHUP handler stays installed however often the signal comes, and
 *   signal_watch_stop does not give SIGHUP its default action back: it
 *   leaves it ignored. serve drains after its watch stopped, and a hang-up
 *   then (systemd's SendSIGHUP= sends one right after SIGTERM) must not
 *   cut the drain short.
 *
 * Only the watcher thread takes these signals: the program blocks them
 * (signal_block) in the thread that starts the runtime, before it does,
 * so every worker and pool thread inherits the mask, and the watcher
 * unblocks them for itself once the handlers are in place. So a signal
 * never interrupts a task, and one that arrives before the watch starts
 * waits for it, pending. (Under ThreadSanitizer a signal that lands on a
 * worker is held until the task it interrupted runs again; for the main
 * task waiting for the very shutdown the signal asks for, that is never.)
 *
 * A signal that arrives before signal_watch_start in a thread that does
 * not block it has its previous disposition. Only one watch can be
 * active in a process. */
#ifndef TELEGATE_SIGNALS_H
#define TELEGATE_SIGNALS_H

#include <pthread.h>
#include <signal.h>

typedef struct signal_watch {
  void (*fn)(void *ctx, int signo);
  void *ctx;
  int pipe_fd[2];
  pthread_t thread;
  struct sigaction old_int, old_term, old_hup;
  int active;
} signal_watch;

/* Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and in the
 * threads it creates from now on; *old gets the mask before, for
 * signal_restore. */
void signal_block(sigset_t *old);
void signal_restore(const sigset_t *old);

/* Installs the handlers of SIGINT, SIGTERM and SIGHUP and starts the
 * watcher, the one thread that takes them. Returns 0 or -errno (the pipe, the thread, sigaction); on an
 * error no handler is installed. */
int signal_watch_start(signal_watch *w, void (*fn)(void *ctx, int signo), void *ctx);

/* Gives SIGINT and SIGTERM their previous handlers back, and SIGHUP its
 * previous one unless that was the default action (then SIGHUP stays
 * ignored); joins the watcher. After it, fn is not running and will not
 * be called. A watch that never started is left alone. */
void signal_watch_stop(signal_watch *w);

#endif
