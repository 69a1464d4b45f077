"""Scores the five-seed dev studies (docs/benchmark.md) from runs.json under the rules in RULE*.md: python score.py [VARIANT ...]."""
import json, sys, statistics as st
from pathlib import Path
RUNS = json.loads((Path(__file__).parent / "runs.json").read_text())
SC = ["cifar10-own", "cifar10-other", "imagenette-own", "imagenette-other"]
B = [10, 20, 50, 100]
def load(name):
    run = RUNS.get(name)
    return None if run is None else {"summary": run["summary"], "robustness": {"methods": run["robustness"]}}
def curve(d, method):
    out = {}
    for s in d["summary"] if isinstance(d["summary"], list) else d["summary"]["rows"]:
        if s["method"] == method:
            out[s["labels"]] = s["ap_mean"]
    return out
def fp(d, method="localq-auto"):
    return d["robustness"]["methods"][method]["median_labels_to_first_positive"]
def scenario_rows(variants, scenarios):
    """{variant: {scenario: auto's AP per budget, m, first positive, zero-shot, runs without a positive}}, complete variants only."""
    res = {}
    for v in variants:
        row = {}
        for sc in scenarios:
            d = load(f"{sc}-{v}")
            if d is None: break
            c = curve(d, "localq-auto"); z = curve(d, "zero-shot")[0]
            row[sc] = dict(ap=[c[b] for b in B], m=st.mean(c[b] for b in B), fp=fp(d), zs=z,
                           nopos=d["robustness"]["methods"]["localq-auto"]["runs_without_positive"])
        if len(row) == len(scenarios):
            res[v] = row
    return res
def random_curves(scenarios):
    return {sc: curve(load(f"{sc}-random"), "random") for sc in scenarios if load(f"{sc}-random")}
def violations(row, base, rand, scenarios):
    """The rules' conditions (1) (2) (3) F1 F2 M against the default, one string per violation."""
    why = []
    for sc in scenarios:
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
    return why
def print_random(rand, base, scenarios):
    for sc in scenarios:
        if sc in rand: print("random", sc, " / ".join("%.3f" % rand[sc][b] for b in B), " base-random:", " / ".join("%+.3f" % (base[sc]["ap"][i]-rand[sc][b]) for i,b in enumerate(B)) if base else "")
def coarse(v):
    """auto's AP on the coarse prompt and its margins over the article loop (None if not run)."""
    d = load(f"cifar10-coarse-{v}")
    if not d: return None
    c = curve(d, "localq-auto"); a = curve(load("cifar10-coarse-base"), "article")
    return c, {b: c[b] - a[b] for b in B}, fp(d)
def print_coarse(variants):
    for v in variants:
        got = coarse(v)
        if got:
            c, over, first = got
            print("coarse", v, " / ".join("%.3f" % c[b] for b in B), " minus article:", " / ".join("%+.3f" % over[b] for b in B), "fp", first)
def main(variants):
    res = scenario_rows(variants, SC)
    rand = random_curves(SC)
    base = res.get("base")
    for v, row in res.items():
        S = st.mean(r["m"] for r in row.values())
        cells = " | ".join(f"{' / '.join('%.3f' % a for a in r['ap'])} ({r['fp']:g})" for r in row.values())
        print(f"{v:12s} S={S:.4f}  {cells}")
        if base and v != "base":
            Sb = st.mean(r["m"] for r in base.values())
            why = violations(row, base, rand, SC)
            print(f"   dS={S-Sb:+.4f} per-scen dm: " + " ".join(f"{row[sc]['m']-base[sc]['m']:+.4f}" for sc in SC),
                  "ELIGIBLE" if not why else "NOT: " + "; ".join(why))
    print_random(rand, base, SC)
    print_coarse(variants)
if __name__ == "__main__":
    main(sys.argv[1:] or ["base", "uniform", "ef07", "uniformef07", "ef10"])
