"""How similar near-copies are, against the nearest image of another scene.

Reads a collection indexed from a burst copy (scripts/burst_dataset.py) and prints, for a
range of cosine thresholds: the share of copy pairs above it (a copy the check catches) and
the share of images whose nearest image of ANOTHER scene is above it (a distinct image the
check would wrongly skip, were that neighbour labeled).

    python docs/bench/dev-issue20/near_copy_threshold.py DB [--split train]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from localq.bench.scenes import scene_of
from localq.collection import Collection


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    coll = Collection.open(args.db)
    ids = np.flatnonzero(coll.split_mask(args.split) & coll.live_mask())
    rows = coll.image_rows(ids)
    scenes = np.array([scene_of(r.path) for r in rows])
    x = np.asarray(coll.index.matrix()[ids], np.float32)
    by_scene: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(scenes):
        by_scene[s].append(j)
    pair = []
    for members in by_scene.values():
        if len(members) > 1:
            sims = x[members] @ x[members].T
            pair += sims[np.triu_indices(len(members), 1)].tolist()
    pair = np.asarray(pair)
    nearest_other = np.empty(len(x), np.float32)
    for start in range(0, len(x), 2048):
        sims = x[start:start + 2048] @ x.T
        sims[scenes[start:start + 2048, None] == scenes[None, :]] = -1.0
        nearest_other[start:start + 2048] = sims.max(axis=1)
    print(f"{len(ids)} images, {len(by_scene)} scenes, {len(pair)} copy pairs")
    print("threshold | copy pairs above | images whose nearest other-scene image is above")
    for t in (0.75, 0.78, 0.80, 0.82, 0.83, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.98):
        print(f"{t:.2f} | {np.mean(pair > t):.3f} | {np.mean(nearest_other > t):.4f}")
    print("copy pair cosine percentiles 1/5/50:", np.percentile(pair, [1, 5, 50]).round(3).tolist())
    print("nearest other-scene percentiles 50/99/99.9:", np.percentile(nearest_other, [50, 99, 99.9]).round(3).tolist())


if __name__ == "__main__":
    main()
