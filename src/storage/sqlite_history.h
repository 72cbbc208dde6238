/* sqlite_history.h - the SQLite backend's history index (storage.h's
 * history calls), kept in a database file of its own next to the
 * readings: "<db>-history".
 *
 * Why not an index on readings: devices interleave, so every transaction
 * of N readings from N devices dirties N pages of a (device, ts) index -
 * one page written to the WAL per reading instead of one per hundred.
 * Measured on this 2-core machine with bench/ingest.sh (7,000 devices):
 * 1.19M readings/s committed without it, 68k/s with it.
 *
 * So readings stay append-only, and a thread of this file indexes them
 * behind the writer: every moment it takes the rows stored since the last
 * pass (by rowid, in chunks), sorts them by (device, ts) and adds them
 * to the index, many rows per device at once, in a transaction of the
 * history file - which has its own lock, so the writer never waits for
 * it. A query reads the index for the rows indexed and the few rows
 * stored since (the tail, by rowid) and merges the two: it sees every
 * committed reading.
 *
 * The history file is derived data: deleted, it is rebuilt from the
 * readings (queries of rows not yet indexed are slower meanwhile, and
 * bounded by their timeout). It refers to rows by rowid; a VACUUM of the
 * database renumbers them, so delete the history file after one.
 *
 * Expiry (retention) first takes the front of the table - rows are
 * appended as they arrive, so the oldest come first - and then, for the
 * readings that arrived late, makes a round over the devices through the
 * index. Candidates are read without a lock; the readings are deleted in
 * rowid order (neighbours share pages) in a transaction on the writer's
 * lock, their index entries in one of the index file. Deleting device by
 * device instead - rows spread over the whole table - held the writer up
 * so long that ingest fell from 0.74M to 35k readings/s
 * (bench/retention.sh). */
#ifndef TELEGATE_SQLITE_HISTORY_H
#define TELEGATE_SQLITE_HISTORY_H

#include "storage.h"

#include <pthread.h>

typedef struct sqlite_history sqlite_history;

/* Opens the history of the database at path (its readings table must
 * exist): the field list, the index file, the query connections and the
 * indexing thread. write_lock is the lock the writer's transactions
 * hold. Returns 0, -ENOMEM or -EIO with err set. */
int sqlite_history_open(sqlite_history **out, const char *path, pthread_mutex_t *write_lock, char *err, size_t errlen);

/* Stops the thread and closes everything; h may be NULL. */
void sqlite_history_close(sqlite_history *h);

int sqlite_history_fields(sqlite_history *h, const storage_field **fields, uint32_t *n);

/* Rows stored and not yet indexed when the indexer last looked. Any thread. */
int64_t sqlite_history_behind(sqlite_history *h);

int sqlite_history_query(sqlite_history *h, const storage_history_query *q, storage_history_result *res, char *err,
                         size_t errlen);

int sqlite_history_expire(sqlite_history *h, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted, int *more,
                          char *err, size_t errlen);

#endif
