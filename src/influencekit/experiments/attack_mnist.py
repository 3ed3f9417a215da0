"""The MNIST training-set attack problems (used by ``influencekit attack`` and benchmarks/attack):
``Problem``s whose ``extra["victim"]`` is the ``attack.Victim`` that ``attack.run`` perturbs.

* ``top_layer``: a SmallCNN trained on a subsample of all ten MNIST digits, frozen, as feature
  extractor; a logistic-regression top layer on two classes (default 3 vs 8) trained to a
  stationary point on ``n_train`` training images. Perturbations flow through the frozen
  features to the pixels (the stand-in for the paper's Inception + logistic regression Dogfish
  setting, which cannot be had offline: ../shared/data/README.md).
* ``network``: a SmallCNN with two outputs trained end to end on the two classes (smaller
  scale), every parameter in scope; retrained from the warm start.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..errors import ConvergenceWarning
from ..objective import Objective
from ..retrain import minimize
from . import datasets, models
from .attack import NetworkVictim, TopLayerVictim
from .problems import Problem


def _subsample(n: int, size: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(size, n)].sort().values


def top_layer(data_dir: str | os.PathLike | None = None, classes: tuple[int, int] = (3, 8), *,
              n_train: int = 1000, l2: float = 1e-2, cnn_train: int = 8000, cnn_epochs: int = 3,
              hidden: int = 32, seed: int = 0) -> Problem:
    """Frozen SmallCNN features (32-d, trained on ``cnn_train`` images of all ten digits) and a
    logistic-regression head on ``classes``, trained on ``n_train`` images to a stationary point.
    The problem's model is features + head on pixels (influence over the head); test labels 0/1
    are the two classes in the order given; s_test exact."""
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
    features = copy.deepcopy(cnn.features).eval().requires_grad_(False)
    model = nn.Sequential(OrderedDict(features=features, head=copy.deepcopy(head).float().eval()))
    notes = (f"frozen SmallCNN features (trained on {len(idx)} MNIST images, all digits, {cnn_epochs} epochs); "
             f"logistic-regression head on {classes[0]} vs {classes[1]}, n = {len(Xtr)} training images "
             f"(subsampled), l2 = {l2}")
    return Problem("mnist-attack-top-layer", model, "logistic", (Xtr, ytr), (Xte, yte.double()), l2, solver="exact",
                   params=[f"head.{k}" for k, _ in head.named_parameters()], notes=notes,
                   extra={"victim": victim, "classes": classes, "setting": "top-layer"})


def network(data_dir: str | os.PathLike | None = None, classes: tuple[int, int] = (3, 8), *,
            n_train: int = 200, l2: float = 1e-2, epochs: int = 30, damping: float = 1e-2,
            max_iter: int = 100, seed: int = 0) -> Problem:
    """A SmallCNN (two outputs, cross-entropy) trained on ``n_train`` images of ``classes``, then
    L-BFGS towards a stationary point; every parameter in scope (s_test by CG with ``damping``)."""
    Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes)
    keep = _subsample(len(Xtr), n_train, seed + 1)
    Xtr, ytr = Xtr[keep], ytr[keep]
    torch.manual_seed(seed)
    net = models.SmallCNN(2)
    models.train(net, "cross_entropy", Xtr, ytr, l2=l2, epochs=epochs, lr=3e-3, seed=seed)
    obj = Objective(net, "cross_entropy", (Xtr, ytr), l2=l2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net = obj.to_model(minimize(obj, grad_tol=1e-6, max_iter=500)).eval()
    victim = NetworkVictim(net, "cross_entropy", Xtr, ytr, l2=l2, max_iter=max_iter)
    notes = (f"whole SmallCNN ({obj.p} parameters) on {classes[0]} vs {classes[1]}, n = {len(Xtr)} training "
             f"images (subsampled), l2 = {l2}; retrained from warm start by L-BFGS (<= {max_iter} iterations); "
             f"s_test by CG, damping {damping}")
    return Problem("mnist-attack-network", net, "cross_entropy", (Xtr, ytr), (Xte, yte), l2, damping=damping,
                   solver="cg", expect_stationary=False, notes=notes,
                   extra={"victim": victim, "classes": classes, "setting": "network"})
