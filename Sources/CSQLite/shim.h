#ifndef PORTCULLIS_CSQLITE_SHIM_H
#define PORTCULLIS_CSQLITE_SHIM_H
// SQLite 3 (the embedded session store). Swift imports the API directly except for macros that are casts, such as
// SQLITE_TRANSIENT ((sqlite3_destructor_type)-1); those get typed static inline wrappers here. Keep this file free
// of logic.
#include <sqlite3.h>

/// sqlite3_bind_text with SQLITE_TRANSIENT: SQLite copies the bytes before returning, so Swift's buffer may go.
static inline int csqlite_bind_text(sqlite3_stmt *s, int index, const char *text, int bytes) {
    return sqlite3_bind_text(s, index, text, bytes, SQLITE_TRANSIENT);
}

/// sqlite3_bind_blob with SQLITE_TRANSIENT (see above).
static inline int csqlite_bind_blob(sqlite3_stmt *s, int index, const void *bytes, int count) {
    return sqlite3_bind_blob(s, index, bytes, count, SQLITE_TRANSIENT);
}

#endif
