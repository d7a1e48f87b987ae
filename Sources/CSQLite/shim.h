#include <sqlite3.h>

/// Turns off SQLite's memory statistics, which Rapport never reads: while they are on, every
/// allocation and free SQLite makes takes one process-wide mutex to count it. `sqlite3_config`
/// is variadic, which Swift cannot call; it works only before SQLite initialises, and returns
/// SQLITE_MISUSE (changing nothing) after.
static inline int rapport_sqlite3_disable_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
