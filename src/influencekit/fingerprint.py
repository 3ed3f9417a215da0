"""What identifies a model, a loss and a data set: SHA-256 fingerprints that results are stored under.

* model: SHA-256 of the architecture (``repr(model)``) and the name, shape, dtype and bytes of
  every parameter and buffer; any changed weight gives another fingerprint.
* data: SHA-256 of the number of rows, the example shape/dtype and the bytes of the rows.
  With tensors in memory all rows are hashed (about 1 GB/s: a second for MNIST). Data behind a
  ``Dataset`` may be slow to read, so by default only ``sample`` evenly spaced rows (always
  including the first and the last) are hashed: O(sample) time, but a change confined to rows
  that are not sampled goes unnoticed. Pass ``sample=None`` to hash every row of a Dataset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .data import DataLike, Examples
from .errors import InputError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jsonable(obj: Any) -> Any:
    """Settings as plain JSON values (dtypes, tuples, paths become strings/lists)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}:{t.numel()};".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().tobytes())


def fingerprint_model(model: nn.Module, tensors: Mapping[str, Tensor] | None = None) -> str:
    """SHA-256 of the architecture (``repr(model)``) and of every parameter and buffer (name,
    shape, dtype, values). ``tensors`` overrides the values (e.g. an ``Objective``'s theta in
    scope plus its fixed tensors); default: the module's own state."""
    h = hashlib.sha256(repr(model).encode())
    state = dict(tensors) if tensors is not None else {**dict(model.named_parameters()),
                                                      **dict(model.named_buffers())}
    for name in sorted(state):
        h.update(f"|{name}:{tuple(state[name].shape)}:".encode())
        _hash_tensor(h, state[name])
    return h.hexdigest()


def describe(obj: Any) -> str:
    """A description of a function or object that is the same in every process (a plain repr
    may hold a memory address): module.qualname, plus the attributes of an instance."""
    if obj is None:
        return "None"
    if hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    text = repr(obj)
    if " at 0x" not in text:
        return text
    attrs = json.dumps(jsonable(getattr(obj, "__dict__", {})), sort_keys=True)
    return f"{type(obj).__module__}.{type(obj).__qualname__}{attrs}"


def fingerprint_objective(objective: Any) -> str:
    """Fingerprint of an ``Objective``'s model at its theta (parameters in scope and fixed ones),
    names in scope, loss, l2 and dtype: everything the Hessian and gradients depend on but data."""
    tensors = {**objective.unflatten(objective.theta), **objective.fixed}
    extra = json.dumps({"scope": objective.names, "loss": describe(objective.loss_fn), "l2": objective.l2,
                        "dtype": str(objective.dtype)}, sort_keys=True)
    return sha256((fingerprint_model(objective.model, tensors) + extra).encode())


def fingerprint_data(data: DataLike, sample: int | None = 256) -> str:
    """SHA-256 of the data: row count, example shape/dtype and row bytes (inputs and labels).

    In-memory tensors are always hashed in full. A ``Dataset`` is hashed on ``sample`` evenly
    spaced rows (first and last included), or in full with ``sample=None``; see the module
    docstring for the trade-off.
    """
    ex = data if isinstance(data, Examples) else Examples(data, check_finite=False)
    n = len(ex)
    h = hashlib.sha256(f"n={n};".encode())
    if ex.x is not None or sample is None or sample >= n:
        for _, x, y in ex.batches(4096):
            _hash_tensor(h, x)
            _hash_tensor(h, y)
        h.update(b"full")
    else:
        if sample < 2:
            raise InputError(f"sample must be >= 2 rows (or None for all rows), got {sample}.")
        idx = torch.linspace(0, n - 1, sample).round().long().unique().tolist()
        x, y = ex.take(idx)
        _hash_tensor(h, x)
        _hash_tensor(h, y)
        h.update(f"sample={sample}".encode())
    return h.hexdigest()
