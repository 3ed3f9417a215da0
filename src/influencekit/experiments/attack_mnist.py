"""The MNIST training-set attack settings (used by ``influencekit attack`` and
benchmarks/attack), and the before / after / difference figure.

* ``top_layer_setting``: a SmallCNN trained on a subsample of all ten MNIST digits, frozen, as
  feature extractor; a logistic-regression top layer on two classes (default 3 vs 8) trained to
  a stationary point on ``n_train`` training images. Perturbations flow through the frozen
  features to the pixels (the stand-in for the paper's Inception + logistic regression
  Dogfish setting, which cannot be had offline: ../shared/data/README.md).
* ``network_setting``: a SmallCNN with two outputs trained end to end on the two classes
  (smaller scale), every parameter in scope; retrained from the warm start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..objective import Objective
from ..retrain import minimize
from . import datasets, models
from .attack import AttackResult, NetworkVictim, TopLayerVictim, Victim


@dataclass
class Setting:
    """A victim and its held-out test set (x_test [m, 1, 28, 28], y_test [m]); labels 0/1 are
    the two classes in the order given."""

    victim: Victim
    x_test: Tensor
    y_test: Tensor
    classes: tuple[int, int]
    notes: str
    solver: str
    damping: float


def _subsample(n: int, size: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(size, n)].sort().values


def top_layer_setting(data_dir: str | os.PathLike | None = None, classes: tuple[int, int] = (3, 8), *,
                      n_train: int = 1000, l2: float = 1e-2, cnn_train: int = 8000, cnn_epochs: int = 3,
                      hidden: int = 32, seed: int = 0) -> Setting:
    """Frozen SmallCNN features (32-d, trained on ``cnn_train`` images of all ten digits) and a
    logistic-regression head on ``classes``, trained on ``n_train`` images to a stationary point."""
    Xa, ya, _, _ = datasets.mnist(data_dir)
    torch.manual_seed(seed)
    cnn = models.SmallCNN(10, hidden=hidden)
    idx = _subsample(len(Xa), cnn_train, seed)
    models.train(cnn, "cross_entropy", Xa[idx], ya[idx], epochs=cnn_epochs, lr=3e-3, seed=seed)
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes)
    keep = _subsample(len(Xtr), n_train, seed + 1)
    Xtr, ytr = Xtr[keep], ytr[keep].double()
    head = models.LogisticRegression(cnn.head.in_features).double()
    with torch.no_grad():
        F = cnn.features(Xtr).double()
    obj = Objective(head, "logistic", (F, ytr), l2=l2)
    head = obj.to_model(minimize(obj, newton_steps=1))
    victim = TopLayerVictim(cnn.features, head, "logistic", Xtr, ytr, l2=l2)
    notes = (f"frozen SmallCNN features (trained on {len(idx)} MNIST images, all digits, {cnn_epochs} epochs); "
             f"logistic-regression head on {classes[0]} vs {classes[1]}, n = {len(Xtr)} training images "
             f"(subsampled), l2 = {l2}")
    return Setting(victim, Xte, yte.double(), classes, notes, "exact", 0.0)


def network_setting(data_dir: str | os.PathLike | None = None, classes: tuple[int, int] = (3, 8), *,
                    n_train: int = 200, l2: float = 1e-2, epochs: int = 30, damping: float = 1e-2,
                    max_iter: int = 100, seed: int = 0) -> Setting:
    """A SmallCNN (two outputs, cross-entropy) trained on ``n_train`` images of ``classes``, then
    L-BFGS towards a stationary point; every parameter in scope (s_test by CG with damping)."""
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes)
    keep = _subsample(len(Xtr), n_train, seed + 1)
    Xtr, ytr = Xtr[keep], ytr[keep]
    torch.manual_seed(seed)
    net = models.SmallCNN(2)
    models.train(net, "cross_entropy", Xtr, ytr, l2=l2, epochs=epochs, lr=3e-3, seed=seed)
    obj = Objective(net, "cross_entropy", (Xtr, ytr), l2=l2)
    import warnings

    from ..errors import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net = obj.to_model(minimize(obj, grad_tol=1e-6, max_iter=500)).eval()
    victim = NetworkVictim(net, "cross_entropy", Xtr, ytr, l2=l2, max_iter=max_iter)
    notes = (f"whole SmallCNN ({obj.p} parameters) on {classes[0]} vs {classes[1]}, n = {len(Xtr)} training "
             f"images (subsampled), l2 = {l2}; retrained from warm start by L-BFGS (<= {max_iter} iterations); "
             f"s_test by CG, damping {damping}")
    return Setting(victim, Xte, yte, classes, notes, "cg", damping)


def correct_targets(setting: Setting, count: int, seed: int = 0) -> Tensor:
    """Indices of ``count`` random correctly classified test points: [count]."""
    v = setting.victim
    ok = (v.predict(v.theta, setting.x_test) == setting.y_test.long()).nonzero().flatten()
    return ok[torch.randperm(len(ok), generator=torch.Generator().manual_seed(seed))[:count]]


def save_figure(result: AttackResult, x_target: Tensor, path: str | os.PathLike, title: str = "") -> Path:
    """PNG: the target test image, then per perturbed training image: original / perturbed /
    difference (scaled to +-bound). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(result.index)
    fig, axes = plt.subplots(k + 1, 3, figsize=(6, 2 * (k + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(x_target[0].reshape(28, 28).float(), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"target (label {result.label})", fontsize=8)
    axes[0, 1].text(0, 0.5, f"prediction {result.prediction_before} -> {result.prediction_after}\n"
                    f"flipped: {result.flipped}\nloss {result.loss_before:.3f} -> {result.loss_after:.3f}",
                    fontsize=8)
    d = result.delta
    scale = max(float(d.abs().max()), 1e-12)
    for r in range(k):
        before, after, diff = (t[r].reshape(28, 28).float() for t in (result.x_before, result.x_after, d))
        axes[r + 1, 0].imshow(before, cmap="gray", vmin=0, vmax=1)
        axes[r + 1, 1].imshow(after, cmap="gray", vmin=0, vmax=1)
        axes[r + 1, 2].imshow(diff, cmap="seismic", vmin=-scale, vmax=scale)
        axes[r + 1, 0].set_title(f"train #{int(result.index[r])} original", fontsize=8)
        axes[r + 1, 1].set_title("perturbed", fontsize=8)
        axes[r + 1, 2].set_title(f"difference (+-{scale * 255:.0f}/255)", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
