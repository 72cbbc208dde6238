/* api_assets.h - the dashboard's files, embedded in the binary.
 *
 * web/embed.cmake generates the table from the files in web/ at build
 * time (web/CMakeLists.txt, target telegate_web), so the page is served
 * by the binary alone and needs no build step of its own. */
#ifndef TELEGATE_API_ASSETS_H
#define TELEGATE_API_ASSETS_H

#include <stddef.h>

typedef struct api_asset {
  const char *path;         /* "/index.html" */
  const char *content_type; /* "text/html; charset=utf-8" */
  const unsigned char *data;
  size_t len;
} api_asset;

extern const api_asset api_assets[];
extern const size_t api_assets_count;

#endif
