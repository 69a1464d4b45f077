"""Typed errors. Each carries a one-line message that tells the user what to do;
the CLI prints it and exits non-zero, library callers catch the type."""


class LocalqError(Exception):
    """Base class for every error localq raises on purpose."""


class CollectionNotFound(LocalqError):
    """No collection exists at the given directory."""


class EncoderMismatch(LocalqError):
    """A collection built with one encoder was asked to take vectors from another."""


class EncoderUnavailable(LocalqError):
    """An encoder's weights are missing, unreadable or do not fit its architecture."""


class VectorsDamaged(LocalqError):
    """vectors.npy, the only copy of a collection's vectors, is missing rows or damaged."""


class BadImage(LocalqError):
    """A file could not be decoded as an image; ``reason`` is stored with the skip."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidScores(LocalqError):
    """Labels were NaN, out of [-1, 1], or named ids outside the batch or collection."""


class ClassifierNotFound(LocalqError):
    """No classifier of that name exists in the collection."""


class ClassifierMismatch(LocalqError):
    """A classifier file's model_id or dim does not match the collection."""


class NothingToUndo(LocalqError):
    """Undo was asked for on a classifier with no labeled round."""


class ImageNotFound(LocalqError):
    """An image id that is not (or no longer) in the collection, or a path with no file."""


class InvalidPrompt(LocalqError):
    """A text prompt that cannot be searched for (empty)."""


class CollectionBusy(LocalqError):
    """Another process held the collection's write lock for longer than the timeout."""


class CollectionUnwritable(LocalqError):
    """The collection directory (or its parent) cannot be written: permissions, a file in its place."""


class DatabaseDamaged(LocalqError):
    """localq.db is unreadable, truncated, not a database, or empty where data is expected."""


class StaleClassifier(LocalqError):
    """Another process changed this classifier since it was loaded; it has been reloaded."""


class InvalidArgument(LocalqError):
    """An argument that cannot mean anything, such as an empty --db."""


class InvalidName(LocalqError):
    """A classifier name outside the safe slug character set (see localq.names)."""


class InvalidClassifierFile(LocalqError):
    """A classifier file whose weights or bias are not a usable linear layer."""


class BadShard(LocalqError):
    """An embedding shard is truncated, misaligned with its metadata, or holds bad rows."""


class EmbedFailed(LocalqError):
    """An embedding job could not run or was cut short; finished shards are kept."""


class OutputRefused(LocalqError):
    """An output target (export's or embed's --out) that is not a plain file in a plain
    folder: a symlink planted inside it, a device, a FIFO, a directory, or a place the OS
    refuses to write."""


class WriteFailed(LocalqError):
    """The OS refused a write: a read-only file system or a failing disk. What was
    committed before it is intact."""


class DiskFull(WriteFailed):
    """A write ran out of space or quota. What was committed before it is intact."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name), for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class SidecarProblem(LocalqError):
    """One XMP sidecar could not be read or written (not XMP, read-only, its folder locked);
    the others are still written."""
