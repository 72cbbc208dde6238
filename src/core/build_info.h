/* build_info.h - what this build of telegate is: its version, the git
 * revision it was built from, its build type, and the libtg it runs on.
 * `telegate --version` prints it and /metrics exports it as
 * telegate_build_info.
 *
 * The version is CMake's project(VERSION), written nowhere else; the
 * revision is read at every build, "unknown" when the sources are not a
 * git checkout. All strings are static and never NULL. */
#ifndef TELEGATE_BUILD_INFO_H
#define TELEGATE_BUILD_INFO_H

typedef struct build_info {
  const char *version;    /* "0.1.0" */
  const char *revision;   /* short git sha, or "unknown" */
  const char *build_type; /* CMAKE_BUILD_TYPE: Release, RelWithDebInfo, Asan, ... */
  const char *libtg;      /* the running libtg's version (tg_version_string) */
} build_info;

build_info build_info_get(void);

#endif
