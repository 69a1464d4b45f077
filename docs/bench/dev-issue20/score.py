"""Scores of the issue-20 dev study from the runs in runs/ (see RULE.md).

    python docs/bench/dev-issue20/score.py > docs/bench/dev-issue20/score.txt

Each candidate's score is the mean over S1 and S2 of localq-auto's class-mean AP at 10,
20, 50 and 100 labels (mean over the seeds)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

RUNS = Path(__file__).resolve().parent / "runs"
BUDGETS = (10, 20, 50, 100)


def curves(path: Path) -> dict[str, dict[int, float]]:
    """{method: {labels: class-mean AP, mean over seeds}} and repeats per 100 under '<method>/repeats'."""
    rows = json.loads((path / "results.json").read_text())["rows"]
    cells: dict[tuple, list] = defaultdict(list)
    for r in rows:
        cells[(r["method"], r["seed"], r["labels"])].append(r)
    out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for (method, _seed, labels), rs in cells.items():
        out[method][labels].append(np.mean([r["ap"] for r in rs]))
        out[f"{method}/repeats"][labels].append(np.mean([100 * r.get("repeats", 0) / labels if labels else 0 for r in rs]))
    return {m: {b: float(np.mean(v)) for b, v in by.items()} for m, by in out.items()}


def main() -> None:
    runs = {p.name: curves(p) for p in sorted(RUNS.iterdir()) if (p / "results.json").exists()}
    for scenario in ("s1", "s2"):
        base = runs[f"{scenario}-base"]
        print(f"## {scenario}: baselines (AP at {', '.join(map(str, BUDGETS))} labels; zero-shot {base['zero-shot'][0]:.3f})")
        for m in ("article", "localq-top", "random"):
            print(f"  {m:12s} " + " ".join(f"{base[m][b]:.3f}" for b in BUDGETS))
        bar = {b: max(base["article"][b], base["localq-top"][b]) - 0.01 for b in BUDGETS}
        print("  bar (max(article, localq-top) - 0.01) " + " ".join(f"{bar[b]:.3f}" for b in BUDGETS))
    print()
    print("candidate | S1 AP 10/20/50/100 | S2 AP 10/20/50/100 | S2 repeats per 100 at 100 | score")
    scored = []
    for name in sorted({n.split("-", 1)[1] for n in runs if n.startswith("s1-cand-")}):
        s1, s2 = runs.get(f"s1-{name}"), runs.get(f"s2-{name}")
        if s1 is None or s2 is None:
            print(f"{name} | (run on one scenario only)")
            continue
        a1, a2 = s1["localq-auto"], s2["localq-auto"]
        score = (np.mean([a1[b] for b in BUDGETS]) + np.mean([a2[b] for b in BUDGETS])) / 2
        if not name.startswith("cand-first"):  # the first-fit follow-up has its own rule, below
            scored.append((score, name))
        print(f"{name} | " + " ".join(f"{a1[b]:.3f}" for b in BUDGETS) + " | "
              + " ".join(f"{a2[b]:.3f}" for b in BUDGETS) + f" | {s2['localq-auto/repeats'][100]:.1f} | {score:.4f}")
    print()
    print("best:", max(scored)[1])
    follow_up(runs)


ADOPTED = "cand-p10-t05-nc075"  # the default the first-fit follow-up is guarded against


def follow_up(runs: dict) -> None:
    """The first-fit follow-up's rule (RULE.md): 10 labels against the fixed bars, 20/50/100
    against the adopted default's runs (at most 0.005 lower), G1 against random (at most 0.02)."""
    print()
    print("## first-fit follow-up: (a) 10 labels >= bar; (b) 20/50/100 minus " + ADOPTED + " >= -0.005")
    for name in sorted({n.split("-", 1)[1] for n in runs if n.startswith("s1-cand-first")}):
        for scenario in ("s1", "s2"):
            run = runs.get(f"{scenario}-{name}")
            if run is None:
                print(f"{scenario}-{name}: not run")
                continue
            base, ref, auto = runs[f"{scenario}-base"], runs[f"{scenario}-{ADOPTED}"]["localq-auto"], run["localq-auto"]
            bar = max(base["article"][10], base["localq-top"][10]) - 0.01
            deltas = {b: auto[b] - ref[b] for b in BUDGETS[1:]}
            ok = auto[10] >= bar and all(d >= -0.005 for d in deltas.values())
            top = run.get("localq-top", {})
            print(f"{scenario}-{name}: auto " + " ".join(f"{auto[b]:.3f}" for b in BUDGETS)
                  + (" | its localq-top " + " ".join(f"{top[b]:.3f}" for b in BUDGETS) if top else "")
                  + f" | (a) {auto[10]:.3f} vs bar {bar:.3f} | (b) " + " ".join(f"{d:+.3f}" for d in deltas.values())
                  + (" | passes" if ok else " | FAILS"))
        g1 = runs.get(f"g1-{name}")
        if g1 is not None:
            gap = {b: g1["localq-auto"][b] - g1["random"][b] for b in BUDGETS}
            print(f"g1-{name}: auto " + " ".join(f"{g1['localq-auto'][b]:.3f}" for b in BUDGETS) + " | random "
                  + " ".join(f"{g1['random'][b]:.3f}" for b in BUDGETS) + " | (c) "
                  + ("passes" if min(gap.values()) >= -0.02 else "FAILS"))


if __name__ == "__main__":
    main()
