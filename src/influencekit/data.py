"""Training and test data in one shape: an indexable set of (x, y) pairs, streamed in batches.

Users hand in a tuple of tensors ``(X, Y)``, a ``torch.utils.data.Dataset`` whose items are
``(x, y)``, or a ``DataLoader`` (its dataset is used; influence needs a fixed order and its own
batch size, so the loader's sampler is ignored). Everything downstream sees ``Examples``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from .errors import InputError, NonFiniteError

DataLike = Union[tuple, list, Dataset, DataLoader, "Examples"]


class Examples:
    """n examples, in a fixed order, that can be read as batches or by index.

    ``batches(b)`` yields ``(start, x, y)`` with x: [B, ...], y: [B, ...]; the memory it holds is
    one batch, whatever n is.
    """

    def __init__(self, data: DataLike, *, name: str = "data", check_finite: bool = True):
        self.name = name
        if isinstance(data, Examples):
            self.x, self.y, self.dataset = data.x, data.y, data.dataset
        elif isinstance(data, DataLoader):
            self.x = self.y = None
            self.dataset = data.dataset
        elif isinstance(data, (tuple, list)):
            if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
                raise InputError(f"{name} must be a pair of tensors (X, Y), a Dataset of (x, y) items "
                                 f"or a DataLoader; got a {type(data).__name__} of length {len(data)}.")
            x, y = data
            if x.dim() == 0 or y.dim() == 0:
                raise InputError(f"{name}: X and Y need a leading example dimension, got shapes {tuple(x.shape)} and "
                                 f"{tuple(y.shape)}; for one example pass X[i:i+1], Y[i:i+1].")
            if x.shape[0] != y.shape[0]:
                raise InputError(f"{name}: X has {x.shape[0]} rows but Y has {y.shape[0]}; "
                                 "give one label per example.")
            self.x, self.y, self.dataset = x, y, None
        elif isinstance(data, Dataset):
            self.x = self.y = None
            self.dataset = data
        else:
            raise InputError(f"{name} must be a pair of tensors (X, Y), a Dataset or a DataLoader; "
                             f"got {type(data).__name__}.")
        if len(self) == 0:
            raise InputError(f"{name} is empty; influence needs at least one example.")
        if check_finite and self.x is not None:
            for label, t in (("inputs", self.x), ("labels", self.y)):
                if t.is_floating_point() and not torch.isfinite(t).all():
                    bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).nonzero().flatten()
                    raise NonFiniteError(f"{name} {label} contain NaN or inf at rows "
                                         f"{bad[:10].tolist()}; remove or impute them first.")

    def __len__(self) -> int:
        return self.x.shape[0] if self.x is not None else len(self.dataset)  # type: ignore[arg-type]

    def take(self, index: Tensor | list[int] | slice) -> tuple[Tensor, Tensor]:
        """The examples at ``index`` as a batch (x [B, ...], y [B, ...])."""
        if self.x is not None:
            if isinstance(index, list):
                index = torch.as_tensor(index, dtype=torch.long)
            return self.x[index], self.y[index]
        if isinstance(index, slice):
            index = list(range(len(self)))[index]
        elif isinstance(index, Tensor):
            index = index.tolist()
        items = [self.dataset[i] for i in index]  # type: ignore[index]
        x, y = default_collate(items)
        return x, y

    def batches(self, batch_size: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Yield (start, x, y) over all examples in order."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        n = len(self)
        for start in range(0, n, batch_size):
            x, y = self.take(slice(start, min(start + batch_size, n)))
            yield start, x, y

    def subset(self, index: Tensor | list[int]) -> Examples:
        """The examples at ``index`` as a new (materialised) Examples."""
        x, y = self.take(index if not isinstance(index, Tensor) else index.tolist())
        return Examples((x, y), name=self.name, check_finite=False)

    def without(self, i: int) -> Examples:
        """All examples but the i-th (for leave-one-out retraining)."""
        keep = [j for j in range(len(self)) if j != i]
        return self.subset(keep)
