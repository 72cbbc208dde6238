/* summary.h - the end-of-run report: a table and the primitives' roles for
 * people, one JSON object for machines (--summary-json, --log-format json). */
#ifndef TELEGATE_SUMMARY_H
#define TELEGATE_SUMMARY_H

#include "demo.h"

/* The text report, malloc'd; NULL when out of memory. */
char *summary_text(const demo_summary *s, const demo_config *cfg);

/* The JSON object, malloc'd, on one line unless `pretty`; NULL when out of
 * memory. */
char *summary_json(const demo_summary *s, const demo_config *cfg, int pretty);

#endif
