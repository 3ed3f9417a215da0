"""Feature embeddings and a FAISS nearest-neighbour index over the training points.

The embedding is the model's penultimate activations by default (``model.features`` for the
``influencekit.models`` models), or a user-given function, or a user-given matrix. The index is
exact (``IndexFlatL2``) by default; ``ivf`` (inverted lists, approximate) and ``hnsw`` (graph,
approximate) trade recall of the true neighbours for speed on large n.

Saved as ``<name>.faiss`` (``faiss.write_index``) plus ``<name>.json`` (kind, shape, and a
fingerprint of the model and the data); ``load_or_build`` reuses the saved index only when the
fingerprint matches, and rebuilds it otherwise. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data import DataLike, Examples
from ..errors import CacheError, InputError

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("l2", "ip")  # squared Euclidean distance (nearest first) / inner product (largest first)
FORMAT = 1  # bump when the saved layout changes


def embed(model: nn.Module | None, data: DataLike | Tensor, *, fn: Callable[[Tensor], Tensor] | None = None,
          batch_size: int = 1024) -> Tensor:
    """Feature embeddings [n, d] (float32, CPU) of the inputs of ``data``.

    ``fn(x [B, ...]) -> [B, d]`` if given, else ``model.features``; a Tensor ``data`` is taken as
    already-computed features and returned as float32 [n, d].
    """
    if isinstance(data, Tensor):
        if data.dim() != 2:
            raise InputError(f"a feature matrix must be [n, d], got shape {tuple(data.shape)}.")
        return data.detach().float().cpu()
    if fn is None:
        fn = getattr(model, "features", None)
        if fn is None:
            raise InputError(f"{type(model).__name__} has no `features` module; pass fn=<embedding function> "
                             "or a feature matrix [n, d].")
    ex = Examples(data, name="data to embed", check_finite=False)
    dtype = next(model.parameters()).dtype if model is not None and any(True for _ in model.parameters()) else None
    out = []
    with torch.no_grad():
        for _, x, _y in ex.batches(batch_size):
            f = fn(x.to(dtype) if dtype is not None and x.is_floating_point() else x)
            out.append(f.reshape(f.shape[0], -1).float().cpu())
    return torch.cat(out)


def fingerprint(*parts: nn.Module | Tensor | str | float | int | None) -> str:
    """SHA-256 hex digest of models (architecture, parameter and buffer values, via
    ``influencekit.fingerprint.fingerprint_model``), tensors (dtype, shape, bytes) and plain values, in order.
    Any change in weights or data gives another fingerprint."""
    from ..fingerprint import fingerprint_model

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, nn.Module):
            h.update(fingerprint_model(part).encode())
        elif isinstance(part, Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(part).encode())
        h.update(b"|")
    return h.hexdigest()


class KNNIndex:
    """k nearest training points of query features: smallest squared Euclidean distance
    (``metric="l2"``, default) or largest inner product (``metric="ip"``, for the gradient
    prefilter in ``fastif.gradients``).

    Args:
        features: training embeddings [n, d].
        kind: ``flat`` (exact, default), ``ivf`` (nlist inverted lists, nprobe searched) or
            ``hnsw`` (M links per node, ef_search candidates).
        nlist, nprobe, M, ef_search: the approximate indexes' knobs.
    """

    def __init__(self, features: Tensor | None = None, *, kind: str = "flat", metric: str = "l2",
                 nlist: int | None = None, nprobe: int = 16, M: int = 32, ef_search: int = 128):
        if kind not in KINDS:
            raise InputError(f"index kind must be one of {KINDS}, got {kind!r}.")
        if metric not in METRICS:
            raise InputError(f"index metric must be one of {METRICS}, got {metric!r}.")
        self.metric = metric
        self.kind, self.nlist, self.nprobe, self.M, self.ef_search = kind, nlist, nprobe, M, ef_search
        self.index = None
        self.meta: dict = {}
        if features is not None:
            self.build(features)

    def build(self, features: Tensor) -> KNNIndex:
        import faiss

        X = _as_float32(features)
        n, d = X.shape
        ip = self.metric == "ip"
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
        elif self.kind == "ivf":
            nlist = self.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 points per list
            quantizer = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
            index.train(X)
            index.nprobe = min(self.nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(d, self.M, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
            index.hnsw.efSearch = self.ef_search
        index.add(X)
        self.index = index
        self.meta.update({"kind": self.kind, "metric": self.metric, "n": n, "d": d})
        return self

    @property
    def n(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(scores [m, k] float32, training indices [m, k] int64), best first: squared distances
        ascending (l2) or inner products descending (ip)."""
        if self.index is None:
            raise InputError("the index is empty; build it from training features first.")
        if not 1 <= k <= self.n:
            raise InputError(f"k must be in [1, n = {self.n}], got {k}.")
        Q = _as_float32(queries)
        if Q.shape[1] != self.index.d:
            raise InputError(f"query features have d = {Q.shape[1]} but the index was built with d = {self.index.d}; "
                             "embed test and training points with the same function.")
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, k)  # HNSW returns at most efSearch results
        D, idx = self.index.search(Q, k)
        if (idx < 0).any():
            raise InputError(f"the {self.kind} index returned fewer than k = {k} neighbours; raise nprobe (IVF) or "
                             "use kind='flat'.")
        return torch.from_numpy(D), torch.from_numpy(idx.astype(np.int64))

    def save(self, path: str | os.PathLike, fingerprint: str = "") -> None:
        """Write ``path.faiss`` and ``path.json`` (each via a temporary file and rename)."""
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": FORMAT, "fingerprint": fingerprint, "nprobe": self.nprobe,
                "M": self.M, "ef_search": self.ef_search}
        tmp = path.with_suffix(".faiss.tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path.with_suffix(".faiss"))
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path.with_suffix(".json"))  # the JSON last: its presence marks a complete save
        self.meta = meta

    @classmethod
    def load(cls, path: str | os.PathLike) -> KNNIndex:
        import faiss

        path = Path(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            index = faiss.read_index(str(path.with_suffix(".faiss")))
        except (OSError, ValueError, RuntimeError) as e:
            raise CacheError(f"cannot read the saved index at {path}.faiss/.json ({e}); delete both files to "
                             "rebuild it.") from None
        if meta.get("format") != FORMAT or index.ntotal != meta.get("n"):
            raise CacheError(f"the saved index at {path} has another format or size than its metadata; delete "
                             f"{path}.faiss and {path}.json to rebuild it.")
        out = cls(kind=meta["kind"], metric=meta.get("metric", "l2"), nprobe=meta.get("nprobe", 16),
                  M=meta.get("M", 32), ef_search=meta.get("ef_search", 128))
        out.index, out.meta = index, meta
        return out


def load_or_build(path: str | os.PathLike | None, features: Callable[[], Tensor], fingerprint: str, *,
                  kind: str = "flat", metric: str = "l2", **options) -> tuple[KNNIndex, bool]:
    """The index saved at ``path`` if its fingerprint, kind and metric match, else a new one
    built from ``features()`` (called only then) and saved there. Returns (index, rebuilt)."""
    if path is not None and Path(path).with_suffix(".json").exists():
        try:
            old = KNNIndex.load(path)
        except CacheError:
            old = None  # unreadable: rebuild over it
        if old is not None and old.meta.get("fingerprint") == fingerprint and old.kind == kind \
                and old.metric == metric:
            return old, False
    index = KNNIndex(features(), kind=kind, metric=metric, **options)
    if path is not None:
        index.save(path, fingerprint)
    return index, True


def _as_float32(t: Tensor | np.ndarray) -> np.ndarray:
    a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
    if a.ndim != 2:
        raise InputError(f"features must be [n, d], got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise InputError("features contain NaN or inf; check the model / embedding function.")
    return np.ascontiguousarray(a, dtype=np.float32)
