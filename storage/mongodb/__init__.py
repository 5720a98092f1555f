"""The MongoDB store, shared by any number of server processes (store, report queries, coordination)."""
