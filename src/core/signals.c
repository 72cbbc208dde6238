/* signals.c - a self-pipe from the signal handler to a watcher thread. */
#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* The handler has no context argument: the pipe's write end must be
 * reachable from it, and only from it. An atomic, not a volatile
 * sig_atomic_t: the handler runs on the watcher thread, not on the one
 * that sets it (a lock-free atomic is safe in a handler). */
static atomic_int handler_fd = -1;

static void on_signal(int signo) {
  int saved = errno;
  unsigned char b = (unsigned char)signo;
  /* The write end does not block: with the pipe full, the watcher has
   * that many signals still to read, and one more adds nothing. */
  int fd = atomic_load(&handler_fd);
  if (fd >= 0 && write(fd, &b, 1) < 0) { /* nothing to do */
  }
  errno = saved;
}

/* The signals the watcher takes. */
static void watched(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGHUP);
}

void signal_block(sigset_t *old) {
  sigset_t set;
  watched(&set);
  pthread_sigmask(SIG_BLOCK, &set, old);
}

void signal_restore(const sigset_t *old) { pthread_sigmask(SIG_SETMASK, old, NULL); }

static void *watcher(void *arg) {
  signal_watch *w = arg;
  sigset_t set;
  watched(&set);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL); /* the handlers are in place: pending ones come now */
  for (;;) {
    unsigned char b;
    ssize_t n = read(w->pipe_fd[0], &b, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || b == 0) return NULL; /* 0: signal_watch_stop */
    w->fn(w->ctx, b);
  }
}

static void close_pipe(signal_watch *w) {
  close(w->pipe_fd[0]);
  close(w->pipe_fd[1]);
}

/* Ends the watcher: a 0 byte after every signal already in the pipe. */
static void stop_watcher(signal_watch *w) {
  unsigned char stop = 0;
  while (write(w->pipe_fd[1], &stop, 1) < 0 && (errno == EINTR || errno == EAGAIN)) {
  }
  pthread_join(w->thread, NULL);
}

int signal_watch_start(signal_watch *w, void (*fn)(void *ctx, int signo), void *ctx) {
  memset(w, 0, sizeof *w);
  w->fn = fn;
  w->ctx = ctx;
  /* Close-on-exec: a program serve or the demo starts has no use for it. */
  if (pipe2(w->pipe_fd, O_CLOEXEC) != 0) return -errno;
  if (fcntl(w->pipe_fd[1], F_SETFL, O_NONBLOCK) != 0) {
    int e = errno;
    close_pipe(w);
    return -e;
  }
  atomic_store(&handler_fd, w->pipe_fd[1]);
  struct sigaction stop, hup;
  memset(&stop, 0, sizeof stop);
  stop.sa_handler = on_signal;
  /* No SA_RESTART: the watcher, the one thread these signals reach, has
   * its read interrupted (EINTR) and looks again, which is also where
   * ThreadSanitizer runs the handler it deferred. */
  stop.sa_flags = SA_RESETHAND;
  sigemptyset(&stop.sa_mask);
  hup = stop;
  hup.sa_flags = 0; /* every SIGHUP is caught, the tenth as the first */
  int e = 0;
  if (sigaction(SIGINT, &stop, &w->old_int) != 0) {
    e = errno;
  } else if (sigaction(SIGTERM, &stop, &w->old_term) != 0) {
    e = errno;
    sigaction(SIGINT, &w->old_int, NULL);
  } else if (sigaction(SIGHUP, &hup, &w->old_hup) != 0) {
    e = errno;
    sigaction(SIGINT, &w->old_int, NULL);
    sigaction(SIGTERM, &w->old_term, NULL);
  } else if ((e = pthread_create(&w->thread, NULL, watcher, w)) != 0) {
    sigaction(SIGINT, &w->old_int, NULL);
    sigaction(SIGTERM, &w->old_term, NULL);
    sigaction(SIGHUP, &w->old_hup, NULL);
  }
  if (e != 0) {
    atomic_store(&handler_fd, -1);
    close_pipe(w);
    return -e;
  }
  w->active = 1;
  return 0;
}

void signal_watch_stop(signal_watch *w) {
  if (!w->active) return;
  sigaction(SIGINT, &w->old_int, NULL);
  sigaction(SIGTERM, &w->old_term, NULL);
  struct sigaction hup = w->old_hup;
  if (!(hup.sa_flags & SA_SIGINFO) && hup.sa_handler == SIG_DFL) hup.sa_handler = SIG_IGN;
  sigaction(SIGHUP, &hup, NULL);
  atomic_store(&handler_fd, -1);
  stop_watcher(w);
  close_pipe(w);
  w->active = 0;
}
