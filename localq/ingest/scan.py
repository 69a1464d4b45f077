"""Walk folders and list the image files in them.

Unreadable directories, broken symlinks, FIFOs, devices and sockets (refused from stat,
never opened), and images or videos of a format localq cannot decode are reported as
skips, never raised, so one bad corner of a photo collection cannot abort an indexing
run. Which suffixes count as images is decided in ``localq.imageio``.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from localq.imageio import IMAGE_EXTENSIONS, not_regular_reason, unsupported_reason


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute, resolved
    size: int
    mtime: float
    label: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class ScanSkip:
    path: str
    reason: str
    size: int | None = None  # with mtime: lets a re-run recognise a file it skipped before
    mtime: float | None = None


def labels_from_path(path: Path, root: Path) -> tuple[str | None, str | None]:
    """Read ``split/class/file`` or ``class/file`` under ``root`` as (label, split)."""
    parts = path.relative_to(root).parts[:-1]
    parts = tuple(_text(p) for p in parts)
    if not parts:
        return None, None
    if len(parts) == 1:
        return parts[0], None
    return parts[-1], parts[-2]


def _text(name: str) -> str:
    """A folder name as valid UTF-8 text: its undecodable bytes as '\\xff' (a label is a
    class name, not a path, so a readable stand-in is all it needs to be)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan(roots: list[Path], *, with_labels: bool = False) -> Iterator[FileEntry | ScanSkip]:
    """Yield a FileEntry per image file (sorted, deterministic) and a ScanSkip per problem."""
    for root in roots:
        root = Path(root).expanduser().absolute()
        if os.path.lexists(root) and not root.is_dir():  # one file named on the command line
            reason = unsupported_reason(root)
            yield _skip(root, reason) if reason else next(_entry(root, root.parent, with_labels=False))
            continue
        if not root.is_dir():
            yield ScanSkip(str(root), "no such file or directory")
            continue
        # The folder's real path, so that 'p', 'p/../p' and a link to p name every file
        # inside alike (skips included): a file reached twice is then seen to be one.
        root = Path(os.path.realpath(root))
        yield from _walk(root, root, with_labels)


def _walk(directory: Path, root: Path, with_labels: bool) -> Iterator[FileEntry | ScanSkip]:
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield ScanSkip(str(directory), f"unreadable directory: {exc.strerror or exc}")
        return
    for child in children:
        path = Path(child.path)
        try:
            is_dir = child.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if is_dir:
            if child.is_symlink():
                continue  # avoid cycles and double indexing through linked folders
            yield from _walk(path, root, with_labels)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            yield from _entry(path, root, with_labels)
        elif reason := unsupported_reason(path):
            yield _skip(path, reason)


def _skip(path: Path, reason: str) -> ScanSkip:
    try:
        st = path.stat()
        return ScanSkip(str(path), reason, st.st_size, st.st_mtime)
    except OSError:
        return ScanSkip(str(path), reason)


def _entry(path: Path, root: Path, with_labels: bool) -> Iterator[FileEntry | ScanSkip]:
    try:
        st = path.stat()
    except OSError as exc:
        reason = "broken symlink" if path.is_symlink() else f"unreadable: {exc.strerror or exc}"
        yield ScanSkip(str(path), reason)
        return
    reason = not_regular_reason(st.st_mode)
    if reason:  # recorded under the name found, not its target: a link to /dev/zero is the link
        yield ScanSkip(str(path), reason, st.st_size, st.st_mtime)
        return
    label, split = labels_from_path(path, root) if with_labels else (None, None)
    yield FileEntry(str(path.resolve()), st.st_size, st.st_mtime, label, split)


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both absolute, resolved; compared as text)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
