/* version.c - the version of the running libtg; see tg/version.h. */
#include "tg/version.h"

const char *tg_version_string(void) { return TG_VERSION_STRING; }
