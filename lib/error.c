/* error.c - names and messages of libtg's error codes. */
#include "tg/error.h"

#include <stdio.h>
#include <string.h>

const char *tg_strerror(int code) {
  switch (code) {
#define TG__ERR_MSG(name, value, msg) \
  case value: return msg;
    TG_ERRNO_MAP(TG__ERR_MSG)
#undef TG__ERR_MSG
  case 0: return "success";
  default: return code < 0 ? strerror(-code) : "unknown error";
  }
}

const char *tg_err_name(int code) {
  switch (code) {
#define TG__ERR_NAME(name, value, msg) \
  case value: return "TG_" #name;
    TG_ERRNO_MAP(TG__ERR_NAME)
#undef TG__ERR_NAME
  case 0: return "OK";
  default: {
    /* strerrorname_np is glibc >= 2.32, which Debian 12 has. */
    const char *name = code < 0 ? strerrorname_np(-code) : NULL;
    return name ? name : "UNKNOWN";
  }
  }
}
