"""The full-supervision ceiling: a logistic regression on every label of the pool.

One multinomial (softmax) logistic regression over all classes at once, fitted to
convergence with L-BFGS on standardized features; class c's linear score is its logit
``w_c.x + b_c``, which is what the benchmark ranks the held-out split by. This is the
"10-way logistic regression" of the issue's reference table.

Why not ``localq.fit.fit_linear``: that is a fixed-step Adam fit made for the loop's
few hundred labels; on a 50k-row pool it needs thousands of full passes to converge
per class, where L-BFGS on the softmax needs a few hundred passes for all classes.
"""

from __future__ import annotations

import numpy as np

# L2 penalty on the weights of the standardized features, per sample (mean loss), and the
# L-BFGS iteration cap. Both fixed, never tuned on the held-out split.
L2 = 1e-4
MAX_ITER = 300


def fit_softmax(x: np.ndarray, labels: np.ndarray, *, l2: float = L2, max_iter: int = MAX_ITER,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``softmax(W x + b)`` to integer ``labels``; returns (W [C, d], b [C]) on raw features."""
    import torch

    x = np.asarray(x, np.float32)
    labels = np.asarray(labels, np.int64)
    n_classes = int(labels.max()) + 1
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    xs = torch.from_numpy((x - mean) / scale)
    yt = torch.from_numpy(labels)
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # Fold the standardization back: W (x - m) / s + b == (W / s) x + (b - W m / s).
    w_raw = w.detach().numpy() / scale
    b_raw = b.detach().numpy() - w_raw @ mean
    return w_raw.astype(np.float32), b_raw.astype(np.float32)


def full_supervision(vectors: np.ndarray, pool_ids: np.ndarray, pool_labels: list[str],
                     classes: list[str]) -> dict[str, tuple[np.ndarray, float]]:
    """{class: (w, b)} from one softmax fit on every pool image's label."""
    index = {c: i for i, c in enumerate(sorted(set(pool_labels)))}
    y = np.array([index[c] for c in pool_labels], dtype=np.int64)
    w, b = fit_softmax(vectors[pool_ids], y)
    return {c: (w[index[c]], float(b[index[c]])) for c in classes if c in index}
