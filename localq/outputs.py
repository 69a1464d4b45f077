"""Writing result files into a folder a person named (`export --out`, `embed --out`):
nothing planted inside it is followed, and no file is ever seen half-written.

The folder itself may be reached through symlinks (a person may point --out at a
mounted share); everything *inside* it is reached through the folder's descriptor,
one name at a time, without following symlinks, because a shared folder is one where
others can plant links (``img_emb -> ../victim``) and devices or FIFOs (where a write
would hang or vanish). A file is written under a temporary name created afresh
(``O_CREAT | O_EXCL | O_NOFOLLOW``), synced, then renamed over the final name, so a
full disk or a kill leaves the previous file (or none) under the final name, never a
truncated one. Every failure is a one-line LocalqError naming the place.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from localq.errors import LocalqError, OutputRefused
from localq.os_errors import error_number, write_failure

TEMP_SUFFIX = ".tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, as a one-line error names it."""
    if stat.S_ISLNK(mode):
        return "a symbolic link (it could point outside the folder)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class OutputFolder:
    """An open folder to write results into. Use as a context manager, or close()."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, *, option: str = "--out") -> "OutputFolder":
        """The folder at ``path``, made (with its parents) if missing."""
        path = Path(path).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputRefused(f"{option} {path} is {_describe(path)}, not a folder: give a folder") from None
        except OSError as exc:
            raise _failure(exc, path, f"cannot make the folder {path}") from None
        try:
            fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as exc:
            raise _failure(exc, path, f"cannot open the folder {path}") from None
        return cls(path, fd)

    def folder(self, name: str) -> "OutputFolder":
        """The sub-folder ``name``, made if missing; refused if anything but a real folder
        sits there (a planted symlink to a folder elsewhere, above all)."""
        self._check_name(name)
        try:
            os.mkdir(name, dir_fd=self.fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _failure(exc, self.path, f"cannot make {self.path / name}") from None
        try:
            fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refused(name) from None
            raise _failure(exc, self.path, f"cannot open the folder {self.path / name}") from None
        return OutputFolder(self.path / name, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- looking -------------------------------------------------------------------------
    def check_target(self, name: str) -> None:
        """Refuse ``name`` if something other than a regular file sits there already."""
        self._check_name(name)
        mode = self._lstat_mode(name)
        if mode is not None and not stat.S_ISREG(mode):
            raise self._refused(name)

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def read_bytes(self, name: str) -> bytes | None:
        """A regular file's content (None when missing); a link or special file is refused."""
        self._check_name(name)
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refused(name) from None
            raise _failure(exc, self.path, f"cannot read {self.path / name}") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise self._refused(name)
            return fh.read()

    # -- writing -------------------------------------------------------------------------
    @contextmanager
    def replacing(self, name: str, mode: str = "wb", **open_args) -> Iterator[IO]:
        """A new file object whose content becomes ``name`` when the block ends without
        an error (temporary name, fsync, rename); on any error the temporary file goes
        and ``name`` keeps what it held before."""
        self.check_target(name)
        tmp = name + TEMP_SUFFIX
        self._clear_temp(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.EEXIST:  # planted again between the unlink and the open
                raise self._refused(tmp) from None
            raise _failure(exc, self.path, f"cannot write {self.path / name}") from None
        try:
            fh = os.fdopen(fd, mode, **open_args)
        except BaseException:
            os.close(fd)
            self._drop_temp(tmp)
            raise
        try:
            with fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as exc:
            self._drop_temp(tmp)
            if isinstance(exc, OSError) or _is_write_error(exc):
                raise _failure(exc, self.path, f"cannot write {self.path / name}") from None
            raise
        self.sync()

    def write_bytes(self, name: str, data: bytes) -> Path:
        with self.replacing(name) as fh:
            fh.write(data)
        return self.path / name

    def sync(self) -> None:
        """Make the renames inside the folder durable (best effort where fsync of a folder is refused)."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
                raise _failure(exc, self.path, f"cannot sync {self.path}") from None

    # -- internals -----------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise LocalqError(f"refusing to write {name!r}: it would land outside {self.path}")

    def _lstat_mode(self, name: str) -> int | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _failure(exc, self.path, f"cannot look at {self.path / name}") from None

    def _refused(self, name: str) -> OutputRefused:
        what = self._lstat_mode(name)
        kind = file_kind(what) if what is not None else "not a regular file"
        return OutputRefused(f"refusing to write {self.path / name}: it is {kind}; remove it or use another --out")

    def _clear_temp(self, tmp: str) -> None:
        """A temporary file left by a killed run, or something planted in its place, goes:
        unlinking removes a symlink itself, never what it points at."""
        mode = self._lstat_mode(tmp)
        if mode is None:
            return
        if stat.S_ISDIR(mode):
            raise self._refused(tmp)
        try:
            os.unlink(tmp, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _failure(exc, self.path, f"cannot remove {self.path / tmp}") from None

    def _drop_temp(self, tmp: str) -> None:
        try:
            os.unlink(tmp, dir_fd=self.fd)
        except OSError:
            pass


def _describe(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except OSError:
        return "not usable"
    if stat.S_ISLNK(mode):
        try:
            mode = path.stat().st_mode
        except OSError:
            return "a broken symbolic link"
    return "a regular file" if stat.S_ISREG(mode) else file_kind(mode)


def _is_write_error(exc: BaseException) -> bool:
    """Libraries that write through our file object (pyarrow) raise their own types; an
    errno in the message still says what the OS refused."""
    return not isinstance(exc, LocalqError) and error_number(exc) is not None


def _failure(exc: BaseException, where: Path, doing: str) -> LocalqError:
    known = write_failure(exc, where)
    if known is not None:
        return known
    text = str(exc).strip()
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return OutputRefused(f"{doing}: {reason}")
