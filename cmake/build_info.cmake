# Writes OUT, the values core/build_info.c reports: the version, the git
# revision of SOURCE_DIR and the build type. Run at every build (the
# telegate_build_info target in src/CMakeLists.txt), so a commit without a
# reconfigure still shows; the file is rewritten only when a value
# changed, so an unchanged build recompiles nothing.
#   cmake -DOUT=... -DSOURCE_DIR=... -DVERSION=... -DBUILD_TYPE=... [-DGIT=...] -P build_info.cmake
set(REVISION unknown) # a source tree without git (a release tarball)
if(GIT)
  execute_process(COMMAND ${GIT} -C ${SOURCE_DIR} rev-parse --short HEAD OUTPUT_VARIABLE rev
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
  if(NOT failed AND rev)
    set(REVISION ${rev})
  endif()
endif()
file(CONFIGURE OUTPUT ${OUT} @ONLY CONTENT [[
/* Made by cmake/build_info.cmake at build time; see core/build_info.h. */
#define TELEGATE_VERSION    "@VERSION@"
#define TELEGATE_REVISION   "@REVISION@"
#define TELEGATE_BUILD_TYPE "@BUILD_TYPE@"
]])
