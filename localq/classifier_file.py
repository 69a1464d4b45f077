"""Pickle-free classifier files.

The native format is safetensors: tensors ``weight`` [1, dim] and ``bias`` [1] (the
state dict of ``torch.nn.Linear(dim, 1)``) and string metadata (format, model_id, dim,
prompt, rounds, label counts, threshold). ``.npy`` + ``.json`` sidecar is the second
format. Both load without localq (safetensors.numpy.load_file / numpy.load + json).

Also read: a PyTorch state dict of ``Linear(dim, 1)`` (loaded with ``weights_only=True``,
never unpickling code) and a bare ``.npy`` vector. Those carry no model_id, so only the
dimension can be checked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from localq.errors import ClassifierMismatch, LocalqError

FORMAT = "localq-classifier/1"


@dataclass
class ClassifierFile:
    weight: np.ndarray  # [dim] float32
    bias: float
    model_id: str | None
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])


def save(path: str | Path, weight: np.ndarray, bias: float, *, model_id: str, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weight = np.ascontiguousarray(weight, dtype=np.float32).reshape(-1)
    header = {"format": FORMAT, "model_id": model_id, "dim": str(weight.shape[0]), **{k: str(v) for k, v in meta.items()}}
    if path.suffix == ".npy":
        np.save(path, weight)
        path.with_suffix(".json").write_text(json.dumps({**header, "bias": float(bias)}, indent=2))
        return path
    from safetensors.numpy import save_file

    if path.suffix != ".safetensors":
        path = path.with_suffix(path.suffix + ".safetensors") if path.suffix else path.with_suffix(".safetensors")
    save_file({"weight": weight[None, :], "bias": np.array([bias], np.float32)}, str(path), metadata=header)
    _default_permissions(path)  # safetensors creates files 0600; a classifier is meant to be shared
    return path


def _default_permissions(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load(path: str | Path) -> ClassifierFile:
    path = Path(path)
    if not path.is_file():
        raise LocalqError(f"no classifier file at {path}")
    try:
        if path.suffix == ".safetensors":
            return _load_safetensors(path)
        if path.suffix == ".npy":
            return _load_npy(path)
        if path.suffix in (".pt", ".pth", ".bin"):
            return _load_state_dict(path)
    except LocalqError:
        raise
    except Exception as exc:  # corrupt or foreign files: say which file and why
        raise LocalqError(f"cannot read classifier {path}: {exc}") from exc
    raise LocalqError(f"unknown classifier format {path.suffix!r}: use .safetensors, .npy or a torch .pt state dict")


def check_compatible(clf: ClassifierFile, model_id: str, dim: int, source: str) -> None:
    if clf.dim != dim:
        raise ClassifierMismatch(f"{source} has dimension {clf.dim}, the collection {dim}: it belongs to another encoder")
    if clf.model_id is not None and clf.model_id != model_id:
        raise ClassifierMismatch(f"{source} was trained on {clf.model_id}, the collection uses {model_id}")


def _load_safetensors(path: Path) -> ClassifierFile:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
        weight = f.get_tensor("weight").reshape(-1).astype(np.float32)
        bias = float(f.get_tensor("bias").reshape(-1)[0]) if "bias" in f.keys() else 0.0
    return ClassifierFile(weight, bias, meta.pop("model_id", None), meta)


def _load_npy(path: Path) -> ClassifierFile:
    weight = np.load(path, allow_pickle=False)
    if weight.ndim == 2 and weight.shape[0] == 1:
        weight = weight[0]
    if weight.ndim != 1:
        raise LocalqError(f"{path} holds an array of shape {weight.shape}, not one weight vector")
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    bias = float(meta.pop("bias", 0.0))
    return ClassifierFile(weight.astype(np.float32), bias, meta.pop("model_id", None), meta)


def _load_state_dict(path: Path) -> ClassifierFile:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    keys = [k for k in state if k.endswith("weight")]
    if len(keys) != 1 or state[keys[0]].ndim != 2 or state[keys[0]].shape[0] != 1:
        raise LocalqError(f"{path} is not the state dict of a Linear(dim, 1) layer")
    weight = state[keys[0]].detach().float().numpy().reshape(-1)
    bias_key = keys[0][: -len("weight")] + "bias"
    bias = float(state[bias_key].reshape(-1)[0]) if bias_key in state else 0.0
    return ClassifierFile(weight, bias, None, {})
