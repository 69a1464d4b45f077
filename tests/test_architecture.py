"""The shape of the code, checked like behaviour (docs/ARCHITECTURE.md): packages in
layers, the core headless, drivers going through the core API, and no import circle.

The import-linter contracts in pyproject.toml run here too, so a contract broken by a new
import fails the build even where `lint-imports` is not run by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "localq"
DRIVERS = ("cli", "tui", "bench")  # everything else in localq/ is the core
STORE_OWNERS = {"localq/collection/collection.py", "localq/loop/trainer.py", "localq/storage/store.py"}


def _core_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts
        if parts[1] in DRIVERS or parts[-1] == "__main__":
            continue
        names.append(".".join(p for p in parts if p != "__init__"))
    return names


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold():
    # lint-imports exits 1 and names the offending chain when a contract is broken.
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.exists(), "import-linter is part of the test extra: pip install -e '.[test]'"
    out = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in out.stdout


def test_every_module_is_in_a_layer_or_is_a_shared_leaf():
    # The layers contract names packages; a module added at localq's root must be a leaf
    # (the contract that forbids leaves to import packages lists it) or belong in a package.
    contracts = _contracts()
    layers = [c for c in contracts if c["type"] == "layers"][0]["layers"]
    packages = {name.strip() for layer in layers for name in layer.split("|")}
    leaves = set([c for c in contracts if c["name"].startswith("The shared leaves")][0]["source_modules"])
    on_disk = {"localq." + p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    on_disk |= {"localq." + p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert on_disk == packages | leaves, f"in no layer: {sorted(on_disk - packages - leaves)}"


def test_importing_any_core_module_loads_no_ui_toolkit():
    # In a fresh interpreter, as harlequin checks its core: what an import really pulls in,
    # lazy imports aside (they run only when a driver calls them).
    code = (
        "import importlib, json, sys\n"
        f"mods = {_core_modules()!r}\n"
        "bad = {}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "    loaded = [x for x in ('textual', 'click', 'localq.cli', 'localq.tui', 'localq.bench') if x in sys.modules]\n"
        "    if loaded: bad[m] = loaded; break\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {}


def test_the_import_graph_has_no_circles():
    import grimp  # installed with import-linter (the test extra)

    graph = grimp.build_graph("localq")  # imports made only for type checking count too
    modules = sorted(graph.modules)
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d.startswith("localq")} for m in modules}
    # A package's __init__ re-exporting its own submodules is not a circle of design.
    edges = {m: {d for d in ds if not m.startswith(d + ".") and not d.startswith(m + ".")} for m, ds in edges.items()}
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d) :] + [d])
                return True
            if d not in state and visit(d, stack + [d]):
                return True
        state[m] = 2
        return False

    for m in modules:
        if m not in state and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)


def test_only_the_core_api_touches_the_store():
    pattern = re.compile(r"\.store\b(?!\w)")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in STORE_OWNERS:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and "localq.storage.store" not in code:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
