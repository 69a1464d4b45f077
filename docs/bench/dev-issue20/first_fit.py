"""Screening of first fits for issue 20 (see RULE.md, "Follow-up: the first fit").

Built-in `lite0` encoder (the collections' own), never CLIP. It patches the module layout
of commit 9fcde4f (the study's base, before localq's modules moved into packages): run it
in a checkout of that commit.

    python docs/bench/dev-issue20/first_fit.py capture s1 OUT/ff-s1.npz
    python docs/bench/dev-issue20/first_fit.py capture s2 OUT/ff-s2.npz
    python docs/bench/dev-issue20/first_fit.py screen OUT/ff-s1.npz OUT/ff-s2.npz > first_fit.txt

``capture`` runs the benchmark itself (``localq.bench.runner.run_benchmark``, one round of
10 labels, methods ``localq-auto`` and ``article``, seeds 0-1, S1 with ``--tune``) and
records what each first fit was given: the labeled rows and scores, the start weights and
bias, the prompt, the background rows, and the target evaluated after it. Nothing is
re-implemented, so the batch, the background sample and the evaluation split are exactly
the bench's. The bench's own 10-label AP is kept beside, to check the replay.

``screen`` replays each recorded first fit with every variant below and prints the class-mean
AP (mean over the seeds) at 10 labels. A variant is a function of one record that returns
``(w, b)``; only the direction of ``w`` matters to AP.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np

S1_CLASSES = ("n01443537,n01742172,n01784675,n01944390,n02002724,n02094433,n02123045,n02132136,n02231487,"
              "n02281406,n02410509,n02480855,n02666196,n02788148,n02808440,n02837789,n02906734,n02950826,"
              "n03014705,n03100240,n03250847,n03400231,n03544143,n03649909,n03763968,n03837869,n03930313,"
              "n03980874,n04067472,n04133789,n04254777,n04311004,n04376876,n04465501,n04532106,n04596742,"
              "n07614500,n07720875,n07768694,n09193705,n10148035").split(",")
SCENARIOS = {
    "s1": dict(db="/work/data/collections/tin", classes=S1_CLASSES, tune=True),
    "s2": dict(db="/work/data/collections/tin-bursts-dev", classes=(), tune=False),
}


# -- capture ---------------------------------------------------------------------------------
def capture(scenario: str, out: str) -> None:
    import localq.bench.runner as runner
    import localq.trainer as trainer
    from localq.bench.runner import BenchConfig, run_benchmark
    from localq.collection import Collection

    spec = SCENARIOS[scenario]
    records: list[dict] = []
    gathered: list[np.ndarray] = []
    orig_gather, orig_fit, orig_article, orig_eval = (trainer.gather_rows, trainer.fit_linear,
                                                      trainer.fit_article_baseline, runner._evaluate)

    def gather(matrix, ids):  # the trainer's row reads: the labeled rows, then the background's
        gathered.append(np.asarray(ids, np.int64).copy())
        return orig_gather(matrix, ids)

    def fit(x, y, w0, b0, **kw):
        bg = gathered[-1] if kw.get("background") is not None else np.zeros(0, np.int64)
        records.append(dict(kind="localq", ids=gathered[-2], y=np.asarray(y, np.float32), w0=np.asarray(w0, np.float32),
                            b0=float(b0), prior=np.asarray(kw["prior"], np.float32), bg=bg,
                            kw={k: v for k, v in kw.items() if k not in ("prior", "background")}))
        return orig_fit(x, y, w0, b0, **kw)

    def article(x, y, w0, b0, **kw):
        # the article's rows are read by index.matrix()[ids]: found again from their vectors below
        records.append(dict(kind="article", x=np.asarray(x, np.float32), y=np.asarray(y, np.float32),
                            w0=np.asarray(w0, np.float32), b0=float(b0)))
        return orig_article(x, y, w0, b0, **kw)

    eval_ids: dict = {}

    def evaluate(w, b, vectors, relevant):
        if records and "relevant" not in records[-1]:
            records[-1]["relevant"] = np.flatnonzero(relevant)
        eval_ids.setdefault("n", len(relevant))
        return orig_eval(w, b, vectors, relevant)

    trainer.gather_rows, trainer.fit_linear, trainer.fit_article_baseline, runner._evaluate = (
        gather, fit, article, evaluate)
    coll = Collection.open(spec["db"])
    with coll:
        config = BenchConfig(rounds=1, k=10, seeds=(0, 1), methods=("article", "localq-auto"),
                             classes=tuple(spec["classes"]), tune=spec["tune"])
        result = run_benchmark(coll, config, dataset=scenario)
        # The evaluation rows, in the bench's order (the same code path as run_benchmark).
        rows_all = coll.folder_label_rows()
        pool = [(i, lab) for i, lab, s in rows_all if s == result.pool_split]
        if spec["tune"]:
            from localq.devsplit import dev_mask

            dev = dev_mask(coll, result.pool_split)
            evaluation = [i for i, _ in pool if dev[i]]
        else:
            evaluation = [i for i, _, s in rows_all if s == result.eval_split]
        matrix = np.asarray(coll.index.matrix())
    bench_ap = {(r.method, r.target, r.seed): r.ap for r in result.rows if r.labels == 10}
    # one record per (target, method, seed), in the bench's loop order
    keys = [(t, m, s) for t in result.classes for m in ("article", "localq-auto") for s in (0, 1)]
    assert len(keys) == len(records), (len(keys), len(records))
    flat = {"eval_ids": np.asarray(evaluation, np.int64), "n": len(records)}
    row_id = {}
    for j, ((target, method, seed), rec) in enumerate(zip(keys, records)):
        if rec["kind"] == "article":
            if not row_id:
                row_id = {row.tobytes(): i for i, row in enumerate(matrix)}
            rec["ids"] = np.array([row_id[row.tobytes()] for row in rec["x"]])
            rec["bg"] = np.zeros(0, np.int64)
            rec["prior"] = rec["w0"]
        flat[f"{j}/meta"] = np.array([target, method, str(seed), repr(rec.get("kw", {}))])
        for name in ("ids", "y", "w0", "prior", "bg", "relevant"):
            flat[f"{j}/{name}"] = rec[name]
        flat[f"{j}/b0"] = np.float64(rec["b0"])
        flat[f"{j}/bench_ap"] = np.float64(bench_ap[(method, target, seed)])
    flat["db"] = np.array(spec["db"])
    np.savez_compressed(out, **flat)
    print(f"{scenario}: {len(records)} first fits recorded in {out}")


# -- replay ----------------------------------------------------------------------------------
class Record:
    def __init__(self, data, j: int, matrix: np.ndarray, eval_vectors: np.ndarray):
        self.target, self.method, seed, kw = data[f"{j}/meta"]
        self.seed, self.kw = int(seed), eval(kw)
        ids, bg = data[f"{j}/ids"], data[f"{j}/bg"]
        self.x = np.asarray(matrix[ids], np.float32)
        self.bg = np.asarray(matrix[np.sort(bg)], np.float32) if len(bg) else None
        self.y, self.w0, self.prior = data[f"{j}/y"], data[f"{j}/w0"], data[f"{j}/prior"]
        self.b0 = float(data[f"{j}/b0"])
        self.bench_ap = float(data[f"{j}/bench_ap"])
        self.relevant = np.zeros(len(eval_vectors), bool)
        self.relevant[data[f"{j}/relevant"]] = True
        self.eval_vectors = eval_vectors

    def ap(self, w, b=0.0) -> float:
        from localq.metrics import average_precision

        return average_precision(self.eval_vectors @ np.asarray(w, np.float32) + np.float32(b), self.relevant)


def load(path: str) -> list[Record]:
    data = np.load(path)
    matrix = np.load(str(data["db"]) + "/vectors.npy", mmap_mode="r")
    eval_vectors = np.asarray(matrix[data["eval_ids"]], np.float32)
    return [Record(data, j, matrix, eval_vectors) for j in range(int(data["n"]))]


def class_mean(records: list[Record], values: list[float]) -> float:
    """Mean over classes of the mean over seeds (the bench's cell), i.e. the mean over records."""
    by_seed = defaultdict(list)
    for r, v in zip(records, values):
        by_seed[r.seed].append(v)
    return float(np.mean([np.mean(v) for v in by_seed.values()]))


# -- variants --------------------------------------------------------------------------------
def problem(r: Record, *, prior_strength=None, background_weight=None, ridge=None):
    """fit_linear's objective for one record, exactly as it builds it: centred rows, targets,
    per-row weights, prior mean and L2. Returns (rows, targets, weights, mean_w, l2, centre)."""
    from localq import fit as F

    kw = dict(r.kw)
    strength = kw["prior_strength"] if prior_strength is None else prior_strength
    share = kw["background_weight"] if background_weight is None else background_weight
    ridge = kw["ridge"] if ridge is None else ridge
    weights = F._sample_weights(r.y, r.bg, r.w0, r.b0, share, True)
    rows = np.concatenate([r.x, r.bg])
    targets = np.concatenate([(r.y + 1) / 2, np.zeros(len(r.bg), np.float32)])
    centre = r.bg.mean(axis=0)
    strength = F.agreed_strength(strength, F.prompt_agreement(r.prior, r.x, r.y))
    mean_w = F.prior_mean(r.prior, r.bg, r.x, strength)
    if mean_w is None:
        mean_w = np.zeros(r.x.shape[1], np.float32)
    l2 = ridge * F.REF_LABELS / max(len(r.y), 1)
    return (rows - centre).astype(np.float64), targets.astype(np.float64), weights.astype(np.float64), \
        mean_w.astype(np.float64), l2, centre


def _loss_grad(p, xc, t, wt, m, l2):
    w, b = p[:-1], p[-1]
    z = xc @ w + b
    loss = float(np.sum(wt * (np.logaddexp(0, z) - t * z)) + l2 * np.sum((w - m) ** 2))
    res = (0.5 * (1 + np.tanh(0.5 * z)) - t) * wt
    return loss, np.concatenate([xc.T @ res + 2 * l2 * (w - m), [res.sum()]])


def lbfgs(r: Record, start: str = "w0", **obj) -> tuple[np.ndarray, float]:
    """The same objective minimised to convergence."""
    from scipy.optimize import minimize

    xc, t, wt, m, l2, c = problem(r, **obj)
    w_start = r.w0.astype(np.float64) if start == "w0" else m
    b_start = r.b0 + float(r.w0 @ c)
    res = minimize(_loss_grad, np.concatenate([w_start, [b_start]]), args=(xc, t, wt, m, l2), jac=True,
                   method="L-BFGS-B", options=dict(maxiter=2000, gtol=1e-9, ftol=1e-14))
    w = res.x[:-1]
    return w.astype(np.float32), float(res.x[-1] - w @ c)


def default(r: Record, **kw):
    from localq.fit import fit_linear

    return fit_linear(r.x, r.y, r.w0, r.b0, prior=r.prior, background=r.bg, **{**r.kw, **kw})


def from_prior_mean(r: Record, **kw):
    """fit_linear started at the prior mean (the prompt on the prior's scale) instead of the unit prompt."""
    from localq.fit import fit_linear, prior_mean

    m = prior_mean(r.prior, r.bg, r.x, 1.0)
    scale = float(np.linalg.norm(m))
    return fit_linear(r.x, r.y, m, r.b0 * scale, prior=r.prior, background=r.bg, **{**r.kw, **kw})


def zero_shot(r: Record):
    return r.prior, 0.0


def article(r: Record):
    from localq.fit import fit_article_baseline

    return fit_article_baseline(r.x, r.y, r.w0, r.b0)


def _unit(v):
    return v / np.linalg.norm(v)


def no_background(r: Record):
    from localq.fit import fit_linear

    return fit_linear(r.x, r.y, r.w0, r.b0, prior=r.prior, background=None, **r.kw)


def adam_typicality(r: Record, keep_c: bool = False, decorrelate: bool = False, **kw):
    """fit_linear's loop (Adam, 100 steps at 0.1) with: the update kept off the background
    mean's direction c (``keep_c``: w.c stays the prior mean's), or the prior mean made
    uncorrelated with c.x over the background (``decorrelate``)."""
    import torch

    from localq import fit as F

    xc, t, wt, m, l2, c = problem(r, **kw)
    ch = _unit(c)
    if decorrelate:
        sq, sc = r.bg @ m, r.bg @ ch
        m = m - np.cov(sq, sc)[0, 1] / np.var(sc) * ch
    xt, tt = torch.from_numpy(xc.astype(np.float32)), torch.from_numpy(t.astype(np.float32))
    wtt, mt, cht = (torch.from_numpy(a.astype(np.float32)) for a in (wt, m, ch))
    layer = F._linear(r.w0, r.b0 + float(r.w0 @ c))
    weight, bias = layer.weight, layer.bias
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    keep = float(ch @ m)
    with torch.no_grad():
        for _ in range(100):
            w = weight.view(-1)
            res = (torch.sigmoid(xt @ w + bias) - tt) * wtt
            weight.grad = (xt.T @ res + 2 * l2 * (w - mt)).view(1, -1)
            bias.grad = res.sum().view(1)
            opt.step()
            if keep_c:
                w = weight.view(-1)
                w -= cht * (cht @ w - keep)
    w = layer.weight.detach().reshape(-1).numpy().copy()
    return w, float(layer.bias.item()) - float(w @ c)


def gradient_step(r: Record, a: float, part: str = "all"):
    """The unit prompt plus ``a`` times minus the objective's gradient at the prior mean (bias
    solved there): pos, neg and bg are its labeled-positive, labeled-negative and background parts."""
    from scipy.optimize import brentq

    xc, t, wt, m, l2, c = problem(r)
    z0 = xc @ m
    b = brentq(lambda b: np.sum(wt * (0.5 * (1 + np.tanh(0.5 * (z0 + b))) - t)), -50, 50)
    res = (0.5 * (1 + np.tanh(0.5 * (z0 + b))) - t) * wt
    n = len(r.y)
    g = {"pos": xc[:n][r.y > 0].T @ res[:n][r.y > 0], "neg": xc[:n][r.y < 0].T @ res[:n][r.y < 0],
         "bg": xc[n:].T @ res[n:]}
    g["pos+neg"], g["all"] = g["pos"] + g["neg"], g["pos"] + g["neg"] + g["bg"]
    return _unit(r.prior) - a * g[part], 0.0


def gd_from_prior(r: Record, lr: float, iters: int):
    """Plain gradient descent on fit_linear's objective from the prior mean (bias solved there)."""
    from scipy.optimize import brentq

    xc, t, wt, m, l2, c = problem(r)
    w = m.copy()
    z0 = xc @ w
    b = brentq(lambda b: np.sum(wt * (0.5 * (1 + np.tanh(0.5 * (z0 + b))) - t)), -50, 50)
    for _ in range(iters):
        res = (0.5 * (1 + np.tanh(0.5 * (xc @ w + b))) - t) * wt
        w, b = w - lr * (xc.T @ res + 2 * l2 * (w - m)), b - lr * res.sum()
    return w.astype(np.float32), float(b - w @ c)


def rocchio(r: Record, a: float, b: float = 0.0, centred: bool = True, neg: float = 0.0):
    """unit prompt + a (mean of the positives [- c]) [- neg a (mean of the negatives - c)] + b c,
    c the background mean."""
    q, c, pos = _unit(r.prior), r.bg.mean(axis=0), r.x[r.y > 0]
    d = (pos.mean(axis=0) - (c if centred else 0)) if len(pos) else 0.0
    if neg and (r.y < 0).any():
        d = d - neg * (r.x[r.y < 0].mean(axis=0) - c)
    return q + a * d + b * c, 0.0


def article_parts(r: Record, part: str):
    """The article's step split along c (the background mean's direction): without it, or only it;
    or the article's fit on rows centred on c (no background either way), or scaled."""
    from localq.fit import fit_article_baseline

    ch = _unit(r.bg.mean(axis=0))
    if part.startswith("centred"):
        c = r.bg.mean(axis=0)
        w, b = fit_article_baseline(r.x - c, r.y, r.w0, r.b0 + float(r.w0 @ c))
        if part == "centred":
            return w, b - float(w @ c)
        d = w - r.w0
        return r.w0 + d - (ch @ d) * ch, 0.0
    if part == "positives":
        k = r.y > 0
        return fit_article_baseline(r.x[k], r.y[k], r.w0, r.b0) if k.any() else (r.w0, r.b0)
    w, _ = fit_article_baseline(r.x, r.y, r.w0, r.b0)
    d = w - r.w0
    if part == "no-c":
        return r.w0 + d - (ch @ d) * ch, 0.0
    if part == "only-c":
        return r.w0 + (ch @ d) * ch, 0.0
    return r.w0 + float(part) * d, 0.0


L, A = "localq-auto", "article"
R = 4.5e-4  # fit.DEFAULT_RIDGE
VARIANTS = {
    "zero-shot (the prompt)": (L, zero_shot),
    "article (its own batch)": (A, article),
    "default fit_linear": (L, default),
    # the optimiser
    "same objective, converged (L-BFGS)": (L, lbfgs),
    "Adam, 300 steps": (L, lambda r: default(r, iters=300)),
    "Adam, lr 0.01 x 1000": (L, lambda r: default(r, lr=0.01, iters=1000)),
    "Adam from the prior mean (scale 27)": (L, from_prior_mean),
    "GD from the prior mean, lr 5 x 20": (L, lambda r: gd_from_prior(r, 5, 20)),
    "GD from the prior mean, lr 10 x 100": (L, lambda r: gd_from_prior(r, 10, 100)),
    # the prior
    "converged, ridge x4": (L, lambda r: lbfgs(r, ridge=4 * R)),
    "converged, ridge x16": (L, lambda r: lbfgs(r, ridge=16 * R)),
    "Adam, ridge x100": (L, lambda r: default(r, ridge=100 * R)),
    "prior_strength 2": (L, lambda r: default(r, prior_strength=2.0)),
    "prior_strength 4": (L, lambda r: default(r, prior_strength=4.0)),
    # the background
    "background share 0": (L, lambda r: default(r, background_weight=0.0)),
    "background share 0.25": (L, lambda r: default(r, background_weight=0.25)),
    "background share 1.0": (L, lambda r: default(r, background_weight=1.0)),
    "no background": (L, no_background),
    # the background mean's direction c
    "zero-shot + 0.25 c": (L, lambda r: rocchio(r, 0.0, 0.25)),
    "zero-shot + 0.5 c": (L, lambda r: rocchio(r, 0.0, 0.5)),
    "fit, update keeps w.c": (L, lambda r: adam_typicality(r, keep_c=True)),
    "fit, prior decorrelated from c.x": (L, lambda r: adam_typicality(r, decorrelate=True)),
    # first-order and Rocchio steps
    "prompt + 2 x -gradient at the prior": (L, lambda r: gradient_step(r, 2.0)),
    "prompt + 4 x -gradient at the prior": (L, lambda r: gradient_step(r, 4.0)),
    "prompt + 2 x -gradient, labeled rows only": (L, lambda r: gradient_step(r, 2.0, "pos+neg")),
    "prompt + 2 x -gradient, background only": (L, lambda r: gradient_step(r, 2.0, "bg")),
    "Rocchio 0.25 positives (uncentred)": (L, lambda r: rocchio(r, 0.25, centred=False)),
    "Rocchio 0.5 (positives - c)": (L, lambda r: rocchio(r, 0.5)),
    "Rocchio 0.1 (positives - c)": (L, lambda r: rocchio(r, 0.1)),
    "Rocchio 0.1 (positives - c) - 0.1 (negatives - c)": (L, lambda r: rocchio(r, 0.1, neg=1.0)),
    # the article's fit, taken apart (on localq's batch)
    "article's fit on localq's batch": (L, article),
    "  its step without its c component": (L, lambda r: article_parts(r, "no-c")),
    "  only its c component": (L, lambda r: article_parts(r, "only-c")),
    "  on rows centred on c": (L, lambda r: article_parts(r, "centred")),
    "  positives only": (L, lambda r: article_parts(r, "positives")),
    "  half its step": (L, lambda r: article_parts(r, "0.5")),
    "  1.5 its step": (L, lambda r: article_parts(r, "1.5")),
}


def screen(paths: list[str], variants: dict) -> None:
    """One line per variant, printed as soon as it is measured: AP at 10 labels per scenario."""
    loaded = {path: load(path) for path in paths}
    print("variant | " + " | ".join(paths), flush=True)
    for name, (method, fn) in variants.items():
        cells = []
        for path in paths:
            rs = [r for r in loaded[path] if r.method == method]
            cells.append(class_mean(rs, [r.ap(*fn(r)) for r in rs]))
        print(f"{name} | " + " | ".join(f"{v:.4f}" for v in cells), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "screen":
        screen(sys.argv[2:], VARIANTS)
