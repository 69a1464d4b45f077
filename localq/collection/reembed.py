"""Re-embedding rows of vectors.npy from their image files (``localq repair``).

vectors.npy is the vectors' only copy, but each row came from a file whose content hash
SQLite keeps. A row whose digest segment no longer matches (disk damage, a file copied
over from elsewhere) is embedded again from its file, provided the file still has that
content: then the row is what indexing wrote, up to the encoder's arithmetic. A
tombstoned row whose file is gone becomes zeros (it never matches again). A live row
whose file is gone or changed cannot be recovered this way; repair then changes nothing
and says to restore vectors.npy from a backup.
"""

from __future__ import annotations

import numpy as np

from localq.errors import BadImage, VectorsDamaged
from localq.imageio import file_digest, read_file, read_image
from localq.storage.vector_file import VectorFile

_BATCH = 32


def reembed(coll, file: VectorFile, ids: np.ndarray) -> int:
    """Embed rows ``ids`` (sorted) again from their files and write them in place (the
    caller holds the write lock and recomputes the digest chain after). Returns the rows
    written. Nothing is written unless every live row could be embedded again."""
    import torch

    encoder = coll.encoder()
    size = getattr(encoder, "image_size", None)
    vectors = np.zeros((len(ids), file.dim), dtype=np.float32)  # a tombstone that is gone stays zeros
    batch, positions, lost = [], [], []

    def encode() -> None:  # a batch at a time: a damaged segment is up to 16,384 images
        if batch:
            vectors[positions] = encoder.encode_batch(torch.stack(batch))
            batch.clear()
            positions.clear()

    for position, row in enumerate(coll.image_rows(ids.tolist())):
        try:
            data = read_file(row.path)
            if file_digest(data) != row.hash:
                raise BadImage("changed since it was indexed")
            batch.append(encoder.preprocess(read_image(data, size).image))
            positions.append(position)
        except (BadImage, MemoryError):
            if not row.deleted:  # a tombstone never matches again: its row only has to be finite
                lost.append(row.id)
        if len(batch) == _BATCH:
            encode()
    encode()
    if lost:
        raise VectorsDamaged(
            f"{file.path}: {len(lost)} damaged rows (ids {', '.join(map(str, lost[:5]))}"
            f"{', ...' if len(lost) > 5 else ''}) have image files that are gone or changed since indexing, "
            "so they cannot be embedded again: restore vectors.npy from a backup"
        )
    for run in np.split(np.arange(len(ids)), np.flatnonzero(np.diff(ids) != 1) + 1):  # contiguous rows
        file.rewrite(int(ids[run[0]]), vectors[run])
    return len(ids)
