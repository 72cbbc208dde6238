/* tg/error.h - error codes of libtg.
 *
 * Every libtg call that can fail returns an int: 0 on success or a negative
 * code. System errors are reported as -errno; libtg's own conditions have the
 * codes below, all below -4000 so they never collide with an errno value.
 * tg_strerror() gives a sentence and tg_err_name() the symbol for any code,
 * ours or the system's.
 */
#ifndef TG_ERROR_H
#define TG_ERROR_H

/* X(name, value, message) */
#define TG_ERRNO_MAP(X)                                                         \
  X(EAGAIN, -4001, "operation would wait")                                      \
  X(ECLOSED, -4002, "channel or primitive is closed")                           \
  X(ETIMEDOUT, -4003, "deadline passed before the operation completed")         \
  X(ECANCELED, -4004, "task was aborted")                                       \
  X(EFULL, -4005, "channel is full")                                            \
  X(EEMPTY, -4006, "nothing to take")                                           \
  X(ELAGGED, -4007, "receiver fell behind and missed messages")                 \
  X(EPANICKED, -4008, "task panicked")                                          \
  X(EINVAL, -4009, "invalid argument")                                          \
  X(ENOMEM, -4010, "out of memory")                                             \
  X(ENOTASK, -4011, "call needs a task or a plain thread, not a worker's loop") \
  X(ENOPERM, -4012, "caller does not hold what it tries to release")            \
  X(EOF, -4013, "end of stream")                                                \
  X(EWORKER, -4014, "socket belongs to another worker")

enum {
#define TG__ERR_ENUM(name, value, msg) TG_##name = value,
  TG_ERRNO_MAP(TG__ERR_ENUM)
#undef TG__ERR_ENUM
};

/* A sentence describing code (never NULL). */
const char *tg_strerror(int code);

/* The symbolic name of code, such as "TG_ECLOSED" or "ECONNRESET". */
const char *tg_err_name(int code);

#endif
