"""Docs that cannot drift from the code: every CLI command and option is documented, the
README's Python example runs, and ARCHITECTURE.md names only modules and functions that
exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from conftest import ColorEncoder, write_image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def _docs_text() -> str:
    return "\n".join(p.read_text() for p in [README, *sorted((ROOT / "docs").glob("*.md"))])


def _commands():
    from localq.cli import cli

    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            yield f"{prefix} {name}", command
            if isinstance(command, click.Group):
                yield from walk(command, f"{prefix} {name}")

    return list(walk(cli, "localq"))


def test_every_command_is_documented():
    docs = _docs_text()
    missing = [path for path, _ in _commands() if not re.search(re.escape(path) + r"(?![\w-])", docs)]
    assert not missing, (
        f"commands with no mention in README.md or docs/*.md: {missing} "
        "(`python scripts/cli_reference.py` rewrites docs/cli.md from --help)"
    )


def test_every_option_is_documented():
    docs = _docs_text()
    missing = []
    for path, command in _commands():
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            names = [n for n in param.opts + param.secondary_opts if n.startswith("--")]
            if names and not any(re.search(re.escape(n) + r"(?![\w-])", docs) for n in names):
                missing.append(f"{path} {names[0]}")
    assert not missing, (
        f"options with no mention in README.md or docs/*.md: {missing} "
        "(`python scripts/cli_reference.py` rewrites docs/cli.md from --help)"
    )


def test_the_readme_stays_short():
    # A README introduces and points to docs/ (issue 22): figures and formats live there.
    assert len(README.read_text().splitlines()) <= 250


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_readme_has_one_python_example_on_the_public_api():
    blocks = _python_blocks(README)
    assert len(blocks) == 1
    assert "from localq import" in blocks[0]
    assert ".store" not in blocks[0], "drivers, and the README, never touch Collection.store"


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    # The example opens data/collections/imagenette and treats folder n02102040 as the
    # target: a tiny collection of coloured squares under those names stands in for it.
    from localq.collection.collection import Collection
    from localq.ingest.indexer import index_paths

    photos = tmp_path / "photos"
    for split, n in (("train", 20), ("val", 4)):  # 5 rounds of 10 need 50 unseen
        for folder, rgb in (("n02102040", (220, 30, 30)), ("n01440764", (30, 40, 210)), ("n03028079", (30, 200, 40))):
            for i in range(n):
                write_image(photos / split / folder / f"{folder}_{i}.png", tuple(c + 3 * i for c in rgb))
    with Collection.open(tmp_path / "data" / "collections" / "imagenette", create=True) as coll:
        index_paths(coll, [photos], ColorEncoder(), with_labels=True)
    import localq.encoders

    monkeypatch.setattr(localq.encoders, "load_encoder", lambda spec, weights=None: ColorEncoder())
    monkeypatch.chdir(tmp_path)

    exec(compile(_python_blocks(README)[0], "README.md", "exec"), {})

    out = capsys.readouterr().out
    assert "Evaluation(" in out and "n02102040" in out
    assert (tmp_path / "springer.safetensors").is_file()


def test_importing_localq_is_cheap_and_exports_the_api():
    import subprocess
    import sys

    code = (
        "import sys, localq; heavy = [m for m in ('numpy', 'torch', 'faiss') if m in sys.modules]; "
        "print(heavy); from localq import Collection, Settings, Trainer; print(Trainer.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "Trainer"]


# -- ARCHITECTURE.md names only what exists --------------------------------------------


def _definitions() -> tuple[set[str], dict[str, set[str]], dict[str, list[str]], dict[str, set[str]]]:
    """(module file names, top-level names per module file, bases per class, members per class)."""
    files, top, bases, members = set(), {}, {}, {}
    for path in (ROOT / "localq").rglob("*.py"):
        rel = str(path.relative_to(ROOT / "localq"))
        files.add(rel)
        tree = ast.parse(path.read_text())
        names = top.setdefault(rel, set())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, []).extend(b.id for b in node.bases if isinstance(b, ast.Name))
                own = members.setdefault(node.name, set())
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        own.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        own.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        own.update(t.id for t in item.targets if isinstance(t, ast.Name))
                for item in ast.walk(node):  # self.x = ... in any method
                    if (
                        isinstance(item, ast.Attribute)
                        and isinstance(item.ctx, ast.Store)
                        and isinstance(item.value, ast.Name)
                        and item.value.id == "self"
                    ):
                        own.add(item.attr)
    return files, top, bases, members


def _has_member(cls: str, name: str, bases, members) -> bool:
    seen, todo = set(), [cls]
    while todo:
        c = todo.pop()
        if c in seen:
            continue
        seen.add(c)
        if name in members.get(c, ()):
            return True
        todo.extend(bases.get(c, ()))
    return False


def test_architecture_names_only_modules_that_exist():
    files, *_ = _definitions()
    text = ARCHITECTURE.read_text()
    basenames = {Path(f).name for f in files} | set(files)
    cited = {c.removeprefix("localq/") for c in re.findall(r"(?<![\w/.-])((?:[a-z_]+/)*[a-z_]+\.py)\b", text)}
    extra = {p.name for p in (ROOT / "tests").rglob("*.py")} | {p.name for p in (ROOT / "scripts").glob("*.py")}
    missing = sorted(c for c in cited if c not in basenames and Path(c).name not in extra)
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"
    packages = set(re.findall(r"\blocalq/([a-z_]+)/", text))
    assert all((ROOT / "localq" / p).is_dir() for p in packages), packages


def test_architecture_names_only_functions_that_exist():
    files, top, bases, members = _definitions()
    text = ARCHITECTURE.read_text()
    missing = []
    # Class.member wherever it is written, for classes localq defines.
    for cls, name in set(re.findall(r"\b([A-Z][A-Za-z]+)\.([a-z_][a-z0-9_]*)\b", text)):
        if cls in members and not _has_member(cls, name, bases, members):
            missing.append(f"{cls}.{name}")
    # In the interface blocks: `def f(` under `class C` belongs to C; under `# module.py` to that module.
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        module, cls = None, None
        for line in block.splitlines():
            if m := re.match(r"# ([\w/]+\.py)", line):
                module, cls = (
                    next((f for f in files if f == m.group(1) or f.endswith("/" + m.group(1))), m.group(1)),
                    None,
                )
            elif m := re.match(r"class (\w+)", line):
                cls = m.group(1)
                if cls not in members:
                    missing.append(f"class {cls}")
            elif m := re.match(r"(\s*)def (\w+)\(", line):
                name = m.group(2)
                if m.group(1) and cls:
                    if not _has_member(cls, name, bases, members):
                        missing.append(f"{cls}.{name}")
                elif name not in top.get(module, ()):
                    missing.append(f"{module}: {name}")
            for extra in re.findall(r";\s*([a-z_]+)\(", line):  # several methods on one line
                if cls and line.startswith(" ") and not _has_member(cls, extra, bases, members):
                    missing.append(f"{cls}.{extra}")
    assert not missing, f"ARCHITECTURE.md names what the code does not define: {sorted(set(missing))}"


@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")) + ["README.md"])
def test_docs_hold_no_scratch_paths_or_history(doc):
    path = README if doc == "README.md" else ROOT / "docs" / doc
    text = path.read_text()
    for phrase in ("/tmp/", "an earlier run", "before this change"):
        assert phrase not in text, f"{doc} says {phrase!r}: docs describe the code as it is, with commands to rerun"


def _module_map() -> set[str]:
    """The files ARCHITECTURE.md's module map lists, as paths under localq/."""
    text = ARCHITECTURE.read_text()
    block = text[text.index("## Module map") :]
    block = block[block.index("```") + 3 :]
    block = block[: block.index("```")]
    listed, stack = set(), []
    for line in block.splitlines():
        match = re.match(r"^( *)([a-z_]+(?:\.py|/))(?:\s|$)", line)
        if not match or match.group(2) == "localq/":
            continue
        depth = len(match.group(1)) // 2 - 1
        del stack[depth:]
        if match.group(2).endswith("/"):
            stack.append(match.group(2))
        else:
            listed.add("".join(stack) + match.group(2))
    return listed


def test_the_module_map_is_the_tree():
    listed = _module_map()
    package = ROOT / "localq"
    on_disk = {str(p.relative_to(package)) for p in package.rglob("*.py")}
    packages_init = {f for f in on_disk if f.endswith("/__init__.py")}
    assert listed <= on_disk, f"the map lists files that do not exist: {sorted(listed - on_disk)}"
    assert on_disk - packages_init <= listed, f"files missing from the map: {sorted(on_disk - packages_init - listed)}"
