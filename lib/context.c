/* context.c - the context switch on x86-64 (System V, ELF): Boost.Context's
 * fcontext without the floating-point control state.
 *
 * Boost's jump_fcontext saves and restores MXCSR and the x87 control word
 * at every switch; ldmxcsr and fldcw are microcoded and took more than
 * half of a switch (13 ns -> 5.7 ns per switch without them, on the
 * development VM). libtg does not keep that state per task: tasks on a
 * worker share their thread's rounding mode and exception masks, as the
 * futures one tokio thread polls do (tg/task.h says so). The frame is
 * Boost's otherwise: callee-saved registers and the resume address on the
 * stack of the context that leaves, the stack pointer as its handle, and a
 * transfer {the context that left, data} delivered to the one resumed.
 *
 * One more difference: the resumed context is entered by `ret`, not by
 * Boost's `jmp *%r8`. The call into tg__context_jump pushed an entry on
 * the CPU's return stack buffer; a jump leaves it there, so every return
 * of the resumed task up its call chain is predicted one entry off and
 * mispredicts. With `ret` that entry is consumed by the switch itself, and
 * since tasks hand the worker to each other from one call site
 * (scheduler.c's tg__switch_away) it even predicts right; the task's further
 * returns then meet entries pushed by the same code path. W7 32.6 -> 26.7
 * ms of CPU, W4 145 -> 124, W9 99 -> 83 (min of 9 runs). A switch between
 * two different call sites (tg-microbench's context_switch_ns) pays a
 * mispredicted `ret` instead. With hardware shadow stacks enforced this
 * `ret` would fault; libtg's objects are not marked for them. Other
 * targets use Boost's functions (context.h). */
#include "context.h"

#include <stdint.h>

#if defined(TG_OWN_CONTEXT)

/* The resume address of a new context: enters fn (in rbx) as if called,
 * with the transfer in rdi:rsi as the jump that resumed it left them.
 *
 * tg__context_jump(to, data): saves the six callee-saved registers below
 * its return address, switches the stack pointer to `to`, restores the
 * six saved there and returns to its resume address, delivering {the old
 * stack pointer, data} in rax:rdx to a context resumed in a jump, or in
 * rdi:rsi to a new one's trampoline. */
void tg__context_trampoline(void);

__asm__(".text\n"
        ".globl tg__context_trampoline\n"
        ".hidden tg__context_trampoline\n"
        ".type tg__context_trampoline,@function\n"
        ".align 16\n"
        "tg__context_trampoline:\n"
        "  pushq %rbp\n" /* 0 in a return address's slot: the stack as after a call, and where backtraces stop */
        "  jmpq *%rbx\n"
        ".size tg__context_trampoline,.-tg__context_trampoline\n"
        "\n"
        ".globl tg__context_jump\n"
        ".hidden tg__context_jump\n"
        ".type tg__context_jump,@function\n"
        ".align 16\n"
        "tg__context_jump:\n"
        "  leaq -0x38(%rsp), %rsp\n"
        "  movq %r12, 0x8(%rsp)\n"
        "  movq %r13, 0x10(%rsp)\n"
        "  movq %r14, 0x18(%rsp)\n"
        "  movq %r15, 0x20(%rsp)\n"
        "  movq %rbx, 0x28(%rsp)\n"
        "  movq %rbp, 0x30(%rsp)\n"
        "  movq %rsp, %rax\n"
        "  movq %rdi, %rsp\n"
        "  movq 0x8(%rsp), %r12\n"
        "  movq 0x10(%rsp), %r13\n"
        "  movq 0x18(%rsp), %r14\n"
        "  movq 0x20(%rsp), %r15\n"
        "  movq 0x28(%rsp), %rbx\n"
        "  movq 0x30(%rsp), %rbp\n"
        "  leaq 0x38(%rsp), %rsp\n"
        "  movq %rsi, %rdx\n"
        "  movq %rax, %rdi\n"
        "  retq\n"
        ".size tg__context_jump,.-tg__context_jump\n");

/* A C function, not assembly, so that the linker takes this file from
 * the archive (a link-time-optimised object does not list the symbols its
 * assembly defines): the frame tg__context_jump resumes, with rbx = fn,
 * rbp = 0 and the trampoline as resume address, 16-byte aligned below sp. */
tg__fcontext tg__context_make(void *sp, size_t size, void (*fn)(tg__transfer)) {
  (void)size;
  uintptr_t *frame = (uintptr_t *)(((uintptr_t)sp & ~(uintptr_t)15) - 0x40);
  frame[5] = (uintptr_t)fn;
  frame[6] = 0;
  frame[7] = (uintptr_t)tg__context_trampoline;
  return frame;
}

#else

/* ISO C wants a declaration in every translation unit. */
typedef int tg__context_uses_boost;

#endif
