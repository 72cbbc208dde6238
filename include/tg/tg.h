/* tg/tg.h - libtg, a small async runtime with tokio's primitives for C.
 * Include this for everything, or the one header of the concept you use. */
#ifndef TG_TG_H
#define TG_TG_H

#include "tg/blocking.h"
#include "tg/broadcast.h"
#include "tg/cancel.h"
#include "tg/error.h"
#include "tg/io.h"
#include "tg/joinset.h"
#include "tg/mpsc.h"
#include "tg/notify.h"
#include "tg/oneshot.h"
#include "tg/runtime.h"
#include "tg/select.h"
#include "tg/semaphore.h"
#include "tg/task.h"
#include "tg/time.h"
#include "tg/version.h"
#include "tg/watch.h"

#endif
