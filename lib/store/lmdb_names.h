/*
 * lmdb_names.h — the names of the LMDB store that live outside lmdb.c: the
 * databases of an environment, which the contract suite opens to plant a
 * corrupt record. Private to lib/store and its tests.
 */
#ifndef IDEM_STORE_LMDB_NAMES_H
#define IDEM_STORE_LMDB_NAMES_H

/* The names of the two LMDB databases of an environment. */
#define IDEM_STORE_LMDB_DB_RECORDS "records"
#define IDEM_STORE_LMDB_DB_EXPIRY  "expiry"

#endif /* IDEM_STORE_LMDB_NAMES_H */
