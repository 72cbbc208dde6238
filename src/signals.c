/* signals.c - a self-pipe from the signal handler to a watcher thread. */
#include "signals.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* The handler has no context argument: the pipe's write end must be
 * reachable from it, and only from it. */
static volatile sig_atomic_t handler_fd = -1;

static void on_signal(int signo) {
  int saved = errno;
  unsigned char b = (unsigned char)signo;
  if (handler_fd >= 0 && write(handler_fd, &b, 1) < 0) { /* nothing to do */
  }
  errno = saved;
}

static void *watcher(void *arg) {
  signal_watch *w = arg;
  for (;;) {
    unsigned char b;
    ssize_t n = read(w->pipe_fd[0], &b, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || b == 0) return NULL; /* 0: signal_watch_stop */
    w->fn(w->ctx, b);
  }
}

int signal_watch_start(signal_watch *w, void (*fn)(void *ctx, int signo), void *ctx) {
  memset(w, 0, sizeof *w);
  w->fn = fn;
  w->ctx = ctx;
  if (pipe(w->pipe_fd) != 0) return -errno;
  int r = pthread_create(&w->thread, NULL, watcher, w);
  if (r != 0) {
    close(w->pipe_fd[0]);
    close(w->pipe_fd[1]);
    return -r;
  }
  handler_fd = w->pipe_fd[1];
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &w->old_int);
  sigaction(SIGTERM, &sa, &w->old_term);
  w->active = 1;
  return 0;
}

void signal_watch_stop(signal_watch *w) {
  if (!w->active) return;
  sigaction(SIGINT, &w->old_int, NULL);
  sigaction(SIGTERM, &w->old_term, NULL);
  handler_fd = -1;
  unsigned char stop = 0;
  while (write(w->pipe_fd[1], &stop, 1) < 0 && errno == EINTR) {
  }
  pthread_join(w->thread, NULL);
  close(w->pipe_fd[0]);
  close(w->pipe_fd[1]);
  w->active = 0;
}
