/* build_info.c - what this build is; see build_info.h. */
#include "build_info.h"

#include "build_info_values.h"
#include "tg/version.h"

build_info build_info_get(void) {
  return (build_info){.version = TELEGATE_VERSION,
                      .revision = TELEGATE_REVISION,
                      .build_type = TELEGATE_BUILD_TYPE,
                      .libtg = tg_version_string()};
}
