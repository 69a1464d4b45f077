"""Fitting the linear classifier whose normalized weights are the next search query.

Two fitters:

- ``fit_linear``: localq's fit, a regularised logistic regression trained as a PyTorch
  ``nn.Linear(d, 1)`` from the current weights on every label so far. What each part is
  for (each was measured on CIFAR-10 and Imagenette with the built-in encoder, see
  ``scripts/research_fit.py``):

  * positives and negatives each carry half of the loss, whatever their counts: a loop
    that retrieves the top of a ranking sees many positives and few negatives;
  * ``background``, a bounded sample of unlabeled vectors, joins the negatives. For a
    rare concept almost every unlabeled image is a negative, and without them the loop
    never learns what the rest of the collection looks like. Some of them are positives
    all the same, so each is down-weighted by the current classifier's probability that
    it is one (positive-unlabeled learning);
  * the prior is a Gaussian around the start query: ``w`` is pulled toward
    ``mu * prior``, where ``mu`` makes the prompt alone give logits of standard
    deviation ``prior_strength`` over the background. Its pull fades as labels
    accumulate (``ridge * ref_labels / n``), so 10 labels cannot undo a good prompt and
    100 labels can overrule a poor one. It also weakens when the labels say the prompt
    is wrong (``prompt_agreement``): a prompt that ranks the labeled negatives above
    the labeled positives (its best images came back negative) pulls toward them less;
  * vectors are centred on the background mean for the optimiser only (the returned
    ``(w, b)`` applies to raw vectors): Adam converges far faster on centred inputs.

- ``fit_article_baseline``: the original article's fit, kept for the benchmark: MSE on
  ``tanh(w.x + b)`` against the scores of the latest batch only, plain SGD.

Cost depends on the (bounded) background sample and, up to 100 labels, on the number of
labels; past them each step reads a chunk of at most as many rows (``fit_linear``), so a
fit costs about the same however many labels there are. Never on the collection's size.
"""

from __future__ import annotations

import numpy as np

# Defaults chosen by the label-efficiency study (scripts/research_fit.py).
# 30 steps at lr 0.3 cost a third as much, but in the full `localq bench` run they put
# Imagenette 0.0003 AP below zero-shot at 10 labels; 100 steps at 0.1 never fell below it.
DEFAULT_LR = 0.1
DEFAULT_ITERS = 100
# Chosen on dev (docs/bench/dev-issue20, Tiny-ImageNet's many rare classes and burst copies,
# own prompts): 1.0 against 0.5 raised mean AP over 10-100 labels by 0.015 and 0.010; 2.0 and
# 4.0 were lower again. The pull is scaled down where labels disagree with the prompt (below),
# so a prompt that misses keeps little of it.
DEFAULT_PRIOR_STRENGTH = 1.0
# The pull is scaled down when the labels disagree with the prompt: strength
# min(1, 2 * max(0, D)) * prior_strength, D = prompt_agreement (Somers' D, 2 AUC - 1, of the
# prompt's scores on the labeled rows), so it is unchanged at D >= 0.5 (and while the labels
# hold only one kind) and 0 when the prompt ranks them no better than chance. Chosen on dev
# (CIFAR-10 and Imagenette, own and mismatched prompts, docs/bench/dev-5-seeds) among five
# mappings of D.
DEFAULT_RIDGE = 4.5e-4  # L2 weight on (w - mu * prior) at REF_LABELS labels
REF_LABELS = 50
DEFAULT_BACKGROUND_SHARE = 0.5  # of the negative half of the loss, when labeled negatives exist
# A step reads at most the background and this many labels' rows: full batches up to 100
# labels, the counts the defaults above were chosen at (scripts/research_fit.py: 10 to 100
# labels); past them, each step reads one chunk of the rows in turn, so a step costs what
# it costs at 100 labels however many there are (see fit_linear).
DEFAULT_STEP_LABELS = 100


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
    if not np.all(np.isfinite(w0)):
        raise ValueError("the current weights are not finite")
    return x, y, w0


def _linear(w0: np.ndarray, b0: float):
    import torch

    layer = torch.nn.Linear(w0.shape[0], 1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w0).reshape(1, -1))
        layer.bias.fill_(float(b0))
    return layer


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _sample_weights(y, background, w0, b0, background_share, pu):
    """Per-row loss weights (summing to 1) for the labeled rows then the background rows."""
    pos, neg = y > 0, y < 0
    neutral = ~(pos | neg)
    n_bg = 0 if background is None else len(background)
    w_lab = np.zeros(len(y), np.float64)
    w_bg = np.zeros(n_bg, np.float64)
    if pos.any():
        w_lab[pos] = 0.5 / pos.sum()
    if neg.any() and n_bg:
        w_lab[neg] = 0.5 * (1.0 - background_share) / neg.sum()
        w_bg[:] = 0.5 * background_share / n_bg
    elif neg.any():
        w_lab[neg] = 0.5 / neg.sum()
    elif n_bg:
        w_bg[:] = 0.5 / n_bg
    if neutral.any():
        w_lab[neutral] = 0.5 / len(y)  # a neutral label counts like one ordinary label
    if n_bg and pu:
        # An unlabeled vector the current classifier believes positive is probably one:
        # it should not teach "negative". Keep the background's total weight.
        total = w_bg.sum()
        w_bg *= 1.0 - _sigmoid(background @ w0 + b0)
        if w_bg.sum() > 0:
            w_bg *= total / w_bg.sum()
    weights = np.concatenate([w_lab, w_bg])
    return (weights / weights.sum()).astype(np.float32)


def prior_mean(prior, background, x, prior_strength: float) -> np.ndarray | None:
    """``mu * prior`` with ``mu`` = prior_strength / std of the prompt's scores over the
    background (or the labeled vectors), so the prompt alone gives logits of standard
    deviation ``prior_strength`` whatever the encoder's cosine range."""
    if prior is None or prior_strength <= 0:
        return None
    q = np.asarray(prior, dtype=np.float32).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    ref = background if background is not None and len(background) > 1 else x
    spread = float(np.std(ref @ q)) if len(ref) > 1 else 0.0
    spread = max(spread, 1e-3)  # a prompt that scores everything alike still counts a little
    return (prior_strength / spread * q).astype(np.float32)


def prompt_agreement(prior, x, y) -> float | None:
    """How well the prompt ranks the labels so far: Somers' D (2 AUC - 1) of ``x @ prior``
    on the positives (``y > 0``) against the negatives (``y < 0``), ties counted half.

    1: every positive above every negative; 0: chance; -1: the reverse. None when the labels
    hold only one kind (or there is no prior): then they cannot judge the prompt."""
    if prior is None:
        return None
    s = np.asarray(x, dtype=np.float32) @ np.asarray(prior, dtype=np.float32).ravel()
    y = np.asarray(y).ravel()
    n_pos, n_neg = int(np.sum(y > 0)), int(np.sum(y < 0))
    if n_pos == 0 or n_neg == 0:
        return None
    s = s[y != 0]
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
    wins = float(ranks[y[y != 0] > 0].sum()) - n_pos * (n_pos + 1) / 2.0  # Mann-Whitney U
    return 2.0 * wins / (n_pos * n_neg) - 1.0


def agreed_strength(prior_strength: float, agreement: float | None) -> float:
    """``prior_strength`` scaled by ``min(1, 2 * max(0, agreement))`` (unchanged when None)."""
    if agreement is None:
        return prior_strength
    return prior_strength * min(1.0, 2.0 * max(0.0, agreement))


def fit_linear(
    x,
    y,
    w0,
    b0: float,
    *,
    prior,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    lr: float = DEFAULT_LR,
    iters: int = DEFAULT_ITERS,
    background=None,
    background_weight: float = DEFAULT_BACKGROUND_SHARE,
    ridge: float = DEFAULT_RIDGE,
    positive_unlabeled: bool = True,
    weigh_prompt_by_labels: bool = True,
    step_labels: int | None = DEFAULT_STEP_LABELS,
) -> tuple[np.ndarray, float]:
    """Fit ``Linear(d, 1)`` from ``(w0, b0)`` on all labels; returns ``(w, bias)``.

    ``y`` in [-1, 1] becomes the soft target ``(y + 1) / 2`` of a logistic loss, so 0
    (neutral) asks for a score near the threshold. ``background`` (optional, [m, d],
    keep m bounded, ~1000) are unlabeled vectors used as weak negatives; together they
    take ``background_weight`` of the negative half of the loss. ``prior_strength`` is
    the prompt's weight (0 = no prior), scaled down when the labels disagree with the prompt
    unless ``weigh_prompt_by_labels`` is False; see the module docstring. Deterministic:
    Adam from a fixed start, no sampling.

    Each step reads every row (a full batch) while they are at most the background plus
    ``step_labels`` labels (None: always). Past that the rows are dealt into the fewest
    chunks of at most that many rows, each holding every chunk-th row of each kind
    (positives, negatives, neutral, background; labels in the order given), and step i
    reads chunk i mod chunks, its loss weighted up so that a cycle of steps adds up to full
    batches: a fit at 10,000 labels then costs about what one at 100 does. On synthetic
    clustered 512-d vectors, warm-started as in the loop, the chunked fit's held-out AP
    was within 0.0003 of the full batches' at 210 and 510 labels, and 0.003 to 0.008 above
    it at 2,010 and 10,010 (scripts/research_fit_chunks.py, docs/bench/fit-chunks.md).
    """
    import torch

    x, y, w0 = _check_inputs(x, y, w0)
    if iters <= 0 or x.shape[0] == 0:
        return w0.copy(), float(b0)
    if background is not None:
        background = np.ascontiguousarray(background, dtype=np.float32)
        if background.ndim != 2 or background.shape[1] != x.shape[1] or len(background) == 0:
            background = None

    weights = _sample_weights(y, background, w0, float(b0), float(np.clip(background_weight, 0, 1)), positive_unlabeled)
    n_bg = 0 if background is None else len(background)
    targets = np.concatenate([(y + 1.0) / 2.0, np.zeros(n_bg, np.float32)])
    # Centre for the optimiser only: w.x + b == w.(x - c) + (b + w.c).
    centre = (background if background is not None else x).mean(axis=0)
    if weigh_prompt_by_labels:
        prior_strength = agreed_strength(prior_strength, prompt_agreement(prior, x, y))
    mean_w = prior_mean(prior, background, x, prior_strength)
    # The prior counts for less as labels accumulate (a posterior, not a fixed penalty).
    l2 = ridge * REF_LABELS / max(len(y), 1)

    # The rows the optimiser reads, in one array of this call's own: labels then background,
    # or past ``step_labels``, in the order of the chunks that the steps take in turn.
    n_rows = len(y) + n_bg
    rows = np.empty((n_rows, x.shape[1]), np.float32)
    bounds = [0, n_rows]
    rows_per_step = None if step_labels is None else n_bg + max(int(step_labels), 1)
    if rows_per_step is not None and n_rows > rows_per_step:
        order, bounds = _interleaved(y, n_bg, -(-n_rows // rows_per_step))
        place = np.empty(n_rows, np.int64)
        place[order] = np.arange(n_rows)
        rows[place[: len(y)]] = x
        if n_bg:
            rows[place[len(y) :]] = background
        # Each chunk's loss weighted up to the whole's: a cycle of steps sums to full batches.
        targets, weights = targets[order], weights[order] * np.float32(len(bounds) - 1)
    else:
        rows[: len(y)] = x
        if n_bg:
            rows[len(y) :] = background
    np.subtract(rows, centre, out=rows)
    xt = torch.from_numpy(rows)
    tt = torch.from_numpy(targets.astype(np.float32))
    wt = torch.from_numpy(weights)
    mt = torch.from_numpy(mean_w) if mean_w is not None else torch.zeros(x.shape[1])
    theta = _adam(xt, tt, wt, mt, l2, w0, float(b0) + float(w0 @ centre), lr, iters, bounds)
    w = theta[:-1].numpy().astype(np.float32, copy=True)
    b = float(theta[-1].item()) - float(w @ centre)
    return w, b


def _interleaved(y: np.ndarray, n_background: int, chunks: int) -> tuple[np.ndarray, list[int]]:
    """An order of the rows (labels, then background) that makes ``chunks`` contiguous
    chunks, and the chunks' bounds: the rows sorted by kind (positive, negative, neutral,
    background; stable) are dealt out in turn, so each chunk holds every ``chunks``-th row
    of each kind and the chunks' sizes differ by at most one."""
    kind = np.concatenate([np.where(y > 0, 0, np.where(y < 0, 1, 2)), np.full(n_background, 3)])
    chunk = np.empty(len(kind), np.int64)
    chunk[np.argsort(kind, kind="stable")] = np.arange(len(kind)) % chunks
    order = np.argsort(chunk, kind="stable")  # a chunk's rows in the order given
    return order, np.searchsorted(chunk[order], np.arange(chunks + 1)).tolist()


def _adam(xt, tt, wt, mt, l2: float, w0: np.ndarray, b0: float, lr: float, iters: int, bounds=None):
    """``iters`` Adam steps on the weighted logistic loss plus ``l2 |w - mt|^2``, from
    ``(w0, b0)``, step i on the rows of chunk i mod chunks (``bounds``: the chunks' first
    rows and the end; default one chunk, full batches); returns ``[w..., b]`` as one
    float32 tensor.

    torch.optim.Adam's update with its defaults (betas 0.9 and 0.999, eps 1e-8, bias
    correction), written out on one tensor holding the weights and the bias: Adam is
    elementwise, so this is its step on the pair, without the optimiser's per-step Python
    overhead (a sixth of a fit at 10,000 labels). The logistic loss's gradient is written
    out too: two matrix-vector products per step and nothing else."""
    import torch

    beta1, beta2, eps = 0.9, 0.999, 1e-8
    d = xt.shape[1]
    theta = torch.empty(d + 1, dtype=torch.float32)
    theta[:d] = torch.from_numpy(w0)
    theta[d] = b0
    w, b = theta[:d], theta[d:]
    grad = torch.empty(d + 1, dtype=torch.float32)
    g_w, g_b = grad[:d], grad[d:]
    exp_avg = torch.zeros(d + 1, dtype=torch.float32)
    exp_avg_sq = torch.zeros(d + 1, dtype=torch.float32)
    bounds = bounds or [0, xt.shape[0]]
    parts = [(xt[lo:hi], tt[lo:hi], wt[lo:hi], hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:])]
    z_all = torch.empty(max(p[3] for p in parts), dtype=torch.float32)
    with torch.no_grad():
        for step in range(1, iters + 1):
            x_s, t_s, w_s, n_s = parts[(step - 1) % len(parts)]
            z = z_all[:n_s]
            torch.mv(x_s, w, out=z)
            residual = z.add_(b).sigmoid_().sub_(t_s).mul_(w_s)
            torch.mv(x_s.T, residual, out=g_w)
            g_w.add_((2.0 * l2) * (w - mt))
            torch.sum(residual, dim=0, keepdim=True, out=g_b)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = lr / (1 - beta1**step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
            theta.addcdiv_(exp_avg, denom, value=-step_size)
    return theta


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
    w = layer.weight.detach().reshape(-1).numpy().astype(np.float32, copy=True)
    return w, float(layer.bias.detach().item())
