/* test-stack.c - a task that overflows its stack stops the process at
 * once: on a guarded stack by the guard page's fault, on a canaried one
 * by the canary check at its next switch. Each overflow runs in a child
 * process; the parent reads how the child ended. */
#include "helpers.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Recursion with 256-byte frames, every byte written, that the compiler
 * cannot fold. */
static __attribute__((noinline)) uintptr_t dig(uintptr_t stop, volatile char *above) {
  volatile char frame[256];
  for (size_t i = 0; i < sizeof frame; i++) frame[i] = (char)(above[0] | 1);
  if ((uintptr_t)frame <= stop) return frame[0];
  return dig(stop, frame) + frame[255];
}

typedef struct overflow {
  size_t stack_size;
  tg_stack_guard guard;
  size_t depth;   /* bytes to dig below the first frame; 0: without end */
  int neighbours; /* parked tasks on the same slab, spawned first */
} overflow;

/* The top of the overflowing task's stack, give or take its first frames. */
static volatile uintptr_t overflow_top;

static void *overflowing(void *arg) {
  const overflow *o = arg;
  volatile char here = 0;
  overflow_top = (uintptr_t)&here;
  uintptr_t stop = o->depth ? (uintptr_t)&here - o->depth : 0;
  dig(stop, &here);
  tg_yield(); /* a canaried stack is checked here */
  return NULL;
}

static void *never_woken(void *arg) {
  tg_notify_wait(arg);
  return NULL;
}

static void *overflow_main(void *arg) {
  const overflow *o = arg;
  tg_notify *never;
  tg_notify_new(&never, NULL);
  tg_spawn_opts opts = {.stack_size = o->stack_size, .guard = o->guard};
  for (int i = 0; i < o->neighbours; i++) tg_spawn(NULL, never_woken, never, &opts);
  tg_task *t;
  tg_spawn(&t, overflowing, arg, &opts);
  tg_task_join(t, NULL);
  return NULL; /* not reached: the overflow stops the process */
}

/* How the child running `o` ended, as a wait status. */
static int run_overflow(const overflow *o) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    tg_run(&(tg_runtime_opts){0}, overflow_main, (void *)o, NULL);
    _exit(0);
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  return status;
}

/* The fault of a guard page is reported by where it hit: within a page or
 * two below the stack's usable size. Without a guard page the task would
 * have written over the stacks below it in its slab first and faulted
 * further down. */
enum { FAULT_NEAR_GUARD = 42, FAULT_ELSEWHERE = 43 };
static size_t guarded_size;

static void on_fault(int sig, siginfo_t *info, void *ctx) {
  (void)sig, (void)ctx;
  uintptr_t depth = overflow_top - (uintptr_t)info->si_addr;
  _exit(depth <= guarded_size + 2 * 4096 ? FAULT_NEAR_GUARD : FAULT_ELSEWHERE);
}

/* The overflowing task sits in the middle of its slab, between stacks it
 * would otherwise write over. */
START_TEST(test_stack_guard_page_stops_overflow) {
  static char alt_stack[64 * 1024];
  guarded_size = TG_STACK_MIN;
  ck_assert_int_eq(sigaltstack(&(stack_t){.ss_sp = alt_stack, .ss_size = sizeof alt_stack}, NULL), 0);
  struct sigaction sa = {.sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_ONSTACK};
  ck_assert_int_eq(sigaction(SIGSEGV, &sa, NULL), 0);
  int status = run_overflow(&(overflow){.stack_size = guarded_size, .guard = TG_STACK_GUARD_ALWAYS, .neighbours = 5});
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == FAULT_NEAR_GUARD, "status 0x%x", status);
}
END_TEST

/* A canaried stack overflowed by a little (into its canary and the
 * padding of the slab's lead page, touching no other stack: it is the
 * first slot of its slab) stops the process with the canary check's
 * abort at the task's next switch. The stack size fills its slot, so the
 * usable size is the size asked for. */
START_TEST(test_stack_canary_stops_overflow) {
  size_t size = 5 * 4096 - 128;
  int status = run_overflow(&(overflow){.stack_size = size, .guard = TG_STACK_GUARD_NEVER, .depth = size + 512});
  ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status 0x%x", status);
}
END_TEST

int main(void) {
  Suite *s = suite_create("stack");
  tg_test_add(s, "guard_page", test_stack_guard_page_stops_overflow, 30);
  tg_test_add(s, "canary", test_stack_canary_stops_overflow, 30);
  return tg_test_main(s);
}
