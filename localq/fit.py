"""Fitting the linear classifier whose normalized weights are the next search query.

Two fitters:

- ``fit_linear``: localq's fit. Trains ``nn.Linear(d, 1)`` initialised from the current
  weights on every label so far, with a logistic loss balanced between positives and
  negatives, optional unlabeled "background" vectors as weak negatives (for a rare
  concept almost every unlabeled image is a negative, and a labeling loop that retrieves
  the top of the ranking sees very few true negatives), and a prior that keeps the
  weights near the initial query: the component of ``w`` along the prior is free, only
  the part orthogonal to it is penalised, so the prompt's direction survives while the
  labels add what it misses.
- ``fit_article_baseline``: the original article's fit, kept for the benchmark: MSE on
  ``tanh(w.x + b)`` against +-1 scores of the latest batch only, plain SGD.

Cost depends on the number of labels and on the (bounded) background sample, never on
the size of the collection.
"""

from __future__ import annotations

import numpy as np


def _check_inputs(x, y, w0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32).ravel()
    w0 = np.asarray(w0, dtype=np.float32).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be [n, d] with one score per row; got {x.shape} and {y.shape}")
    if x.shape[1] != w0.shape[0]:
        raise ValueError(f"w0 has dim {w0.shape[0]} but vectors have dim {x.shape[1]}")
    if not np.all(np.isfinite(y)) or np.any(np.abs(y) > 1):
        raise ValueError("scores must be finite and within [-1, 1]")
    return x, y, w0


def _linear(w0: np.ndarray, b0: float):
    import torch

    layer = torch.nn.Linear(w0.shape[0], 1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w0).reshape(1, -1))
        layer.bias.fill_(float(b0))
    return layer


def _weights_out(layer) -> tuple[np.ndarray, float]:
    w = layer.weight.detach().reshape(-1).numpy().astype(np.float32, copy=True)
    return w, float(layer.bias.detach().item())


def fit_linear(
    x,
    y,
    w0,
    b0: float,
    *,
    prior,
    prior_strength: float,
    lr: float,
    iters: int,
    background=None,
    background_weight: float = 0.1,
    balance: bool = True,
) -> tuple[np.ndarray, float]:
    """Fit ``Linear(d, 1)`` from ``(w0, b0)`` on all labels; returns ``(w, bias)``.

    ``y`` in [-1, 1] becomes the soft target ``(y + 1) / 2`` of a logistic loss, so 0
    (neutral) asks for a score near the threshold. With ``balance`` the positives and
    the negatives each carry half of the labeled loss, whatever their counts.
    ``background`` rows are negatives whose total weight is ``background_weight`` times
    the labeled weight. ``prior_strength`` multiplies the squared norm of the part of
    ``w`` orthogonal to ``prior``, plus any negative component along it (or of all of
``w`` when ``prior`` is None).
    Deterministic: full-batch Adam from a fixed start, no sampling.
    """
    import torch

    x, y, w0 = _check_inputs(x, y, w0)
    if iters <= 0 or x.shape[0] == 0:
        return w0.copy(), float(b0)

    targets = (y + 1.0) / 2.0
    weights = np.ones_like(y)
    if balance:
        pos, neg = y > 0, y < 0
        # Each side carries half the loss; neutral labels count like one ordinary label.
        if pos.any():
            weights[pos] = 0.5 * len(y) / pos.sum()
        if neg.any():
            weights[neg] = 0.5 * len(y) / neg.sum()
    weights /= weights.sum()
    if background is not None and len(background) and background_weight > 0:
        bg = np.ascontiguousarray(background, dtype=np.float32)
        x = np.concatenate([x, bg])
        targets = np.concatenate([targets, np.zeros(len(bg), np.float32)])
        weights = np.concatenate([weights, np.full(len(bg), background_weight / len(bg), np.float32)])

    xt = torch.from_numpy(x)
    tt = torch.from_numpy(targets.astype(np.float32))
    wt = torch.from_numpy(weights.astype(np.float32))
    q = None
    if prior is not None:
        q = torch.from_numpy(np.asarray(prior, dtype=np.float32).ravel())
        q = q / q.norm().clamp_min(1e-12)

    layer = _linear(w0, b0)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    for _ in range(iters):
        opt.zero_grad()
        logits = layer(xt).squeeze(1)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, tt, reduction="none") * wt).sum()
        w = layer.weight.reshape(-1)
        if q is not None:
            along = w @ q
            off_prior = w - along * q
            # The prompt says its direction is positive: a negative coefficient along
            # it is penalised like any deviation, a positive one is free.
            against = torch.clamp(along, max=0.0)
            loss = loss + prior_strength * (off_prior @ off_prior + against * against)
        else:
            loss = loss + prior_strength * (w @ w)
        loss.backward()
        opt.step()
    return _weights_out(layer)


def fit_article_baseline(x, y, w0, b0: float, *, lr: float = 0.01, iters: int = 50) -> tuple[np.ndarray, float]:
    """The article's fit: MSE between ``tanh(w.x + b)`` and the scores, plain SGD.

    The caller passes only the latest batch, as the article did.
    """
    import torch

    x, y, w0 = _check_inputs(x, y, w0)
    if iters <= 0 or x.shape[0] == 0:
        return w0.copy(), float(b0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    layer = _linear(w0, b0)
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    for _ in range(iters):
        opt.zero_grad()
        loss = torch.mean((torch.tanh(layer(xt).squeeze(1)) - yt) ** 2)
        loss.backward()
        opt.step()
    return _weights_out(layer)
