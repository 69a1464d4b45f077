"""The bottom layer: SQLite (the store, its schema and rows), the vectors file, the write lock, where collections live."""
