"""Getting images into a collection: scanning folders, indexing, embedding to shards (in process or on Ray), ingesting shards."""
