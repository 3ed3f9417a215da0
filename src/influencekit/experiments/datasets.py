"""Loaders for the bundled and shared real datasets. Nothing here downloads anything.

* scikit-learn's bundled digits (always available; the default demo data);
* the files of ``shared/data`` (MNIST, Enron1 spam, diabetes readmission, Spambase), read from
  a folder: the ``path`` argument (``--data-dir``), else ``$INFLUENCEKIT_DATA``, else
  ``../shared/data`` relative to the working directory (the layout beside a checkout).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

Split = tuple[Tensor, Tensor, Tensor, Tensor]


#: where ``data_dir`` looks when no folder is named, relative to the working directory
DEFAULT_DATA_DIR = Path("../shared/data")


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding the shared data files: ``path`` (``--data-dir``), else ``$INFLUENCEKIT_DATA``,
    else ``DEFAULT_DATA_DIR`` relative to the working directory. A folder that is named but missing
    is an error, never silently replaced by another."""
    named = path if path is not None else os.environ.get("INFLUENCEKIT_DATA") or None
    if named is not None:
        if not Path(named).is_dir():
            how = "--data-dir" if path is not None else "INFLUENCEKIT_DATA"
            raise InputError(f"data folder {named} ({how}) does not exist; name the folder holding the data files.")
        return Path(named).resolve()
    default = Path.cwd() / DEFAULT_DATA_DIR
    if default.is_dir():
        return default.resolve()
    raise InputError(f"no data folder named and {default.resolve()} (../shared/data from the working directory) "
                     "does not exist; pass the folder holding the data files (mnist.npz, ...) with --data-dir DIR "
                     "or set INFLUENCEKIT_DATA.")


def _file(name: str, path: str | os.PathLike | None) -> Path:
    p = Path(path) if path is not None and Path(path).is_file() else data_dir(path) / name
    if not p.exists():
        raise InputError(f"{p} not found; pass the folder holding {name} (--data-dir) or set INFLUENCEKIT_DATA.")
    return p


def _binary(y: np.ndarray, classes: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Mask of rows in ``classes`` and labels re-indexed 0..len(classes)-1 in the order given."""
    if classes is None:
        return np.ones(len(y), bool), y
    mask = np.isin(y, classes)
    lut = {c: i for i, c in enumerate(classes)}
    return mask, np.array([lut[v] for v in y[mask]])


def digits(classes: tuple[int, ...] | None = (1, 7), test_fraction: float = 0.3, seed: int = 0,
           dtype: torch.dtype = torch.float64) -> Split:
    """scikit-learn's bundled 8x8 digits, pixels scaled to [0, 1], flattened to 64 features.
    Labels are re-indexed to 0..len(classes)-1 (for (1, 7): 1 -> 0, 7 -> 1). Returns
    (X_train [n, 64], y_train [n], X_test, y_test), a seeded stratified-by-shuffle split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    mask, y = _binary(d.target, classes)
    X = d.data[mask] / 16.0
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    te, tr = perm[:n_test], perm[n_test:]
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return t(X[tr]), torch.as_tensor(y[tr]), t(X[te]), torch.as_tensor(y[te])


def mnist(path: str | os.PathLike | None = None, classes: tuple[int, ...] | None = None, *,
          flatten: bool = False, dtype: torch.dtype = torch.float32) -> Split:
    """MNIST from ``mnist.npz``: pixels scaled to [0, 1]; images [n, 1, 28, 28] (or [n, 784] with
    ``flatten``); labels re-indexed to 0..len(classes)-1 when ``classes`` is given."""
    with np.load(_file("mnist.npz", path), allow_pickle=False) as f:
        arrays = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    out = []
    for x, y in (arrays[:2], arrays[2:]):
        mask, yy = _binary(y.astype(np.int64), classes)
        x = x[mask].astype(np.float32) / 255.0
        x = x.reshape(len(x), -1) if flatten else x[:, None]
        out += [torch.as_tensor(x).to(dtype), torch.as_tensor(yy)]
    return tuple(out)  # type: ignore[return-value]


def spambase(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """UCI Spambase: features [4601, 57] float, labels [4601] (1 = spam), column names."""
    import pandas as pd

    df = pd.read_csv(_file("spambase.csv.gz", path))
    return df.iloc[:, :-1].to_numpy(np.float64), df.iloc[:, -1].to_numpy(np.int64), list(df.columns[:-1])


def enron(path: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray]:
    """Enron1 raw emails (Latin-1 text, subject first) and labels (1 = spam), in file-name order."""
    texts = {}
    # one pass in archive order: reading members out of order makes a gzip stream seek backwards,
    # i.e. decompress again from the start for every email
    with tarfile.open(_file("enron1.tar.gz", path), mode="r:gz") as tf:
        for m in tf:
            if m.isfile() and ("/ham/" in m.name or "/spam/" in m.name):
                texts[m.name] = tf.extractfile(m).read().decode("latin-1")  # type: ignore[union-attr]
    names = sorted(texts)
    return [texts[k] for k in names], np.array([int("/spam/" in k) for k in names], dtype=np.int64)


def diabetes(path: str | os.PathLike | None = None):
    """The diabetes 130-US hospitals readmission table (pandas DataFrame, '?' read as missing)."""
    import zipfile

    import pandas as pd

    with zipfile.ZipFile(_file("dataset_diabetes.zip", path)) as z:
        with z.open("dataset_diabetes/diabetic_data.csv") as f:
            return pd.read_csv(f, na_values="?", low_memory=False)
