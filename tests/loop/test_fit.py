import numpy as np
import pytest

from localq.loop.fit import agreed_strength, fit_article_baseline, fit_linear, prompt_agreement
from localq.loop.metrics import average_precision


def unit_rows(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def clusters(seed=0, n_per=200, d=32, n_clusters=5, spread=0.6):
    """Seeded gaussian clusters on the unit sphere: (vectors, cluster label, centres)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(n_clusters, d)))
    labels = np.repeat(np.arange(n_clusters), n_per)
    x = unit_rows(centres[labels] + spread * rng.normal(size=(len(labels), d)) / np.sqrt(d) * 4)
    return x, labels, centres


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def run_loop(x, labels, target, q0, rounds=4, k=10):
    """A simulated labeler: top-k unseen by the current query, +1 target / -1 others."""
    w, b = q0.copy(), 0.0
    seen = np.zeros(len(x), bool)
    xs, ys = [], []
    for _ in range(rounds):
        s = x @ w
        s[seen] = -np.inf
        batch = np.argsort(-s)[:k]
        seen[batch] = True
        xs.append(x[batch])
        ys.append(np.where(labels[batch] == target, 1.0, -1.0))
        background = x[np.random.default_rng(len(xs)).choice(len(x), 200, replace=False)]
        w, b = fit_linear(np.concatenate(xs), np.concatenate(ys), w, b, prior=q0, background=background)
    return w, b


def test_rounds_move_the_query_toward_the_target_cluster():
    x, labels, centres = clusters()
    target = 2
    # Start from a query between the target and another cluster, closer to the other.
    q0 = unit(0.4 * centres[target] + 0.6 * centres[0])
    w, _ = run_loop(x, labels, target, q0)
    assert cos(w, centres[target]) > cos(q0, centres[target]) + 0.1
    assert average_precision(x @ w, labels == target) > average_precision(x @ q0, labels == target) + 0.1


def test_prior_pulls_toward_the_initial_query_as_strength_grows():
    x, labels, centres = clusters(seed=1)
    # The prompt is half right: it mixes the target cluster 3 with cluster 0.
    q0 = unit(centres[0] + 0.5 * centres[3])
    labeled = np.random.default_rng(0).choice(len(x), 30, replace=False)
    y = np.where(labels[labeled] == 3, 1.0, -1.0).astype(np.float32)
    cosines = []
    for strength in (0.0, 1.0, 3.0, 10.0):
        # The strength as given: these labels rank the half-right prompt below D 0.5, which
        # would scale every strength down alike (tested apart, below).
        w, _ = fit_linear(
            x[labeled], y, q0, 0.0, prior=q0, prior_strength=strength, background=x[:300], weigh_prompt_by_labels=False
        )
        cosines.append(cos(w, q0))
    assert cosines == sorted(cosines)
    assert cosines[0] < 0.3 and cosines[3] > 0.6


def test_fit_is_deterministic():
    x, labels, centres = clusters(seed=2)
    y = np.where(labels[:50] == 1, 1.0, -1.0)
    kw = dict(prior=centres[1], prior_strength=0.1, lr=0.05, iters=50, background=x[100:300])
    w1, b1 = fit_linear(x[:50], y, centres[0], 0.0, **kw)
    w2, b2 = fit_linear(x[:50], y, centres[0], 0.0, **kw)
    assert np.array_equal(w1, w2) and b1 == b2


def test_full_supervision_on_separable_data_reaches_ap_one():
    rng = np.random.default_rng(3)
    x = unit_rows(rng.normal(size=(400, 16)))
    direction = unit(rng.normal(size=16))
    margin = x @ direction
    keep = np.abs(margin) > 0.1  # a clear gap between the two sides
    x, relevant = x[keep], margin[keep] > 0
    y = np.where(relevant, 1.0, -1.0)
    w, b = fit_linear(x, y, unit(rng.normal(size=16)), 0.0, prior=None, prior_strength=0.0, lr=0.05, iters=300)
    assert average_precision(x @ w + b, relevant) == 1.0


def test_neutral_scores_and_zero_iterations():
    x, labels, centres = clusters(seed=4)
    w0 = unit(centres[0])
    w, b = fit_linear(x[:5], np.zeros(5), w0, 0.3, prior=None, prior_strength=0.0, lr=0.05, iters=0)
    assert np.array_equal(w, w0) and b == 0.3


def test_invalid_scores_are_rejected():
    x, _, centres = clusters(seed=5)
    with pytest.raises(ValueError):
        fit_linear(x[:2], [1.5, 0.0], centres[0], 0.0, prior=None, prior_strength=0.0, lr=0.1, iters=5)
    with pytest.raises(ValueError):
        fit_linear(x[:2], [np.nan, 0.0], centres[0], 0.0, prior=None, prior_strength=0.0, lr=0.1, iters=5)


def test_article_baseline_moves_toward_the_labels():
    x, labels, centres = clusters(seed=6)
    q0 = unit(centres[0])
    batch = np.argsort(-(x @ q0))[:10]
    y = np.where(labels[batch] == 0, 1.0, -1.0)
    y[:3] = -1.0  # some negatives in the batch
    w, b = fit_article_baseline(x[batch], y, q0, 0.0)
    assert not np.allclose(w, q0)
    before = np.mean((np.tanh(x[batch] @ q0) - y) ** 2)
    after = np.mean((np.tanh(x[batch] @ w + b) - y) ** 2)
    assert after < before


def test_background_that_looks_positive_is_not_taught_as_negative():
    # Half the background is the target cluster: positive-unlabeled weighting keeps the
    # current classifier's likely positives from being taught as negatives.
    x, labels, centres = clusters(seed=7)
    target = 1
    q0 = unit(centres[target])
    lab = np.flatnonzero(labels == target)[:10]
    bg = np.concatenate([x[labels == target][50:150], x[labels == 4][:100]])
    aps = []
    for pu in (True, False):
        w, _ = fit_linear(x[lab], np.ones(10), 5.0 * q0, -1.0, prior=q0, background=bg, positive_unlabeled=pu)
        aps.append(average_precision(x @ w, labels == target))
    assert aps[0] > aps[1] + 0.05


def test_prompt_agreement_is_somers_d_of_the_prompt_on_the_labels():
    q = np.array([1.0, 0.0], np.float32)
    x = np.array([[s, 0.0] for s in (0.9, 0.8, 0.5, 0.2, 0.1, 0.3)], np.float32)
    assert prompt_agreement(q, x, [1, 1, 0, -1, -1, -1]) == 1.0  # every positive above every negative
    assert prompt_agreement(q, x, [-1, -1, 0, 1, 1, 1]) == -1.0  # the reverse: the prompt's best are negatives
    assert prompt_agreement(q, x[:2], [1, -1]) == 1.0
    assert prompt_agreement(q, np.array([[0.5, 0], [0.5, 0]], np.float32), [1, -1]) == 0.0  # a tie counts half
    # One kind of label, or no prompt: the labels cannot judge it.
    assert prompt_agreement(q, x, [1, 1, 0, 1, 1, 1]) is None
    assert prompt_agreement(q, x, [-1] * 6) is None
    assert prompt_agreement(None, x, [1, 1, 0, -1, -1, -1]) is None
    # Pairwise definition, with ties, on random data.
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(60, 4)), 1).astype(np.float32)
    q = rng.normal(size=4).astype(np.float32)
    y = rng.choice([-1.0, 0.0, 1.0], size=60)
    s = x @ q
    diff = s[y > 0][:, None] - s[y < 0][None, :]
    assert prompt_agreement(q, x, y) == pytest.approx(2 * ((diff > 0).mean() + 0.5 * (diff == 0).mean()) - 1)


def test_the_pull_weakens_only_when_the_labels_disagree_with_the_prompt():
    assert agreed_strength(0.5, None) == 0.5  # one kind of label: unchanged
    assert agreed_strength(0.5, 1.0) == agreed_strength(0.5, 0.5) == 0.5  # never raised
    assert agreed_strength(0.5, 0.25) == 0.25
    assert agreed_strength(0.5, 0.0) == agreed_strength(0.5, -0.8) == 0.0


def test_a_prompt_whose_best_came_back_negative_pulls_less():
    # A mismatched prompt: it points at cluster 0, the labeler wants cluster 3. Its best images
    # came back negative and the positives it ranks low, so the fit is not pulled back to it.
    x, labels, centres = clusters(seed=8)
    q0 = unit(centres[0])
    wrong = np.argsort(-(x @ q0))[:8]
    right = np.flatnonzero(labels == 3)[:2]
    ids = np.concatenate([wrong, right])
    y = np.where(labels[ids] == 3, 1.0, -1.0).astype(np.float32)
    assert prompt_agreement(q0, x[ids], y) < 0
    kw = dict(prior=q0, background=x[::5])
    w_fixed, _ = fit_linear(x[ids], y, q0, 0.0, weigh_prompt_by_labels=False, **kw)
    w, _ = fit_linear(x[ids], y, q0, 0.0, **kw)
    assert cos(w, q0) < cos(w_fixed, q0) - 0.05
    assert average_precision(x @ w, labels == 3) > average_precision(x @ w_fixed, labels == 3)
    # Labels that agree with the prompt leave the fit exactly as it was.
    good = np.argsort(-(x @ q0))[:5]
    far = np.flatnonzero(labels == 4)[:5]
    ids = np.concatenate([good, far])
    y = np.where(labels[ids] == 0, 1.0, -1.0).astype(np.float32)
    assert prompt_agreement(q0, x[ids], y) >= 0.5
    a = fit_linear(x[ids], y, q0, 0.0, weigh_prompt_by_labels=False, **kw)
    b = fit_linear(x[ids], y, q0, 0.0, **kw)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def _reference_fit(x, y, w0, b0, *, prior, background, lr=0.1, iters=100):
    """fit_linear as it was written before its Adam was (torch.optim.Adam on an nn.Linear),
    kept as the reference the hand-written update must match."""
    import torch

    from localq.loop import fit

    x, y, w0 = fit._check_inputs(x, y, w0)
    background = np.ascontiguousarray(background, dtype=np.float32)
    weights = fit._sample_weights(y, background, w0, float(b0), fit.DEFAULT_BACKGROUND_SHARE, True)
    rows = np.concatenate([x, background])
    targets = np.concatenate([(y + 1.0) / 2.0, np.zeros(len(background), np.float32)])
    centre = background.mean(axis=0)
    strength = fit.agreed_strength(fit.DEFAULT_PRIOR_STRENGTH, fit.prompt_agreement(prior, x, y))
    mean_w = fit.prior_mean(prior, background, x, strength)
    l2 = fit.DEFAULT_RIDGE * fit.REF_LABELS / max(len(y), 1)
    xt = torch.from_numpy(np.ascontiguousarray(rows - centre))
    tt, wt = torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(weights)
    mt = torch.from_numpy(mean_w) if mean_w is not None else torch.zeros(x.shape[1])
    layer = torch.nn.Linear(len(w0), 1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w0).reshape(1, -1))
        layer.bias.fill_(float(b0) + float(w0 @ centre))
    weight, bias = layer.weight, layer.bias
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    with torch.no_grad():
        for _ in range(iters):
            w = weight.view(-1)
            residual = (torch.sigmoid(xt @ w + bias) - tt) * wt
            weight.grad = (xt.T @ residual + (2.0 * l2) * (w - mt)).view(1, -1)
            bias.grad = residual.sum().view(1)
            opt.step()
    w = layer.weight.detach().reshape(-1).numpy().astype(np.float32, copy=True)
    return w, float(layer.bias.detach().item()) - float(w @ centre)


@pytest.mark.parametrize("n_labels", [10, 30, 100])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_hand_written_adam_is_torch_adam(n_labels, seed):
    """The fit's Adam step, written out on tensors, gives torch.optim.Adam's weights (up
    to float rounding) at the label counts a session starts with: 10 to 100 labels, with
    both kinds of label, a neutral one, a prompt and a 1000-vector background."""
    rng = np.random.default_rng(seed)
    d = 64
    x = unit_rows(rng.normal(size=(n_labels, d)) + 0.5)
    y = rng.choice([-1.0, 1.0], size=n_labels).astype(np.float32)
    y[0] = 0.0
    background = unit_rows(rng.normal(size=(1000, d)))
    prior = unit(rng.normal(size=d) + 0.5)
    w0, b0 = 3.0 * prior, -0.4
    w_ref, b_ref = _reference_fit(x, y, w0, b0, prior=prior, background=background)
    w, b = fit_linear(x, y, w0, b0, prior=prior, background=background)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-5 * float(np.abs(w_ref).max()))
    assert abs(b - b_ref) <= 1e-5 * max(1.0, abs(b_ref))


def test_past_100_labels_each_step_reads_a_chunk_that_holds_every_kind():
    """Up to 100 labels (and the background) every step reads every row; past them the rows
    are dealt into chunks of at most that many, each with its share of every kind, and the
    fit stays close to the full batches' (scripts/research_fit_chunks.py measures AP)."""
    from localq.loop.fit import _interleaved

    x, labels, centres = clusters(seed=3, n_per=300, d=32)
    rng = np.random.default_rng(0)
    background = x[rng.choice(len(x), 200, replace=False)]
    q0 = unit(centres[1] + 0.5 * centres[2])
    for n, chunked in ((100, False), (400, True)):
        ids = rng.choice(len(x), n, replace=False)
        y = np.where(labels[ids] == 1, 1.0, -1.0).astype(np.float32)
        full = fit_linear(x[ids], y, q0, 0.0, prior=q0, background=background, step_labels=None)
        w, b = fit_linear(x[ids], y, q0, 0.0, prior=q0, background=background)
        if not chunked:
            np.testing.assert_array_equal(w, full[0])
            assert b == full[1]
        else:
            assert not np.array_equal(w, full[0])
            assert cos(w, full[0]) > 0.99
    y = np.array([1.0] * 30 + [-1.0] * 250 + [0.0] * 20, np.float32)
    order, bounds = _interleaved(y, 200, 3)
    assert sorted(order.tolist()) == list(range(500)) and bounds[0] == 0 and bounds[-1] == 500
    kind = np.concatenate([np.sign(y), np.full(200, 2.0)])[order]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        assert hi - lo in (166, 167)
        counts = [int(np.sum(kind[lo:hi] == k)) for k in (1.0, -1.0, 0.0, 2.0)]
        assert all(abs(c - share) <= 1 for c, share in zip(counts, (10, 250 / 3, 20 / 3, 200 / 3))), counts
