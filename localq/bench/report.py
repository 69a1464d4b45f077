"""Benchmark reports: JSON, CSV, a markdown summary and PNG learning curves.

Aggregation: for each method, seed and round, the AP is averaged over the classes; the
report gives the mean +- sd of that class-mean over the seeds (sample sd; 0 for one seed
and for the seedless zero-shot and full-supervision rows).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from localq.bench.runner import BenchResult, Row

DEFAULT_BUDGETS = (10, 20, 50, 100)
WORSE_THAN_RANDOM = 0.05  # AP margin below random sampling that counts a class as a failure
FLAT = ("zero-shot", "full")  # methods without rounds: drawn as horizontal lines
# Marker and line style per method, so that curves lying on top of each other stay visible.
_STYLES = {"article": ("s", "--"), "random": ("x", "-."), "localq-boundary": ("^", "-"), "localq-diverse": ("v", ":")}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarize(result: BenchResult) -> list[dict]:
    """One entry per (method, round): class-mean metrics, mean and sd over seeds."""
    per_seed: dict[tuple, list[Row]] = defaultdict(list)
    for row in result.rows:
        per_seed[(row.method, row.round, row.seed)].append(row)
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for (method, round_no, _seed), rows in per_seed.items():
        grouped[(method, round_no)].append(
            {
                "ap": float(np.mean([r.ap for r in rows])),
                "labels": float(np.mean([r.labels for r in rows])),
                "classes": len(rows),
                "batch_precision": _nanmean([r.batch_precision for r in rows]),
                "positives_per_label": _nanmean([r.positives_per_label for r in rows]),
                "repeats_per_100": _nanmean([100.0 * r.repeats / r.labels if r.labels else None for r in rows]),
            }
        )
    order = {m["name"]: i for i, m in enumerate(result.methods)}
    out = []
    for (method, round_no), seeds in sorted(grouped.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        ap_mean, ap_sd = _mean_sd([s["ap"] for s in seeds])
        entry = {
            "method": method,
            "round": round_no,
            "labels": int(round(np.mean([s["labels"] for s in seeds]))),
            "seeds": len(seeds),
            "classes": seeds[0]["classes"],
            "ap_mean": ap_mean,
            "ap_sd": ap_sd,
        }
        for key in ("batch_precision", "positives_per_label", "repeats_per_100"):
            vals = [s[key] for s in seeds if s[key] is not None]
            entry[f"{key}_mean"], entry[f"{key}_sd"] = _mean_sd(vals) if vals else (None, None)
        out.append(entry)
    return out


def first_positive(result: BenchResult) -> dict[str, dict[tuple[str, int], float]]:
    """Per loop method, {(class, seed): labels given when the first positive came back}.

    Counted in whole batches (the labeler sees a batch at once); a run that found none
    within its budget counts as infinity."""
    out: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    for r in sorted(result.rows, key=lambda r: r.round):
        if r.seed is None or r.round == 0:
            continue
        key = (r.target, r.seed)
        runs = out[r.method]
        if key not in runs:
            runs[key] = float("inf")
        if r.positives > 0 and runs[key] == float("inf"):
            runs[key] = float(r.labels)
    return dict(out)


def per_class(result: BenchResult, budget: int) -> dict[str, dict[str, float]]:
    """{method: {class: AP at ``budget`` labels, mean over the seeds}} (flat methods at any budget)."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in result.rows:
        if r.labels == budget or r.method in FLAT:
            cells[(r.method, r.target)].append(r.ap)
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (method, target), aps in cells.items():
        out[method][target] = float(np.mean(aps))
    return dict(out)


def robustness(result: BenchResult, budget: int) -> dict:
    """Per loop method against random at ``budget`` labels: the classes more than
    WORSE_THAN_RANDOM AP below it, and the median labels to the first positive."""
    table = per_class(result, budget)
    firsts = first_positive(result)
    out = {"budget": budget, "methods": {}}
    for m in result.methods:
        name = m["name"]
        if m["kind"] != "loop" or name not in firsts:
            continue
        median = float(np.median(list(firsts[name].values())))
        entry = {
            "median_labels_to_first_positive": median if np.isfinite(median) else None,  # None: over half never
            "runs_without_positive": int(sum(np.isinf(v) for v in firsts[name].values())),
            "runs": len(firsts[name]),
        }
        if "random" in table and name in table:
            diffs = {c: table[name][c] - table["random"][c] for c in table[name] if c in table["random"]}
            entry["minus_random"] = diffs
            entry["classes_worse_than_random"] = sorted(c for c, d in diffs.items() if d < -WORSE_THAN_RANDOM)
        out["methods"][name] = entry
    return out


def _nanmean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _at(summary: list[dict], method: str, labels: int) -> dict | None:
    """The summary entry of ``method`` at a label budget (flat methods: at any budget)."""
    for e in summary:
        if e["method"] == method and (e["labels"] == labels or method in FLAT):
            return e
    return None


def _fmt(entry: dict | None, key: str = "ap") -> str:
    if entry is None or entry.get(f"{key}_mean") is None:
        return "–"
    mean, sd = entry[f"{key}_mean"], entry[f"{key}_sd"]
    return f"{mean:.3f} ± {sd:.3f}" if entry["seeds"] > 1 else f"{mean:.3f}"


def _label(method: dict, result: BenchResult) -> str:
    if method["name"] == "full":
        return f"full supervision ({result.pool_size} labels)"
    return method["name"] + (" (default)" if method.get("default") else "")


def markdown(result: BenchResult, summary: list[dict], budgets=DEFAULT_BUDGETS, command: str | None = None) -> str:
    k = result.config["k"]
    budgets = [b for b in budgets if b % k == 0 and b <= k * result.config["rounds"]]
    seeds = result.config["seeds"]
    tune = result.protocol == "tune"
    prompt_from = result.config.get("prompt_from", "own")
    prompt = f'prompt "{result.config["prompt"]}"' + (
        " filled with **another class's name** (each class starts from the next class's prompt: a mismatched, cold start)"
        if prompt_from == "other-class"
        else ""
    )
    pool = (
        f"pool: split `{result.pool_split}` minus its dev part ({result.pool_size} images); AP measured on the "
        f"**dev** part `{result.eval_split}` ({result.eval_size} images; a tuning run, never the held-out split)"
        if tune
        else f"pool: split `{result.pool_split}` ({result.pool_size} images); AP measured on the held-out split "
        f"`{result.eval_split}` ({result.eval_size} images)"
    )
    overrides = result.config.get("settings") or {}
    lines = [
        f"### {result.dataset}"
        + (" (mismatched prompts)" if prompt_from == "other-class" else "")
        + (" — dev split" if tune else ""),
        "",
        f"Encoder `{result.model_id}` (the built-in encoder: EfficientNet-Lite0 with a MiniLM text bridge, not CLIP)"
        if result.model_id.startswith("lite0")
        else f"Encoder `{result.model_id}`",
        "",
        f"{pool}; {len(result.classes)} classes, each the target in turn, {prompt}; {k} labels a round; "
        f"seeds {', '.join(map(str, seeds))}"
        + (f"; settings {', '.join(f'{a}={b}' for a, b in overrides.items())}" if overrides else "")
        + ". Cells: AP averaged over the classes, mean ± sd over the seeds.",
        "",
    ]
    if command:
        lines += ["```", command, "```", ""]
    head = ["method", "0 labels"] + [f"{b} labels" for b in budgets]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in result.methods:
        name = m["name"]
        if name == "full":
            e = _at(summary, name, 0)
            lines.append(f"| {_label(m, result)} | " + " | ".join([_fmt(e)] * (len(budgets) + 1)) + " |")
            continue
        cells = [_fmt(_at(summary, name, 0))] + [_fmt(_at(summary, name, b)) for b in budgets]
        lines.append(f"| {_label(m, result)} | " + " | ".join(cells) + " |")
    if result.ceiling:
        lines += [
            "",
            f"Full supervision: a one-vs-rest logistic regression per class on every pool label "
            f"(L-BFGS; L2 {result.ceiling['l2']:g}, chosen on a 20% hold-out of the pool).",
        ]
    loops = [m for m in result.methods if m["kind"] == "loop"]
    if loops:
        lines += ["", "Positives found per label (fraction of the labeled images that belong to the target class):", ""]
        head = ["method"] + [f"{b} labels" for b in budgets]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in loops:
            cells = [_fmt(_at(summary, m["name"], b), "positives_per_label") for b in budgets]
            lines.append(f"| {_label(m, result)} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Labels spent on a scene already labeled (a near-copy of an image labeled before or in "
            "the same batch; scripts/burst_dataset.py names them), per 100 labels:",
            "",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in loops:
            cells = [_fmt(_at(summary, m["name"], b), "repeats_per_100") for b in budgets]
            lines.append(f"| {_label(m, result)} | " + " | ".join(cells) + " |")
    lines += _comparisons(result, summary, budgets)
    lines += _robustness(result, budgets[-1] if budgets else 0)
    lines += _per_class(result, budgets[-1] if budgets else 0)
    return "\n".join(lines) + "\n"


def _robustness(result: BenchResult, budget: int) -> list[str]:
    rob = robustness(result, budget)["methods"]
    if not rob:
        return []
    out = [
        "",
        f"Cold starts: labels given until the first positive came back (median over classes x seeds; whole "
        f"batches; ∞ = none within the budget), and the classes more than {WORSE_THAN_RANDOM} AP below random "
        f"sampling at {budget} labels (mean over the seeds):",
        "",
        "| method | median labels to first positive | runs without a positive | classes > 0.05 below random |",
        "|---|---|---|---|",
    ]
    for m in result.methods:
        e = rob.get(m["name"])
        if e is None:
            continue
        med = e["median_labels_to_first_positive"]
        med = float("inf") if med is None else med
        worse = e.get("classes_worse_than_random")
        worse_txt = (
            "–"
            if worse is None or m["name"] == "random"
            else (f"{len(worse)}" + (f" ({', '.join(result.names.get(c, c) for c in worse)})" if worse else ""))
        )
        out.append(
            f"| {_label(m, result)} | {'∞' if np.isinf(med) else f'{med:.0f}'} | "
            f"{e['runs_without_positive']} of {e['runs']} | {worse_txt} |"
        )
    return out


def _comparisons(result: BenchResult, summary: list[dict], budgets) -> list[str]:
    """localq's default against each baseline at each budget, and against the ceiling."""
    default = next((m["name"] for m in result.methods if m.get("default")), None)
    if default is None:
        return []
    baselines = [m["name"] for m in result.methods if m["name"] in ("article", "random", "zero-shot")]
    out = ["", f"{default} (default) minus each baseline, AP:", ""]
    head = ["baseline"] + [f"{b} labels" for b in budgets]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for base in baselines:
        cells = []
        for b in budgets:
            d, x = _at(summary, default, b), _at(summary, base, b)
            cells.append(f"{d['ap_mean'] - x['ap_mean']:+.3f}" if d and x else "–")
        out.append(f"| {base} | " + " | ".join(cells) + " |")
    full = _at(summary, "full", 0)
    if full and budgets:
        d = _at(summary, default, budgets[-1])
        if d:
            out += [
                "",
                f"At {budgets[-1]} labels {default} reaches {d['ap_mean'] / full['ap_mean']:.3f} of the "
                f"full-supervision AP ({d['ap_mean']:.3f} / {full['ap_mean']:.3f}).",
            ]
    return out


def _per_class(result: BenchResult, budget: int) -> list[str]:
    methods = [m["name"] for m in result.methods]
    table = per_class(result, budget)
    default = next((m["name"] for m in result.methods if m.get("default")), None)
    vs_random = default is not None and default in table and "random" in table
    prompts = {r.target: r.prompt for r in result.rows if r.prompt}
    show_prompt = result.config.get("prompt_from", "own") != "own"
    out = ["", f"Per class, AP at {budget} labels (mean over the seeds):", ""]
    head = ["class"] + (["prompt"] if show_prompt else []) + methods + ([f"{default} − random"] if vs_random else [])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for target in result.classes:
        vals = [f"{table[m][target]:.3f}" if target in table.get(m, {}) else "–" for m in methods]
        if vs_random and target in table[default] and target in table["random"]:
            vals.append(f"{table[default][target] - table['random'][target]:+.3f}")
        lead = [result.names.get(target, target)] + ([prompts.get(target, "")] if show_prompt else [])
        out.append("| " + " | ".join(lead + vals) + " |")
    return out


def plot(result: BenchResult, summary: list[dict], path: Path) -> Path:
    """AP and positives-per-label against labels given, one line per method (sd shaded)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, (ax_ap, ax_pos) = plt.subplots(1, 2, figsize=(11, 4.8))
    max_labels = result.config["k"] * result.config["rounds"]
    for m in result.methods:
        name = m["name"]
        label = _label(m, result)
        entries = [e for e in summary if e["method"] == name]
        if not entries:
            continue
        if name in FLAT:
            style = {"zero-shot": (":", "grey"), "full": ("--", "black")}[name]
            ax_ap.axhline(entries[0]["ap_mean"], linestyle=style[0], color=style[1], label=label)
            continue
        x = np.array([e["labels"] for e in entries])
        y = np.array([e["ap_mean"] for e in entries])
        sd = np.array([e["ap_sd"] for e in entries])
        marker, dash = _STYLES.get(name, ("o", "-"))
        (line,) = ax_ap.plot(
            x, y, marker=marker, markersize=4, linestyle=dash, linewidth=2.4 if m.get("default") else 1.3, label=label
        )
        ax_ap.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.15)
        pos = [
            (e["labels"], e["positives_per_label_mean"]) for e in entries if e["positives_per_label_mean"] is not None
        ]
        if pos:
            ax_pos.plot(*zip(*pos), marker=marker, markersize=4, linestyle=dash, color=line.get_color(), label=label)
    ax_ap.set(
        xlabel="labels given",
        ylabel=f"AP on {result.eval_split} (mean over classes)",
        title=f"{result.dataset}: held-out AP",
        xlim=(0, max_labels),
    )
    ax_pos.set(
        xlabel="labels given",
        ylabel="positives found per label",
        title="labeling yield",
        xlim=(0, max_labels),
        ylim=(0, 1.02),
    )
    ax_ap.grid(alpha=0.3)
    ax_pos.grid(alpha=0.3)
    handles, labels = ax_ap.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room for the legend below the panels
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(
    result: BenchResult, out_dir: Path, *, budgets=DEFAULT_BUDGETS, command: str | None = None, with_plot: bool = True
) -> dict[str, Path]:
    """results.json, rounds.csv, summary.md and curves.png under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "rounds.csv", "markdown": out_dir / "summary.md"}
    budget = max([b for b in budgets if b <= result.config["k"] * result.config["rounds"]] or [0])
    firsts = {
        m: {f"{c}/{s}": (v if np.isfinite(v) else None) for (c, s), v in runs.items()}
        for m, runs in first_positive(result).items()
    }  # None: no positive within the budget
    payload = {
        "version": 1,
        "command": command,
        **result.to_dict(),
        "summary": summary,
        "robustness": robustness(result, budget),
        "first_positive": firsts,
    }
    _atomic_write(paths["json"], json.dumps(payload, indent=1, default=str))
    tmp = paths["csv"].with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Row)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in result.rows)
    tmp.replace(paths["csv"])
    _atomic_write(paths["markdown"], markdown(result, summary, budgets, command))
    if with_plot:
        paths["png"] = plot(result, summary, out_dir / "curves.png")
    return paths


def load_result(path: str | Path) -> BenchResult:
    """A BenchResult back from its results.json, e.g. to redraw a plot without rerunning."""
    data = json.loads(Path(path).read_text())
    rows = [Row(**r) for r in data.pop("rows")]
    known = {f.name for f in fields(BenchResult)}
    return BenchResult(rows=rows, **{k: v for k, v in data.items() if k in known and k != "rows"})


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
