"""One XMP sidecar: the keywords localq put in it, merged with everything else it holds.

Photo managers (digiKam, darktable, Lightroom, Shotwell, Immich) read keywords from an XMP
sidecar beside the photo: ``dc:subject`` holds flat keywords, ``lr:hierarchicalSubject``
paths such as ``localq|dog``. localq adds its keyword to both and records what it did in
its own namespace, one ``localq:tags`` entry per classifier (classifier, keyword, score,
round, and whether the ``dc:subject`` keyword was localq's to add), so a later run updates
or removes exactly that and nothing a person or another tool wrote.

The XMP is parsed and written by libexiv2 (python-exiv2), never by string templates. A
sidecar is read whole into memory, changed there, and replaced by rename from a fsynced
temporary file in the same folder: a crash at any point leaves the old sidecar or the new
one, never half of either. The photo itself is never opened for writing.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from localq.errors import DiskFull, SidecarProblem
from localq.os_errors import SPACE_ERRNOS

NAMESPACE = "http://ns.localq.org/xmp/1.0/"
PREFIX = "localq"
HIERARCHY_ROOT = "localq"
STYLES = ("photo.jpg.xmp", "photo.xmp")  # digiKam/darktable; Lightroom-style tools

_TAGS = f"Xmp.{PREFIX}.tags"
_SUBJECT = "Xmp.dc.subject"
_HIERARCHY = "Xmp.lr.hierarchicalSubject"
_FIELDS = ("classifier", "keyword", "score", "round", "addedSubject")
_ready = False


@dataclass(frozen=True)
class Tag:
    """What one classifier says about one photo, as localq records it in the sidecar."""

    classifier: str
    keyword: str
    score: float
    round: int


def sidecar_path(photo: str | Path, style: str = STYLES[0]) -> Path:
    """``photo.jpg.xmp`` (default) or ``photo.xmp`` beside ``photo``."""
    photo = Path(photo)
    if style == "photo.jpg.xmp":
        return photo.with_name(photo.name + ".xmp")
    if style == "photo.xmp":
        return photo.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style {style!r}; one of {', '.join(STYLES)}")


def read_tags(sidecar: Path) -> list[Tag]:
    """localq's entries in ``sidecar`` (none when it does not exist)."""
    data = _read(sidecar)
    if data is None:
        return []
    return [_as_tag(e) for e in _entries(_parse(sidecar, data).xmpData())]


@dataclass(frozen=True)
class Edit:
    """A sidecar's new content, not yet written; ``packet`` None: the sidecar goes."""

    sidecar: Path
    action: str  # added, updated, removed
    packet: bytes | None


def update(sidecar: Path, classifier: str, tag: Tag | None, *, write: bool = True) -> str:
    """Make ``sidecar`` carry ``tag`` as classifier's keyword (``None``: carry none of it).

    Returns what changed: "added", "updated", "removed" or "unchanged". With ``write=False``
    nothing is written (a dry run). Raises SidecarProblem for this sidecar alone (unreadable,
    read-only, not XMP, its folder locked) and DiskFull when the disk is."""
    edit = plan(sidecar, classifier, tag, build=write)
    if edit is None:
        return "unchanged"
    if write:
        problems: list[str] = []
        with SidecarWriter(on_problem=lambda e, message: problems.append(message)) as writer:
            writer.add(edit)
        if problems:
            raise SidecarProblem(problems[0])
    return edit.action


def plan(sidecar: Path, classifier: str, tag: Tag | None, *, build: bool = True) -> Edit | None:
    """The edit that makes ``sidecar`` carry ``tag`` (None: nothing to change). With
    ``build=False`` only the action is worked out (a dry run: no packet)."""
    _setup()
    data = _read(sidecar)
    if data is None and tag is None:
        return None
    image = _parse(sidecar, data) if data is not None else _new_image()
    xmp = image.xmpData()
    entries = _entries(xmp)
    old = next((e for e in entries if e["classifier"] == classifier), None)
    others = [e for e in entries if e["classifier"] != classifier]
    new = None
    if tag is not None:
        new = {
            "classifier": tag.classifier,
            "keyword": tag.keyword,
            "score": f"{tag.score:.4f}",
            "round": str(tag.round),
            "addedSubject": "False",
        }
        if old is not None and _same(old, new):
            return None
    elif old is None:
        return None
    action = "removed" if new is None else ("added" if old is None else "updated")
    _check_writable(sidecar)  # a dry run reports what a real run could not write, too
    if not build:
        return Edit(sidecar, action, None)

    subjects = _bag(xmp, _SUBJECT)
    hierarchy = _bag(xmp, _HIERARCHY)
    remaining = others + ([new] if new else [])
    if old is not None:
        heirs = [e for e in remaining if e["keyword"] == old["keyword"]]
        if old["addedSubject"] == "True":
            if heirs:  # another entry (or the new one) keeps the keyword, and with it the claim
                heirs[0]["addedSubject"] = "True"
            else:
                subjects = [s for s in subjects if s != old["keyword"]]
        if not heirs:
            hierarchy = [h for h in hierarchy if h != f"{HIERARCHY_ROOT}|{old['keyword']}"]
    if new is not None:
        if new["keyword"] not in subjects:
            subjects.append(new["keyword"])
            new["addedSubject"] = "True"
        if f"{HIERARCHY_ROOT}|{new['keyword']}" not in hierarchy:
            hierarchy.append(f"{HIERARCHY_ROOT}|{new['keyword']}")

    _set_bag(xmp, _SUBJECT, subjects)
    _set_bag(xmp, _HIERARCHY, hierarchy)
    _set_entries(xmp, remaining)
    if xmp.count() == 0:
        # Nothing but localq's own keyword was in it: the sidecar goes as a whole.
        return Edit(sidecar, action, None)
    image.setXmpData(xmp)
    image.writeMetadata()
    with image.io().mmap() as view:
        return Edit(sidecar, action, bytes(view))


# -- XMP through libexiv2 ---------------------------------------------------------------


def _setup() -> None:
    global _ready
    if _ready:
        return
    import exiv2

    exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)  # its warnings would print past the CLI
    exiv2.XmpParser.initialize()
    exiv2.XmpProperties.registerNs(NAMESPACE, PREFIX)
    _ready = True


def _new_image():
    import exiv2

    return exiv2.ImageFactory.create(exiv2.ImageType.xmp)


def _parse(sidecar: Path, data: bytes):
    import exiv2

    _setup()
    problem = f"{sidecar} is not an XMP sidecar; move it aside or fix it, localq leaves it as it is"
    try:
        image = exiv2.ImageFactory.open(data)
        if image.imageType() != exiv2.ImageType.xmp:
            raise SidecarProblem(problem)
        image.readMetadata()
    except exiv2.Exiv2Error:
        raise SidecarProblem(problem) from None
    return image


def _bag(xmp, key: str) -> list[str]:
    import exiv2

    found = xmp.findKey(exiv2.XmpKey(key))
    if found == xmp.end():
        return []
    value = found.getValue()
    return [value.toString(i) for i in range(value.count())]


def _set_bag(xmp, key: str, items: list[str]) -> None:
    import exiv2

    if _bag(xmp, key) == items:
        return
    _erase(xmp, key)
    if items:
        value = exiv2.Value.create(exiv2.TypeId.xmpBag)
        for item in items:
            value.read(item)
        xmp[key] = value


def _entries(xmp) -> list[dict]:
    """localq:tags as dicts of strings, in order; an entry without a classifier is not localq's."""
    fields: dict[int, dict] = {}
    for datum in xmp:
        key = datum.key()
        if not key.startswith(_TAGS + "["):
            continue
        index, _, field = key[len(_TAGS) + 1 :].partition("]/")
        name = field.partition(":")[2]
        if index.isdigit() and name in _FIELDS:
            fields.setdefault(int(index), {})[name] = datum.toString()
    return [{f: e.get(f, "") for f in _FIELDS} for _, e in sorted(fields.items()) if e.get("classifier")]


def _set_entries(xmp, entries: list[dict]) -> None:
    import exiv2

    _erase(xmp, _TAGS, prefix=True)
    if not entries:
        return
    bag = exiv2.XmpTextValue()
    bag.setXmpArrayType(exiv2.XmpValue.XmpArrayType.xaBag)
    xmp.add(exiv2.XmpKey(_TAGS), bag)
    for i, entry in enumerate(entries, 1):
        for field in _FIELDS:
            xmp[f"{_TAGS}[{i}]/{PREFIX}:{field}"] = entry[field]


def _erase(xmp, key: str, *, prefix: bool = False) -> None:
    import exiv2

    if not prefix:
        found = xmp.findKey(exiv2.XmpKey(key))
        if found != xmp.end():
            xmp.erase(found)
        return
    doomed = [d.key() for d in xmp if d.key() == key or d.key().startswith(key + "[")]
    for k in doomed:
        xmp.erase(xmp.findKey(exiv2.XmpKey(k)))


def _same(old: dict, new: dict) -> bool:
    return all(old[f] == new[f] for f in ("keyword", "score", "round"))


def _as_tag(entry: dict) -> Tag:
    def number(text, kind):
        try:
            return kind(text)
        except ValueError:
            return kind(0)

    return Tag(entry["classifier"], entry["keyword"], number(entry["score"], float), number(entry["round"], int))


# -- files: read whole, replace whole -----------------------------------------------------


def _read(sidecar: Path) -> bytes | None:
    try:
        data = sidecar.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise SidecarProblem(f"{sidecar} is a folder, not a sidecar file; localq leaves it as it is") from None
    except OSError as exc:
        raise SidecarProblem(f"cannot read {sidecar}: {exc.strerror or exc}") from None
    return data or None  # an empty file holds nothing to keep


def _check_writable(sidecar: Path) -> None:
    """Refuse a read-only sidecar or folder by its permission bits, as a person set them,
    even where the process could write anyway (root)."""
    folder = sidecar.parent
    try:
        info = os.stat(folder)
    except OSError as exc:
        raise SidecarProblem(f"cannot reach folder {folder}: {exc.strerror or exc}") from None
    if not info.st_mode & 0o222 or not os.access(folder, os.W_OK | os.X_OK):
        raise SidecarProblem(f"folder {folder} is read-only; {sidecar.name} was not written")
    try:
        mode = os.lstat(sidecar).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SidecarProblem(f"cannot reach {sidecar}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SidecarProblem(f"{sidecar} is not a regular file; localq leaves it as it is")
    if not mode & 0o222 or not os.access(sidecar, os.W_OK):
        raise SidecarProblem(f"{sidecar} is read-only; localq leaves it as it is")


class SidecarWriter:
    """Writes edits a batch at a time: each new sidecar to a temporary file beside it, the
    batch's files fsynced together on threads (the file system commits them as one; one
    fsync after another costs milliseconds each), then each renamed over its sidecar and
    each folder fsynced once. Temporary files exist only inside ``flush``; a kill -9 there
    leaves at most a hidden ``.NAME.localq-PID.tmp``, never a half sidecar."""

    def __init__(self, *, batch: int = 256, on_done=None, on_problem=None):
        self.batch = batch
        self.on_done = on_done or (lambda edit: None)
        self.on_problem = on_problem or (lambda edit, message: None)
        self._pending: list[Edit] = []
        self._pending_paths: set[Path] = set()

    def __enter__(self) -> "SidecarWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.flush()

    def holds(self, sidecar: Path) -> bool:
        """Whether an edit of ``sidecar`` waits in this batch (read it again only after a flush)."""
        return sidecar in self._pending_paths

    def add(self, edit: Edit) -> None:
        self._pending.append(edit)
        self._pending_paths.add(edit.sidecar)
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_paths = set()
        staged: list[tuple[Edit, Path | None]] = []
        try:
            for edit in pending:
                try:
                    staged.append((edit, _stage(edit) if edit.packet is not None else None))
                except SidecarProblem as exc:
                    self.on_problem(edit, str(exc))
            failed = _fsync_all([tmp for _, tmp in staged if tmp is not None])
            if failed:  # one sidecar's failure is its own problem; the others are still written
                for edit, tmp in staged:
                    if tmp in failed:
                        _unlink_quietly(tmp)
                        self.on_problem(edit, str(_write_error(edit.sidecar, failed[tmp])))
                staged = [(edit, tmp) for edit, tmp in staged if tmp not in failed]
        except BaseException:
            for _, tmp in staged:
                if tmp is not None:
                    _unlink_quietly(tmp)
            raise
        folders = set()
        for i, (edit, tmp) in enumerate(staged):
            try:
                if tmp is None:
                    edit.sidecar.unlink(missing_ok=True)
                else:
                    os.replace(tmp, edit.sidecar)
            except OSError as exc:
                if tmp is not None:
                    _unlink_quietly(tmp)
                self.on_problem(edit, f"cannot write {edit.sidecar}: {exc.strerror or exc}")
                continue
            except BaseException:
                for _, later in staged[i:]:
                    if later is not None:
                        _unlink_quietly(later)
                raise
            folders.add(edit.sidecar.parent)
            self.on_done(edit)
        for folder in folders:
            _sync_folder(folder)


def _stage(edit: Edit) -> Path:
    """Write ``edit.packet`` to a temporary file beside its sidecar, with the sidecar's mode."""
    sidecar = edit.sidecar
    tmp = sidecar.with_name(f".{sidecar.name}.localq-{os.getpid()}.tmp")
    try:
        mode = stat.S_IMODE(os.stat(sidecar).st_mode)
    except OSError:
        mode = 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(edit.packet)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise _write_error(sidecar, exc) from None
    return tmp


def _fsync_all(paths: list[Path]) -> dict[Path, OSError]:
    """fsync every file, on threads; the files whose fsync failed, with their errors. A full
    disk is DiskFull at once: nothing after it can be written either."""
    if not paths:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    def sync(path: Path) -> tuple[Path, OSError] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return path, exc
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        failed = dict(r for r in pool.map(sync, paths) if r is not None)
    for path, exc in failed.items():
        if exc.errno in SPACE_ERRNOS:
            raise _write_error(path, exc)
    return failed


def _write_error(sidecar: Path, exc: OSError) -> Exception:
    if exc.errno in SPACE_ERRNOS:
        return DiskFull(f"no space left on the disk holding {sidecar.parent}; {sidecar.name} was left as it was")
    return SidecarProblem(f"cannot write {sidecar}: {exc.strerror or exc}")


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; a file system that cannot fsync a folder is left to its own order."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
