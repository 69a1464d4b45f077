"""How long a user waits: whole `localq` processes, this checkout beside a baseline one.

    python scripts/bench_startup.py --baseline /tmp/localq-base [--runs 3] [--collection DIR]

Each figure is the median wall time of --runs fresh processes (spawn to exit, or to the
first batch of the labeling UI on screen):
- `localq --help`;
- `localq search TEXT` with a prompt never seen before, and with a repeated one
  (the second hits the prompt-vector cache);
- `localq train PROMPT` on an indexed collection, to the first batch on screen;
- `localq demo FOLDER` on a fresh collection (Imagenette, indexed in the background),
  to the first batch on screen. The baseline indexes all 13,394 images first (the issue
  measured 313 s), so it is not rerun unless --baseline-demo is given.

The UI runs in a pseudo-terminal of 160x48; a small wrapper (the same for both
checkouts) patches TrainApp.show_batch to note the time once the first batch is
rendered, then quits the app the normal way. A baseline is a plain copy of an older
commit, e.g. `git archive 53d452e | tar -x -C /tmp/localq-base`. The user cache
(class-name table, head matrix, prompt vectors) is warm, as on a machine that ran
localq before; the machine is shared and noisy, so compare columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COLLECTION = ROOT / "data" / "collections" / "imagenette"
TARGETS = {"help": 0.3, "search-new": 2.0, "search-cached": 1.0, "train": 3.0, "demo": 30.0}

# Runs `localq ARGS...` from the checkout on PYTHONPATH; marks the first rendered batch.
WRAPPER = r"""
import os, sys, time
import localq.tui.app as app
original = app.TrainApp.show_batch
async def show_batch(self, batch):
    await original(self, batch)
    if not getattr(self, "_bench_marked", False):
        self._bench_marked = True
        def mark():
            with open(os.environ["BENCH_MARK_FILE"], "w") as fh:
                fh.write(repr(time.time()))
            self.quit_and_save()
        self.call_after_refresh(mark)
app.TrainApp.show_batch = show_batch
from localq.cli import main
sys.argv = ["localq", *sys.argv[1:]]
main()
"""


def env_for(checkout: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout)
    env.pop("LOCALQ_HOME", None)
    return env


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def time_to_first_batch(args: list[str], env: dict, cwd: Path, timeout: float) -> float:
    """Seconds from spawning `localq ARGS` in a 160x48 pty to its first batch on screen."""
    mark = Path(tempfile.mkdtemp(prefix="localq-bench-mark-")) / "t"
    env = {
        **env,
        "BENCH_MARK_FILE": str(mark),
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "COLUMNS": "160",
        "LINES": "48",
    }
    master, slave = pty.openpty()
    import fcntl

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    start_wall = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *args],
        env=env,
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        start_new_session=True,
    )
    os.close(slave)

    def drain():  # the app blocks once the pty buffer is full if nobody reads it
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SystemExit(f"localq {' '.join(args)}: no first batch within {timeout:.0f} s") from None
    finally:
        os.close(master)
    if not mark.exists():
        raise SystemExit(f"localq {' '.join(args)} exited ({proc.returncode}) without showing a batch")
    seconds = float(mark.read_text()) - start_wall
    shutil.rmtree(mark.parent, ignore_errors=True)
    return seconds


def measure(checkout: Path, name: str, runs: int, collection: Path, work: Path, demo_data: Path) -> list[float]:
    env = env_for(checkout)
    # Run from inside the checkout: `python -m` and `-c` put the working directory first
    # on sys.path, so from anywhere else the other checkout's localq would be imported.
    cwd = checkout
    py = [sys.executable, "-m", "localq"]
    out = []
    for i in range(runs):
        if name == "help":
            out.append(timed(py + ["--help"], env, cwd))
        elif name == "search-new":
            out.append(
                timed(
                    py + ["search", f"a photo of a golf ball {uuid.uuid4().hex[:8]}", "--db", str(collection)], env, cwd
                )
            )
        elif name == "search-cached":
            timed(py + ["search", "a photo of a church", "--db", str(collection)], env, cwd)  # fills the cache
            out.append(timed(py + ["search", "a photo of a church", "--db", str(collection)], env, cwd))
        elif name == "train":
            db = work / f"train-{checkout.name}-{i}"
            shutil.copytree(collection, db)  # the UI writes a classifier and a round: never into the original
            try:
                out.append(time_to_first_batch(["train", "a photo of a dog", "--db", str(db)], env, cwd, 120))
            finally:
                shutil.rmtree(db, ignore_errors=True)
        elif name == "demo":
            db = work / f"demo-{checkout.name}-{i}"
            try:
                out.append(time_to_first_batch(["demo", str(demo_data), "--db", str(db)], env, cwd, 600))
            finally:
                shutil.rmtree(db, ignore_errors=True)
        print(f"  {checkout.name} {name} run {i + 1}: {out[-1]:.2f} s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of an older commit to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--collection",
        type=Path,
        default=DEFAULT_COLLECTION,
        help="an indexed collection (copied before `train` writes to it)",
    )
    parser.add_argument("--only", nargs="*", choices=list(TARGETS))
    parser.add_argument(
        "--demo-data",
        type=Path,
        default=ROOT / ".." / "shared" / "datasets" / "imagenette",
        help="the folder `localq demo FOLDER` indexes (default: Imagenette, 13,394 images)",
    )
    parser.add_argument("--baseline-demo", action="store_true", help="also run the baseline demo (minutes)")
    parser.add_argument("--json", type=Path, help="write the raw seconds here")
    args = parser.parse_args()
    if not (args.collection / "localq.db").exists():
        raise SystemExit(f"no indexed collection at {args.collection}: pass --collection DIR")
    names = args.only or list(TARGETS)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="localq-bench-startup-") as tmp:
        for name in names:
            results[name] = {}
            for label, checkout in (("baseline", args.baseline), ("this", ROOT)):
                if checkout is None or (label == "baseline" and name == "demo" and not args.baseline_demo):
                    continue
                results[name][label] = measure(
                    checkout.resolve(), name, args.runs, args.collection.resolve(), Path(tmp), args.demo_data.resolve()
                )

    print(
        f"\nmedians of {args.runs} whole processes, seconds (load average at end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n"
    )
    print("| command | baseline | this checkout | speed-up | target | |")
    print("|---|---:|---:|---:|---:|---|")
    labels = {
        "help": "`localq --help`",
        "search-new": "`localq search TEXT`, new prompt",
        "search-cached": "`localq search TEXT`, repeated prompt",
        "train": "`localq train` to first batch",
        "demo": "`localq demo` (fresh collection) to first batch",
    }
    for name in names:
        base = results[name].get("baseline")
        this = statistics.median(results[name]["this"])
        base_s = f"{statistics.median(base):.2f}" if base else ("313 (issue 11)" if name == "demo" else "-")
        base_v = statistics.median(base) if base else (313.0 if name == "demo" else None)
        speed = f"{base_v / this:.1f}x" if base_v else "-"
        ok = "PASS" if this <= TARGETS[name] else "MISS"
        print(f"| {labels[name]} | {base_s} | {this:.2f} | {speed} | <= {TARGETS[name]:g} | {ok} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"runs": args.runs, "load_average": os.getloadavg(), "seconds": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
