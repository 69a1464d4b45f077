"""Collection: a store, its vectors and search index and its encoder, kept in step; check, repair, stats."""
