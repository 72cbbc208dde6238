/* signals.h - SIGINT and SIGTERM as a call on an ordinary thread.
 *
 * A signal handler may do almost nothing safely; this one writes the
 * signal number to a pipe (write(2) is async-signal-safe). A watcher
 * thread reads the pipe and calls `fn(ctx, signo)` - a plain function on
 * a plain thread, which may log and fire a cancel token. The handlers are
 * installed with SA_RESETHAND: a second Ctrl-C kills the process the
 * default way, should an orderly shutdown ever hang. Only one watch can
 * be active in a process. */
#ifndef TELEGATE_SIGNALS_H
#define TELEGATE_SIGNALS_H

#include <pthread.h>
#include <signal.h>

typedef struct signal_watch {
  void (*fn)(void *ctx, int signo);
  void *ctx;
  int pipe_fd[2];
  pthread_t thread;
  struct sigaction old_int, old_term;
  int active;
} signal_watch;

/* Installs the handlers and starts the watcher. Returns 0 or -errno. */
int signal_watch_start(signal_watch *w, void (*fn)(void *ctx, int signo), void *ctx);
/* Restores the previous handlers and joins the watcher; after it, fn is
 * not running and will not be called. */
void signal_watch_stop(signal_watch *w);

#endif
