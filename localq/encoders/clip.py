"""CLIP through open_clip, from local files only.

Specs:
  ``clip:<arch>`` + ``weights=<checkpoint file>``   any open_clip architecture
  ``clip:<arch>:<pretrained tag>``                  a tag already in the local cache

localq never downloads: a tag is resolved to a file in the Hugging Face cache (or
open_clip's ``~/.cache/clip`` for URL-only tags) before open_clip sees it, and open_clip
is then given that file path, so it has nothing left to fetch. ``model_id`` is
``open_clip:<arch>:<sha256[:12] of the weights file>``: the same file under another
name or path is the same vector space, a different file is not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from localq.arrays import unit_rows
from localq.encoders.base import TorchEncoder, file_sha256
from localq.errors import EncoderUnavailable, first_line

_HF_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class ClipEncoder(TorchEncoder):
    def __init__(self, spec, weights, arch, model, transform, tokenizer, weights_file):
        self.encoder_spec = spec
        self.weights = weights
        self.arch = arch
        self.model = model
        self._transform = transform
        self._tokenizer = tokenizer
        self.model_id = f"open_clip:{arch}:{file_sha256(weights_file)[:12]}"
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.dim = int(_embed_dim(arch))

    @classmethod
    def load(cls, spec: str, weights: str | None = None) -> "ClipEncoder":
        import open_clip

        arch, tag = _parse_spec(spec)
        usage = f"--encoder clip:{arch} --weights /path/to/open_clip_pytorch_model.bin"
        if arch not in open_clip.list_models():
            raise EncoderUnavailable(
                f"unknown open_clip architecture {arch!r} (see open_clip.list_models()): e.g. {usage.replace(arch, 'ViT-B-32')}"
            )
        preprocess_cfg: dict = {}
        if tag and weights:
            raise EncoderUnavailable(f"give either a pretrained tag (clip:{arch}:{tag}) or --weights, not both")
        if tag:
            weights_file, preprocess_cfg = _cached_pretrained(arch, tag, usage)
        elif weights:
            weights_file = Path(weights).expanduser()
            if not weights_file.is_file():
                raise EncoderUnavailable(f"no checkpoint file at {weights_file}: {usage}")
        else:
            raise EncoderUnavailable(f"clip:{arch} needs a local checkpoint: {usage}")

        tokenizer = _tokenizer(arch)
        model, transform = _create_model(arch, weights_file, preprocess_cfg, usage)
        return cls(spec, weights, arch, model, transform, tokenizer, weights_file)

    def preprocess(self, img):
        return self._transform(img)

    def _image_features(self, batch):
        return self.model.encode_image(batch)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            features = self.model.encode_text(self._tokenizer(list(texts))).float()
        return unit_rows(features.numpy())


def _parse_spec(spec: str) -> tuple[str, str | None]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] != "clip" or not parts[1]:
        raise EncoderUnavailable(f"bad encoder spec {spec!r}: use clip:<arch> --weights PATH or clip:<arch>:<tag>")
    return parts[1], (parts[2] or None) if len(parts) == 3 else None


def _embed_dim(arch: str) -> int:
    import open_clip

    return open_clip.get_model_config(arch)["embed_dim"]


def _cached_pretrained(arch: str, tag: str, usage: str) -> tuple[Path, dict]:
    """The local file for an open_clip pretrained tag, plus the preprocessing and
    activation settings open_clip would have applied for that tag."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise EncoderUnavailable(f"open_clip has no pretrained tag {tag!r} for {arch} (known: {tags})")
    found = None
    if cfg.get("file"):
        found = Path(cfg["file"]) if Path(cfg["file"]).is_file() else None
    if found is None and cfg.get("hf_hub"):
        found = _hf_cached(cfg["hf_hub"])
    if found is None and cfg.get("url"):
        candidate = Path(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        found = candidate if candidate.is_file() else None
    if found is None:
        raise EncoderUnavailable(
            f"weights for clip:{arch}:{tag} are not in the local cache and localq never downloads: "
            f"copy the checkpoint here and use {usage}"
        )
    settings = {key: cfg[key] for key in ("mean", "std", "interpolation", "resize_mode", "quick_gelu") if key in cfg}
    return found, settings


def _hf_cached(hf_hub: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    # open_clip writes "org/repo/" for the default file name, "org/repo/file" otherwise
    repo_id, filename = (hf_hub.rstrip("/"), "") if hf_hub.endswith("/") else os.path.split(hf_hub)
    for name in (filename,) if filename else _HF_WEIGHT_NAMES:
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def _tokenizer(arch: str):
    """open_clip's tokenizer for ``arch``. The default BPE tokenizer reads the vocab
    bundled in the open_clip wheel; Hugging Face tokenizers (SigLIP, some ViTamin, ...)
    come from the HF cache only, because the offline flags are set."""
    import open_clip

    text_cfg = open_clip.get_model_config(arch).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
    try:
        return open_clip.get_tokenizer(arch)
    except Exception as exc:
        if hf_name:
            raise EncoderUnavailable(
                f"clip:{arch} needs the Hugging Face tokenizer {hf_name!r}, which is not in the local cache "
                "(localq never downloads): copy it into ~/.cache/huggingface or choose another architecture"
            ) from exc
        raise EncoderUnavailable(f"cannot build the tokenizer for clip:{arch}: {first_line(exc)}") from exc


def _create_model(arch: str, weights_file: Path, settings: dict, usage: str):
    import open_clip
    import torch

    kwargs = dict(
        pretrained=str(weights_file),
        force_quick_gelu=bool(settings.get("quick_gelu", False)),
        image_mean=settings.get("mean"),
        image_std=settings.get("std"),
        image_interpolation=settings.get("interpolation"),
        image_resize_mode=settings.get("resize_mode"),
    )
    try:
        model, _, transform = open_clip.create_model_and_transforms(arch, **kwargs)
    except Exception as exc:
        mismatch = EncoderUnavailable(
            f"{weights_file} does not fit clip:{arch} ({first_line(exc)}): supply a checkpoint for {arch}, {usage}"
        )
        if not _is_torchscript(weights_file):
            raise mismatch from exc
        # OpenAI's original ViT-B-32.pt etc. are TorchScript archives, not state dicts;
        # open_clip rebuilds a plain model from them (its arch is read from the file).
        try:
            model = open_clip.load_openai_model(str(weights_file), device="cpu")
        except Exception:
            raise mismatch from exc
        transform = open_clip.image_transform(
            model.visual.image_size,
            is_train=False,
            mean=settings.get("mean") or open_clip.OPENAI_DATASET_MEAN,
            std=settings.get("std") or open_clip.OPENAI_DATASET_STD,
        )
    model.eval()
    model.requires_grad_(False)
    return model.to(memory_format=torch.channels_last), transform


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
