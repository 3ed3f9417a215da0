"""The models the ``topk`` / ``tune`` commands and the FastIF benchmark run on, built inline.

* ``digits``: an MLP (64 -> 32 tanh -> 10) on scikit-learn's bundled digits, float64, trained with
  Adam and polished to a stationary point of (1/n) sum CE + (l2/2)||theta||^2 (seconds).
* ``mnist``: ``models.SmallCNN`` on the first ``n_train`` MNIST training images (default all
  60,000), float32, a few epochs of Adam; a network is not at an exact minimum, so influence
  uses damping (Koh & Liang used 0.01 for their CNN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError
from . import datasets
from .models import MLP, SmallCNN, train


@dataclass
class Setup:
    name: str
    model: nn.Module
    loss: str
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    l2: float
    damping: float
    notes: str


def build(dataset: str = "digits", *, data_dir: str | None = None, n_train: int | None = None,
          epochs: int | None = None, seed: int = 0) -> Setup:
    """A trained model with its data (see module docstring); ``dataset`` is digits or mnist."""
    torch.manual_seed(seed)
    epochs = {"digits": 10, "mnist": 3}.get(dataset, 0) if epochs is None else epochs
    if dataset == "digits":
        from ..objective import Objective
        from ..retrain import minimize

        Xtr, ytr, Xte, yte = datasets.digits(classes=None, seed=seed)
        if n_train:
            Xtr, ytr = Xtr[:n_train], ytr[:n_train]
        l2 = 1e-3
        model = train(MLP(64, (32,), 10).double(), "cross_entropy", Xtr, ytr, l2=l2, epochs=epochs,
                      batch_size=64, lr=1e-2, seed=seed)
        obj = Objective(model, "cross_entropy", (Xtr, ytr), l2=l2, batch_size=2048)
        model = obj.to_model(minimize(obj, grad_tol=1e-6, max_iter=300)).eval()
        return Setup("digits-mlp", model, "cross_entropy", (Xtr, ytr), (Xte, yte), l2, 1e-2,
                     f"MLP 64-32-10 (tanh), digits, n = {len(Xtr)}, float64, stationary point, l2 = {l2}, damping 0.01")
    if dataset == "mnist":
        Xtr, ytr, Xte, yte = datasets.mnist(data_dir)
        Xtr, ytr = Xtr[: n_train or len(Xtr)], ytr[: n_train or len(Xtr)]
        l2 = 1e-3
        model = train(SmallCNN(), "cross_entropy", Xtr, ytr, l2=l2, epochs=epochs, batch_size=128,
                      lr=3e-3, seed=seed)
        return Setup("mnist-cnn", model, "cross_entropy", (Xtr, ytr), (Xte, yte), l2, 1e-2,
                     f"SmallCNN (11,978 params), MNIST n = {len(Xtr)}, float32, Adam {epochs} epochs, "
                     f"l2 = {l2}, damping 0.01")
    raise InputError(f"dataset must be 'digits' or 'mnist', got {dataset!r}.")


def add_setup_arguments(p) -> None:
    """The flags that choose and train the model (shared by ``topk`` and ``tune``)."""
    p.add_argument("--dataset", default="auto", choices=("auto", "digits", "mnist"),
                   help="digits (bundled, default) or mnist (needs mnist.npz; the default when --data-dir is given)")
    p.add_argument("--n-train", type=int, default=None, help="use the first N training points (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: digits 10, mnist 3)")
    p.add_argument("--test-index", type=int, nargs="+", default=[0, 1, 2], help="test points to explain")


def setup_from_args(args) -> Setup:
    dataset = args.dataset if args.dataset != "auto" else ("mnist" if args.data_dir else "digits")
    s = build(dataset, data_dir=args.data_dir, n_train=args.n_train, epochs=args.epochs, seed=args.seed)
    bad = [i for i in args.test_index if not 0 <= i < len(s.test[0])]
    if bad:
        raise InputError(f"--test-index {bad} out of range; the {s.name} test set has {len(s.test[0])} points.")
    return s
