/* schema.h - the names readings use, the fields each measurement has, and
 * the rules a declared measurement keeps.
 *
 * A reading names its measurement and fields by small ids (reading.h).
 * The schema hands the ids out: one table of names, process-wide for a
 * run, bounded by max_names (a name is never given back, so the bound is
 * what keeps a device that invents a new field name per line from
 * growing memory and the database's columns without end). A measurement
 * has columns: each field name it has carried, with the type the first
 * value gave it. Storage makes a column of each (storage_sqlite.c adds
 * them with ALTER TABLE), so a measurement is a table that plain SQL
 * reads.
 *
 * Types: a field keeps the type it was first seen with. Line protocol
 * says the type of every value (1.5 float, 1i integer, "x" string, t
 * boolean); JSON numbers do not, so a JSON number is a float unless its
 * field is already an integer (and the number a whole one, converted).
 * An integer sent to a float field is converted; any other mismatch is
 * refused as type_conflict, never stored as something else.
 *
 * Declared measurements (schema_declare_file) are strict: a field they
 * do not list is refused as unknown_field, a listed required field that
 * is absent as missing_field, a number outside its range as
 * out_of_range. The others take any field.
 *
 * The measurement "telemetry" - the article's, and the measurement of
 * every JSON reading that names none - is always there, with temperature
 * (float), humidity (float) and battery (integer) as its first columns;
 * its table is storage's `readings`.
 *
 * Threads: every call may come from any thread at once. Looking a name
 * up takes no lock (names and columns are published once and never
 * change); only a new name or a new column takes the schema's lock. */
#ifndef TELEGATE_SCHEMA_H
#define TELEGATE_SCHEMA_H

#include "protocol.h"
#include "reading.h"

#include <stddef.h>
#include <stdint.h>

typedef struct schema schema;

/* The ids every schema starts with. */
enum {
  SCHEMA_TELEMETRY = 1, /* the measurement "telemetry" */
  SCHEMA_TEMPERATURE,
  SCHEMA_HUMIDITY,
  SCHEMA_BATTERY,
};

/* A name is 1 .. SCHEMA_NAME_MAX bytes of UTF-8. */
#define SCHEMA_NAME_MAX      128
/* The default bound of names, and its ceiling (ids are 16 bits). */
#define SCHEMA_NAMES_DEFAULT 1024
#define SCHEMA_NAMES_LIMIT   65535
/* A measurement has at most this many fields: below SQLite's 2000
 * columns and PostgreSQL's 1600, with room for device, seq, ts_ms and
 * batch. */
#define SCHEMA_COLUMNS_MAX   1000

typedef struct schema_column {
  uint16_t name;
  uint8_t type;     /* field_type */
  uint8_t required; /* declared: a reading without it is refused */
  double min, max;  /* declared: the range of a number; -inf .. inf when not */
  const char *unit; /* declared, or NULL */
} schema_column;

/* A schema of at most max_names names (0: SCHEMA_NAMES_DEFAULT), or NULL
 * when out of memory. */
schema *schema_new(uint32_t max_names);
void schema_free(schema *s);

/* Reads declared measurements from a file, one field per line:
 *   MEASUREMENT FIELD TYPE [MIN MAX] [unit=UNIT] [optional]
 * TYPE is float, integer, boolean, string or tag; '#' starts a comment.
 * A declared measurement takes only the fields listed. Returns 0, or
 * -EINVAL / -ENOENT / -ENOMEM with "FILE:LINE: why" in err. */
int schema_declare_file(schema *s, const char *path, char *err, size_t errlen);

/* The id of a name already known, or 0. */
uint16_t schema_find(const schema *s, const char *name, size_t len);

/* The name of an id, NUL-terminated, valid while s lives; "" for an id
 * not handed out. */
const char *schema_name(const schema *s, uint16_t id);

/* The columns of measurement m (its fields in the order they came), as
 * many as are known now: *cols stays valid, and later columns are only
 * appended. Returns their number; 0 for a name that is no measurement. */
uint32_t schema_columns(const schema *s, uint16_t m, const schema_column **cols);

/* The index in schema_columns of field `name` of measurement m, or -1. */
int schema_column_of(const schema *s, uint16_t m, uint16_t name);

/* What storage found in the database at open: field of measurement has
 * that type (a field_type). A declared measurement is left as declared.
 * Returns 0, -EEXIST when the field is known with another type (the
 * caller says which), -ENOSPC when the schema or measurement is full,
 * -ENOMEM. */
int schema_add_column(schema *s, const char *measurement, const char *field, int type);

/* Whether id names a measurement. */
int schema_is_measurement(const schema *s, uint16_t id);

/* Makes the reading of a parsed point: interns its names, applies the
 * measurement's types and, when declared, its rules, and copies strings
 * into the reading's own block. The point's text (the line it was parsed
 * from) must still be there. Returns 0 with *out set (r->device 0, to be
 * set by the caller, who owns it: reading_free), or the negative protocol
 * reason with *err filled (err->field the field concerned, valid while s
 * lives): -PROTOCOL_TYPE_CONFLICT, -PROTOCOL_TOO_MANY_FIELDS,
 * -PROTOCOL_UNKNOWN_FIELD, -PROTOCOL_MISSING_FIELD, -PROTOCOL_OUT_OF_RANGE,
 * -PROTOCOL_DUPLICATE_FIELD, -PROTOCOL_BAD_NAME, or -PROTOCOL_NO_MEMORY. */
int schema_pack(schema *s, const protocol_point *p, reading *out, protocol_error *err);

#endif
