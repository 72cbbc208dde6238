/* context.h - the context switch: Boost.Context's fcontext C ABI (on
 * x86-64, libtg's own copy of it without the floating-point control state,
 * context.c), plus the hints AddressSanitizer and ThreadSanitizer need to
 * follow a stack switch. fcontext saves only the callee-saved registers,
 * no signal mask, so a switch costs a few nanoseconds (swapcontext makes a
 * system call). */
#ifndef TG_CONTEXT_H
#define TG_CONTEXT_H

#include <stddef.h>

typedef void *tg__fcontext;
typedef struct tg__transfer {
  tg__fcontext fctx; /* the context that jumped here */
  void *data;
} tg__transfer;

/* tg__context_make(sp, size, fn): a context that runs fn(transfer) on the
 * stack below sp when first jumped to; fn must never return.
 * tg__context_jump(to, data): saves the running context and resumes `to`,
 * which receives {the context that left, data}. */
#if defined(__x86_64__) && defined(__ELF__)
#define TG_OWN_CONTEXT 1
tg__transfer tg__context_jump(tg__fcontext const to, void *data);
tg__fcontext tg__context_make(void *sp, size_t size, void (*fn)(tg__transfer));
#else
/* Declared by hand: Boost ships them for C++ only (libboost_context). */
extern tg__transfer jump_fcontext(tg__fcontext const to, void *vp);
extern tg__fcontext make_fcontext(void *sp, size_t size, void (*fn)(tg__transfer));
#define tg__context_jump jump_fcontext
#define tg__context_make make_fcontext
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_ASAN 1
#endif
#endif

#if defined(TG_ASAN)
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#define TG_ASAN_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define TG_ASAN_FINISH(save)              __sanitizer_finish_switch_fiber(save, NULL, NULL)
#else
#define TG_ASAN_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define TG_ASAN_FINISH(save)              ((void)(save))
#endif

#if defined(__SANITIZE_THREAD__)
#define TG_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TG_TSAN 1
#endif
#endif

#if defined(TG_TSAN)
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#endif
