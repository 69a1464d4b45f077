"""Scores the within-cluster and per-image studies (RULE-within-cluster.md, RULE-per-image.md) from runs.json.

python score_within_cluster.py [VARIANT ...]            the within-cluster study (default: base w1 w2)
python score_within_cluster.py --default w1 w1 x1       the per-image study, against its default (W1)

Eight scenarios (the four balanced ones and their long-tailed copies); S4 over the balanced four, S8 over all eight."""
import statistics as st, sys
from score import SC as BAL, coarse, print_coarse, print_random, random_curves, scenario_rows, violations
LT = ["cifar10-lt-own", "cifar10-lt-other", "imagenette-lt-own", "imagenette-lt-other"]
SC = BAL + LT
def S(row, scenarios): return st.mean(row[sc]["m"] for sc in scenarios)
def main(variants, default="base"):
    res = scenario_rows(variants, SC)
    for v in variants:
        if v not in res: print(f"{v}: incomplete")
    rand = random_curves(SC)
    base = res.get(default)
    for v, row in res.items():
        print(f"{v:6s} S4={S(row, BAL):.4f} S8={S(row, SC):.4f}")
        for sc in SC:
            r = row[sc]
            print(f"   {sc:20s} {' / '.join('%.3f' % a for a in r['ap'])} (fp {r['fp']:g}, {r['nopos']} runs without a positive)")
        if base and v != default:
            why = violations(row, base, rand, SC)
            d4 = S(row, BAL) - S(base, BAL)
            if d4 < -0.002: why.append(f"(S4) {d4:+.4f}")
            got = coarse(v)
            if got is None: why.append("(F3) coarse not run")
            elif any(over < 0 for over in got[1].values()): why.append("(F3) coarse below article")
            print(f"   dS4={d4:+.4f} dS8={S(row, SC)-S(base, SC):+.4f} per-scen dm: "
                  + " ".join(f"{row[sc]['m']-base[sc]['m']:+.4f}" for sc in SC), "ELIGIBLE" if not why else "NOT: " + "; ".join(why))
    print_random(rand, base, SC)
    print_coarse(variants)
if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--default"]:
        main(args[2:], default=args[1])
    else:
        main(args or ["base", "w1", "w2"])
