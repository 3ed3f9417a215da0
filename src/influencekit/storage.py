"""Files on disk that can be trusted: atomic writes, safetensors + JSON, checksums, fingerprints.

Layout of one stored record ``NAME``:

* ``NAME.safetensors``: the tensors (safetensors, never pickle).
* ``NAME.json``: metadata: the caller's settings and fingerprints, the shape and dtype of every
  tensor, the sign convention, the file's size and SHA-256 checksum.

The tensor file is written first and the JSON last, each atomically (temp file in the same
folder, fsync, ``os.replace``): a record whose JSON exists is complete, and a process killed
mid-write leaves at most a stray ``.*.tmp`` file, never a half-written record.

Loading verifies the checksum, then that the stored metadata equals what the caller expects,
and raises ``CacheError`` saying which of these failed: tampered/truncated file, other
settings, other model, other data.

Fingerprints of models and data: ``influencekit.fingerprint``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .errors import CacheError
from .fingerprint import jsonable, sha256

FORMAT = "influencekit-record/1"
#: metadata keys compared on load, and the words used when they differ
_KINDS = {"model": "another model", "data": "other data", "test": "other test data"}


# ---- atomic files -----------------------------------------------------------------------
def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a
    part: temp file in the same folder (same file system), fsync, ``os.replace``, fsync folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the ``.*.tmp`` files a killed ``atomic_write`` left in ``folder``; returns how many."""
    count = 0
    for f in Path(folder).glob(".*.tmp"):
        f.unlink(missing_ok=True)
        count += 1
    return count


# ---- records ----------------------------------------------------------------------------
def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def exists(path: str | os.PathLike) -> bool:
    """Whether a complete record (its JSON, written last) is at ``path``."""
    return _paths(path)[1].exists()


def save(path: str | os.PathLike, tensors: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None) -> Path:
    """Store ``tensors`` at ``path`` (``.safetensors``) with ``meta`` (JSON-able settings and
    fingerprints) in ``path.json``, both atomically, the JSON last. Returns the JSON path."""
    from .convention import SIGN_CONVENTION

    tpath, jpath = _paths(path)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    record = {
        "format": FORMAT,
        "file": tpath.name,
        "bytes": len(blob),
        "sha256": sha256(blob),
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()},
        "sign_convention": SIGN_CONVENTION,
        "meta": jsonable(dict(meta or {})),
    }
    atomic_write(tpath, blob)
    atomic_write(jpath, json.dumps(record, indent=1, sort_keys=True).encode())
    return jpath


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record at ``path`` (raises ``CacheError`` if missing or unreadable)."""
    _, jpath = _paths(path)
    try:
        record = json.loads(jpath.read_text())
    except FileNotFoundError:
        raise CacheError(f"{jpath} does not exist: the record was never completed; compute it again.") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheError(f"{jpath} is not valid JSON ({e}): the file is truncated or was edited; "
                         "delete it and compute the record again.") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise CacheError(f"{jpath} is not an influencekit record (format {found!r} instead of {FORMAT!r}); "
                         "point to the right folder or delete it.")
    lacking = [k for k in ("bytes", "sha256", "tensors", "meta") if k not in record]
    if lacking:
        raise CacheError(f"{jpath} lacks the fields {lacking}: it was edited or truncated; delete it and compute "
                         "the record again.")
    return record


def check_meta(found: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Raise ``CacheError`` naming the first key whose stored value differs from the expected one:
    another model / other data for fingerprint keys, other settings for the rest."""
    expected = jsonable(dict(expected))
    for key, want in expected.items():
        have = found.get(key, "<missing>")
        if have != want:
            kind = _KINDS.get(key, "other settings")
            detail = "" if key in _KINDS else f": stored {have!r}, requested {want!r}"
            raise CacheError(f"{where} was made with {kind} ({key!r} differs{detail}); use another output "
                             "folder, or delete this one to recompute with the current model, data and settings.")


def load(path: str | os.PathLike, expect: Mapping[str, Any] | None = None,
         device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a record written by ``save``: (tensors, meta).

    Verifies the size and SHA-256 of the tensor file, the tensor shapes/dtypes, and that every
    key of ``expect`` has the same value in the stored meta; raises ``CacheError`` otherwise.
    """
    tpath, jpath = _paths(path)
    record = read_meta(path)
    try:
        blob = tpath.read_bytes()
    except FileNotFoundError:
        raise CacheError(f"{tpath} is missing although {jpath.name} exists; delete {jpath.name} and "
                         "compute the record again.") from None
    if len(blob) != record["bytes"]:
        raise CacheError(f"{tpath} has {len(blob)} bytes but {record['bytes']} were written: the file is "
                         "truncated or was replaced; delete it and its .json and compute it again.")
    if sha256(blob) != record["sha256"]:
        raise CacheError(f"{tpath} fails its SHA-256 check: the file was modified or corrupted after it was "
                         "written; delete it and its .json and compute it again.")
    try:
        tensors = st_load(blob)
    except SafetensorError as e:  # checksum passed, so only a mismatched .json could get here
        raise CacheError(f"{tpath} is not a valid safetensors file ({e}); delete it and compute it again.") from None
    described = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()}
    if described != record["tensors"]:
        raise CacheError(f"{tpath} holds other tensors than {jpath.name} describes; delete both and recompute.")
    if expect:
        check_meta(record["meta"], expect, str(tpath))
    return {k: v.to(device) for k, v in tensors.items()}, record["meta"]
