"""The SQLite store: one database file for one server process (store, report queries)."""
