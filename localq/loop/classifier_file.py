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

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from localq.errors import ClassifierMismatch, InvalidClassifierFile, LocalqError

FORMAT = "localq-classifier/1"

# A fitted localq classifier has a weight norm of order 1-100 (a unit start query plus
# what the labels add) and a bias of the same order. Far beyond that, w·x overflows
# float32 or the file is not a classifier at all.
MAX_WEIGHT_NORM = 1e6
MAX_ABS_BIAS = 1e6
MAX_DIM = 1 << 16


@dataclass
class ClassifierFile:
    weight: np.ndarray  # [dim] float32
    bias: float
    model_id: str | None
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])


def encode(weight: np.ndarray, bias: float, *, model_id: str, meta: dict, fmt: str) -> dict[str, bytes]:
    """The files of a classifier as bytes, by suffix: {".safetensors": ...} or {".npy": ...,
    ".json": ...}, for a writer that puts them in place itself (export: outputs.py)."""
    weight = np.ascontiguousarray(weight, dtype=np.float32).reshape(-1)
    header = _header(weight, model_id, meta)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, weight)
        return {".npy": buf.getvalue(), ".json": json.dumps({**header, "bias": float(bias)}, indent=2).encode()}
    if fmt != "safetensors":
        raise ValueError(f"unknown classifier format {fmt!r}")
    from safetensors.numpy import save

    return {".safetensors": save({"weight": weight[None, :], "bias": np.array([bias], np.float32)}, metadata=header)}


def _header(weight: np.ndarray, model_id: str, meta: dict) -> dict[str, str]:
    return {"format": FORMAT, "model_id": model_id, "dim": str(weight.shape[0]), **{k: str(v) for k, v in meta.items()}}


def save(path: str | Path, weight: np.ndarray, bias: float, *, model_id: str, meta: dict) -> Path:
    """Write the classifier at ``path``: ``.npy`` (+ its ``.json``), else safetensors (the
    suffix added where missing). Files get the umask's permissions: a classifier is shared."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".npy" and path.suffix != ".safetensors":
        path = path.with_suffix(path.suffix + ".safetensors") if path.suffix else path.with_suffix(".safetensors")
    files = encode(weight, bias, model_id=model_id, meta=meta, fmt="npy" if path.suffix == ".npy" else "safetensors")
    for suffix, data in files.items():
        path.with_suffix(suffix).write_bytes(data)
    return path


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
        raise ClassifierMismatch(
            f"{source} has dimension {clf.dim}, the collection {dim}: it belongs to another encoder"
        )
    if clf.model_id is not None and clf.model_id != model_id:
        raise ClassifierMismatch(f"{source} was trained on {clf.model_id}, the collection uses {model_id}")


def _load_safetensors(path: Path) -> ClassifierFile:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
        if "weight" not in f.keys():
            raise InvalidClassifierFile(f"{path} has no 'weight' tensor: it is not a localq classifier file")
        weight = f.get_tensor("weight")
        bias = f.get_tensor("bias") if "bias" in f.keys() else np.zeros(1, np.float32)
    weight, bias = checked_layer(weight, bias, str(path))
    declared = meta.get("dim")
    if declared is not None and declared != str(weight.shape[0]):
        raise InvalidClassifierFile(f"{path} says dim {declared} but holds {weight.shape[0]} weights")
    return ClassifierFile(weight, bias, meta.pop("model_id", None), meta)


def _load_npy(path: Path) -> ClassifierFile:
    weight = np.load(path, allow_pickle=False)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if not isinstance(meta, dict):
        raise InvalidClassifierFile(f"{sidecar} is not a JSON object")
    weight, bias = checked_layer(weight, meta.pop("bias", 0.0), str(path))
    return ClassifierFile(weight, bias, meta.pop("model_id", None), meta)


def _load_state_dict(path: Path) -> ClassifierFile:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    keys = [k for k in state if k.endswith("weight")] if isinstance(state, dict) else []
    if (
        len(keys) != 1
        or not isinstance(state[keys[0]], torch.Tensor)
        or state[keys[0]].ndim != 2
        or state[keys[0]].shape[0] != 1
    ):
        raise InvalidClassifierFile(f"{path} is not the state dict of a Linear(dim, 1) layer")
    weight = state[keys[0]].detach().float().numpy()
    bias_key = keys[0][: -len("weight")] + "bias"
    bias = state[bias_key].detach().float().numpy() if bias_key in state else 0.0
    weight, bias = checked_layer(weight, bias, str(path))
    return ClassifierFile(weight, bias, None, {})


def checked_layer(weight, bias, source: str) -> tuple[np.ndarray, float]:
    """(weight [dim] float32, bias float) of a Linear(dim, 1) layer, or InvalidClassifierFile.

    The weight must be exactly [1, dim] or [dim] (a [2, 640] tensor is two layers, not
    one 1280-d vector), finite, non-zero and of a sane norm; the bias one finite number
    (SQLite would store a NaN bias as NULL)."""
    try:
        w = np.asarray(weight)
        b = np.asarray(bias)
    except Exception as exc:  # noqa: BLE001 - whatever the file held, say so in one line
        raise InvalidClassifierFile(f"{source}: weights are not numbers ({exc})") from None
    if w.dtype.kind not in "fiu" or b.dtype.kind not in "fiu":
        raise InvalidClassifierFile(f"{source}: weights of type {w.dtype} are not real numbers")
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 1 or not 1 <= w.shape[0] <= MAX_DIM:
        raise InvalidClassifierFile(f"{source}: weight of shape {list(np.shape(weight))} is not [1, dim] or [dim]")
    if b.size != 1:
        raise InvalidClassifierFile(f"{source}: bias of shape {list(b.shape)} is not one number")
    with np.errstate(all="ignore"):
        w64 = w.astype(np.float64)
        norm = float(np.linalg.norm(w64)) if np.isfinite(w64).all() else float("nan")
        b = float(b.reshape(-1)[0])
    if not np.isfinite(norm):
        raise InvalidClassifierFile(f"{source}: the weights hold NaN or infinite values")
    if norm == 0.0:
        raise InvalidClassifierFile(f"{source}: the weights are all zero")
    if norm > MAX_WEIGHT_NORM or np.abs(w64).max() > np.finfo(np.float32).max:
        raise InvalidClassifierFile(
            f"{source}: the weight norm {norm:.3g} is absurdly large (at most {MAX_WEIGHT_NORM:g})"
        )
    if not np.isfinite(b) or abs(b) > MAX_ABS_BIAS:
        raise InvalidClassifierFile(f"{source}: the bias {b!r} is not a finite number of at most {MAX_ABS_BIAS:g}")
    return w.astype(np.float32), b
