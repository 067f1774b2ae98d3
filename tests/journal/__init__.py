"""worker/journal: SQLite and PostgreSQL stores, group commit, keys, the lock, `journal` views."""
