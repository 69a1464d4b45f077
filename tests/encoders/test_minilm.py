"""localq's NumPy MiniLM against the sentence-transformers reference it replaces."""

import numpy as np
import pytest
import sentence_transformers  # the reference: in the test extra only, never a runtime dependency

from localq.encoders.lite import _minilm_dir
from localq.encoders.minilm import MAX_TOKENS, load_minilm

pytestmark = pytest.mark.slow  # loads sentence-transformers and the real MiniLM

TEXTS = [
    "a golf ball",
    "a photo of a dog",
    "dogs in the snow",
    "",
    "Ünïcödé café 日本語 😀",
    "a photo of a " + "very " * 300 + "long prompt",  # past the 256-token cut
    "a photo of a English springer, English springer spaniel",
]


def test_numpy_minilm_matches_sentence_transformers():
    ours = load_minilm(str(_minilm_dir()))
    reference = sentence_transformers.SentenceTransformer(str(_minilm_dir()), device="cpu")
    assert reference.max_seq_length == MAX_TOKENS
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    for batch_size in (64, 2):  # batching pads shorter texts: padding must not change a vector
        got = ours.encode(TEXTS, batch_size=batch_size)
        assert got.shape == (len(TEXTS), 384)
        assert np.abs(got - expected).max() <= 1e-5
    # Many texts take the multi-threaded BLAS path: the same vectors.
    many = [f"a photo of thing number {i}" for i in range(40)]
    assert np.abs(ours.encode(many) - reference.encode(many, normalize_embeddings=True)).max() <= 1e-5
