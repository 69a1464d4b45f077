"""Filtered top-k over the vectors: exact search and the IVF search index, and the IVF file kept in step with SQLite."""
