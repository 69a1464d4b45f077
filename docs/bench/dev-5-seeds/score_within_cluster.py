"""Scores the within-cluster study under RULE-within-cluster.md from runs.json: python score_within_cluster.py [VARIANT ...]."""
import json, sys, statistics as st
from pathlib import Path
HERE = Path(__file__).parent
RUNS = json.loads((HERE / "runs.json").read_text()) if (HERE / "runs.json").exists() else {}
TMP = Path("/tmp/lq8first/runs")
BAL = ["cifar10-own", "cifar10-other", "imagenette-own", "imagenette-other"]
LT = ["cifar10-lt-own", "cifar10-lt-other", "imagenette-lt-own", "imagenette-lt-other"]
SC = BAL + LT
B = [10, 20, 50, 100]
def load(name):
    if name in RUNS:
        r = RUNS[name]; return {"summary": r["summary"], "robustness": {"methods": r["robustness"]}}
    p = TMP / name / "results.json"
    return json.loads(p.read_text()) if p.exists() else None
def curve(d, method):
    rows = d["summary"] if isinstance(d["summary"], list) else d["summary"]["rows"]
    return {s["labels"]: s["ap_mean"] for s in rows if s["method"] == method}
def fp(d, method="localq-auto"):
    return d["robustness"]["methods"][method]["median_labels_to_first_positive"]
def nopos(d, method="localq-auto"):
    return d["robustness"]["methods"][method]["runs_without_positive"]
variants = sys.argv[1:] or ["base", "w1", "w2"]
res = {}
for v in variants:
    row = {}
    for sc in SC:
        d = load(f"{sc}-{v}")
        if d is None: break
        c = curve(d, "localq-auto"); z = curve(d, "zero-shot")[0]
        row[sc] = dict(ap=[c[b] for b in B], m=st.mean(c[b] for b in B), fp=fp(d), zs=z, nopos=nopos(d))
    if len(row) == len(SC):
        res[v] = row
    else:
        print(f"{v}: incomplete ({len(row)} of {len(SC)} scenarios)")
rand = {sc: curve(load(f"{sc}-random"), "random") for sc in SC if load(f"{sc}-random")}
base = res.get("base")
def S(row, scs): return st.mean(row[sc]["m"] for sc in scs)
for v, row in res.items():
    print(f"{v:6s} S4={S(row, BAL):.4f} S8={S(row, SC):.4f}")
    for sc in SC:
        r = row[sc]
        print(f"   {sc:20s} {' / '.join('%.3f' % a for a in r['ap'])} (fp {r['fp']:g}, {r['nopos']} runs without a positive)")
    if base and v != "base":
        why = []
        for sc in SC:
            r, b0 = row[sc], base[sc]
            if r["fp"] > b0["fp"]: why.append(f"(1) {sc} fp {r['fp']}>{b0['fp']}")
            dm = r["m"] - b0["m"]
            if "other" in sc and dm < -0.01: why.append(f"(2) {sc} dm {dm:+.4f}")
            if dm < -0.02: why.append(f"(3) {sc} dm {dm:+.4f}")
            if "own" in sc:
                for i, bb in enumerate(B):
                    if b0["ap"][i] >= b0["zs"] - 0.002 and r["ap"][i] < r["zs"] - 0.002: why.append(f"(F1) {sc}@{bb}")
            if r["ap"][0] < b0["ap"][0] - 0.005: why.append(f"(F2) {sc} {r['ap'][0]-b0['ap'][0]:+.4f}")
            if "other" in sc and sc in rand:
                for i, bb in enumerate(B[:2]):
                    mv = r["ap"][i] - rand[sc][bb]; mb = b0["ap"][i] - rand[sc][bb]
                    if mv < mb - 0.01: why.append(f"(M) {sc}@{bb} {mv:+.4f} vs {mb:+.4f}")
        d4 = S(row, BAL) - S(base, BAL)
        if d4 < -0.002: why.append(f"(S4) {d4:+.4f}")
        d = load(f"cifar10-coarse-{v}")
        if d:
            c = curve(d, "localq-auto"); a = curve(load("cifar10-coarse-base"), "article")
            if any(c[b] < a[b] for b in B): why.append("(F3) coarse below article")
        else:
            why.append("(F3) coarse not run")
        print(f"   dS4={d4:+.4f} dS8={S(row, SC)-S(base, SC):+.4f} per-scen dm: "
              + " ".join(f"{row[sc]['m']-base[sc]['m']:+.4f}" for sc in SC), "ELIGIBLE" if not why else "NOT: " + "; ".join(why))
for sc in SC:
    if sc in rand and base:
        print("random", sc, " / ".join("%.3f" % rand[sc][b] for b in B), " base-random:",
              " / ".join("%+.3f" % (base[sc]["ap"][i] - rand[sc][b]) for i, b in enumerate(B)))
for v in variants:
    d = load(f"cifar10-coarse-{v}")
    if d:
        c = curve(d, "localq-auto"); a = curve(load("cifar10-coarse-base"), "article")
        print("coarse", v, " / ".join("%.3f" % c[b] for b in B), " minus article:", " / ".join("%+.3f" % (c[b] - a[b]) for b in B), "fp", fp(d))
