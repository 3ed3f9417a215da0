"""Find flipped training labels by self-influence (Koh & Liang, Sec. 5.4).

Flip a fraction of the training labels, fit, then check labels in the order of a ranking:
|I_up,loss(z_i, z_i)| (self-influence: how much a point props up its own fit), the training
loss, or at random. The detection curve is the fraction of flipped labels found against the
fraction of the training data checked; fixing the checked labels and refitting gives the
recovered test accuracy.

Self-influence is <= 0 (``influencekit.convention``), so the ranking is by magnitude (most
negative first), as in the paper.

The problem (``problem``: a data set and a recipe, fitted on the clean labels) is what a run
starts from; ``run`` flips its labels once per flip seed (``run_seed``, one skeleton for linear
models and networks alike), stores each seed's result in an optional ``cache`` folder as it
finishes, and averages the seeds (``aggregate``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import fingerprint, storage
from ..convention import SIGN_CONVENTION
from ..errors import ConvergenceWarning, InputError
from ..influence import Influence
from . import datasets, report
from .fit import (
    accuracy,
    fit_input,
    fit_linear,
    logistic_self_influence,
    loss_name,
    multinomial_self_influence,
    predict,
)
from .problems import Problem

RANKINGS = ("self_influence", "loss", "random")


def flip_labels(y: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Flip ``fraction`` of the labels y [n] (classes 0..C-1): binary labels to the other class,
    multiclass ones to a uniformly random other class. Returns (noisy labels [n], flipped indices)."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"fraction must be in (0, 1), got {fraction}; e.g. 0.1 flips 10% of the labels.")
    g = torch.Generator().manual_seed(seed)
    n, classes = len(y), max(int(y.max()) + 1, 2)
    idx = torch.randperm(n, generator=g)[: int(round(fraction * n))].sort().values
    noisy = y.clone()
    shift = torch.randint(1, classes, (len(idx),), generator=g)  # 1..C-1: never the true class
    noisy[idx] = (y[idx] + shift) % classes
    return noisy, idx


def rank(influence: Influence, train: tuple[Tensor, Tensor], seed: int = 0, *, progress: bool = False,
         self_influence: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Orders in which to check the training points ``train`` [n] of ``influence`` (first = check
    first), by |self-influence|, by training loss (highest first) and at random; also the
    self-influences [n] and losses [n]. ``self_influence`` [n]: precomputed I_up,loss(z_i, z_i)
    (e.g. ``fit.logistic_self_influence``) instead of ``influence.self_influence()``."""
    self_inf = (influence.self_influence(progress=progress) if self_influence is None else self_influence).cpu()
    losses = influence.losses(train).detach().cpu()
    g = torch.Generator().manual_seed(seed + 1)
    return {"self_influence": self_inf.abs().argsort(descending=True), "loss": losses.argsort(descending=True),
            "random": torch.randperm(influence.n, generator=g)}, self_inf, losses


def detection_curve(order: Tensor, flipped: Tensor, fractions: np.ndarray) -> np.ndarray:
    """Fraction of the flipped labels found after checking the first ``f * n`` of ``order``,
    for each f in ``fractions``: [len(fractions)]."""
    n = len(order)
    hit = torch.zeros(n, dtype=torch.bool)
    hit[flipped] = True
    found = hit[order].cumsum(0).double()
    counts = np.round(np.asarray(fractions) * n).astype(int)
    return np.array([float(found[c - 1]) if c > 0 else 0.0 for c in counts]) / max(len(flipped), 1)


@dataclass
class MislabelResult:
    """Curves over ``fractions`` (fraction of training data checked) for each ranking."""

    fractions: np.ndarray
    found: dict[str, np.ndarray]       # fraction of flipped labels found
    retrain_at: np.ndarray             # fractions checked at which the model was refitted
    accuracy: dict[str, np.ndarray]    # test accuracy after fixing the checked labels and refitting
    clean_accuracy: float              # test accuracy with no label flipped
    noisy_accuracy: float              # test accuracy with the flipped labels
    n: int
    n_flipped: int
    p: int
    flipped: Tensor = field(repr=False, default=None)  # type: ignore[assignment]
    order: dict[str, Tensor] = field(repr=False, default_factory=dict)
    self_influence: Tensor | None = field(repr=False, default=None)  # I_up,loss(z_i, z_i) [n], <= 0
    losses: Tensor | None = field(repr=False, default=None)          # training losses [n] with noisy labels
    noisy: Tensor | None = field(repr=False, default=None)           # the noisy labels [n]
    convention: str = SIGN_CONVENTION
    model: str = "linear"                # "linear" or a network description (``Net.describe``)
    flips_fitted: float | None = None    # fraction of flipped points the noisy model predicts as their wrong label
    val_accuracy: float | None = None    # validate=True: ``validation_accuracy`` (held-out 20%, noisy labels)
    # ``aggregate`` of several flip seeds: found / accuracy / clean / noisy above are means over them,
    # these their standard deviations; ``repeats`` holds each seed's numbers (the rest is the first seed's)
    found_std: dict[str, np.ndarray] | None = None
    accuracy_std: dict[str, np.ndarray] | None = None
    repeats: list[dict] | None = None
    # what the problem was (``run`` fills these in; JSON and the report show them)
    dataset: str | None = None
    description: str = ""
    l2: float | None = None
    setup: str | None = None                 # enron: the set-up of ``ENRON``
    # what the report shows of the training points (not stored with a cached result)
    train_x: Tensor | None = field(repr=False, default=None)   # inputs [n, ...]
    train_y: Tensor | None = field(repr=False, default=None)   # the true labels [n]
    side: int | None = None                                     # images: their side
    docs: list[str] | None = field(repr=False, default=None)   # texts: one per training point

    def at(self, fraction: float, curves: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Fraction of flipped labels found by each ranking at ``fraction`` checked (or the value of
        other ``curves`` over ``fractions``, e.g. ``found_std``)."""
        i = int(np.argmin(np.abs(self.fractions - fraction)))
        return {k: float(v[i]) for k, v in (self.found if curves is None else curves).items()}

    def to_json(self) -> dict:
        """JSON-able: the curves, the headline numbers and the convention (no per-point arrays)."""
        return {"dataset": self.dataset, "description": self.description, "l2": self.l2, "setup": self.setup,
                "fractions": self.fractions.tolist(), "retrain_at": self.retrain_at.tolist(),
                "found": {k: v.tolist() for k, v in self.found.items()},
                "accuracy": {k: v.tolist() for k, v in self.accuracy.items()},
                "clean_accuracy": self.clean_accuracy, "noisy_accuracy": self.noisy_accuracy,
                "n": self.n, "n_flipped": self.n_flipped, "p": self.p, "found_at_10pct": self.at(0.1),
                "ranking_note": "self_influence ranks by |I_up,loss(z_i, z_i)| (it is <= 0), largest first",
                "model": self.model, "flips_fitted": self.flips_fitted, "val_accuracy": self.val_accuracy,
                "convention": self.convention} | ({} if self.repeats is None else {
                "found_std": {k: v.tolist() for k, v in self.found_std.items()},
                "accuracy_std": {k: v.tolist() for k, v in self.accuracy_std.items()},
                "found_at_10pct_std": self.at(0.1, self.found_std), "repeats": self.repeats})

    def summary(self) -> dict:
        """This run's headline numbers (one entry of ``repeats`` when aggregated)."""
        i10 = int(np.argmin(np.abs(self.retrain_at - 0.1)))
        return {"found_at_10pct": self.at(0.1), "accuracy_after_fixing_10pct": {k: float(v[i10]) for k, v in
                self.accuracy.items()}, "clean_accuracy": self.clean_accuracy,
                "noisy_accuracy": self.noisy_accuracy, "flips_fitted": self.flips_fitted}

    def report(self, page: report.Page, top: int = 15) -> None:
        """Mislabel section: detection and recovered-accuracy figure, numbers at 10% checked, and a
        sortable table of the ``top`` points self-influence asks to check first (first flip seed)."""
        at = self.at(0.1)
        page.heading(f"Mislabel detection: {self.description} (n = {self.n}, p = {self.p}, {self.n_flipped} labels "
                     "flipped)")
        over = f" (means over {len(self.repeats)} flip seeds)" if self.repeats else ""
        page.figure(report.mislabel_figure(self, self.description),
                    f"flipped labels found at 10% checked{over}: self-influence {at['self_influence']:.0%}, training "
                    f"loss {at['loss']:.0%}, random {at['random']:.0%}. Test accuracy: clean "
                    f"{self.clean_accuracy:.3f}, with flipped labels {self.noisy_accuracy:.3f}.")
        i10 = int(np.argmin(np.abs(self.retrain_at - 0.1)))
        cols = ["ranking", "flipped found at 10% checked", "test accuracy after fixing 10%"]
        rows = [[k, float(at[k]), float(self.accuracy[k][i10])] for k in self.found]
        if self.repeats:  # the spread over flip seeds, and how often each ranking beat the others
            sd = self.at(0.1, self.found_std)
            wins = {k: sum(one["found_at_10pct"][k] > max(v for j, v in one["found_at_10pct"].items() if j != k)
                           for one in self.repeats) for k in self.found}
            cols += ["s.d. of found", "s.d. of accuracy", f"seeds where it finds the most (of {len(self.repeats)})"]
            rows = [row + [sd[k], float(self.accuracy_std[k][i10]), wins[k]] for row, k in zip(rows, self.found)]
        page.table(cols, rows)
        if self.train_x is None:
            return
        cols = ["check order", "train index", "shown", "given label", "true label", "flipped",
                "self-influence I_up,loss(z,z)", "training loss"]
        flipped = set(self.flipped.tolist())
        rows = []
        for pos, i in enumerate(self.order["self_influence"][:top].tolist()):
            if self.side is not None:
                shown = report.Image(report.thumbnail(self.train_x[i].reshape(self.side, self.side).numpy()),
                                     f"train {i}")
            else:
                shown = " ".join(self.docs[i].split())[:200]
            rows.append([pos, i, shown, int(self.noisy[i]), int(self.train_y[i]), i in flipped,
                         float(self.self_influence[i]), float(self.losses[i])])
        page.text("Self-influence I_up,loss(z_i, z_i) = -g^T H^-1 g is <= 0; the points with the largest magnitude "
                  "are checked first.", note=True)
        page.table(cols, rows, caption=f"the {top} training points to check first by |self-influence|")

    def figure(self) -> bytes:
        """The detection and recovered-accuracy figure (PNG bytes)."""
        return report.mislabel_figure(self, self.description)


def aggregate(results: list[MislabelResult], seeds: list[int]) -> MislabelResult:
    """Mean curves over repeats of the experiment with different flipped labels (the paper averages
    40): found / accuracy / clean / noisy accuracy are means over ``results``, ``found_std`` /
    ``accuracy_std`` their standard deviations (ddof 1), ``repeats`` each seed's ``summary``; the
    orders, self-influences and labels are those of the first run (what the report lists)."""
    if not results or len(results) != len(seeds):
        raise InputError(f"aggregate needs one result per seed, got {len(results)} results and {len(seeds)} seeds.")
    first = results[0]
    ddof = 1 if len(results) > 1 else 0

    def stat(get, fn):
        return {k: fn(np.stack([get(r)[k] for r in results]), axis=0) for k in get(first)}

    def mean(xs):
        return float(np.mean(xs)) if all(x is not None for x in xs) else None

    return MislabelResult(
        fractions=first.fractions, found=stat(lambda r: r.found, np.mean),
        retrain_at=first.retrain_at, accuracy=stat(lambda r: r.accuracy, np.mean),
        clean_accuracy=mean([r.clean_accuracy for r in results]),
        noisy_accuracy=mean([r.noisy_accuracy for r in results]), n=first.n, n_flipped=first.n_flipped, p=first.p,
        flipped=first.flipped, order=first.order, self_influence=first.self_influence, losses=first.losses,
        noisy=first.noisy, convention=first.convention, model=first.model,
        flips_fitted=mean([r.flips_fitted for r in results]), val_accuracy=mean([r.val_accuracy for r in results]),
        found_std=stat(lambda r: r.found, lambda a, axis: np.std(a, axis=axis, ddof=ddof)),
        accuracy_std=stat(lambda r: r.accuracy, lambda a, axis: np.std(a, axis=axis, ddof=ddof)),
        repeats=[{"seed": s} | r.summary() for s, r in zip(seeds, results)])


# ---- one flip seed on disk: a repeated run resumes where it stopped ---------------------------

_SCALARS = ("clean_accuracy", "noisy_accuracy", "n", "n_flipped", "p", "model", "flips_fitted", "val_accuracy",
            "dataset", "description", "l2", "setup")


def save_result(path: str | os.PathLike, r: MislabelResult, meta: dict) -> None:
    """One run's ``MislabelResult`` at ``path`` (safetensors + JSON via ``storage``: atomic, checksummed,
    never pickle), with ``meta`` (settings and data fingerprint) that ``load_result`` checks."""
    tensors = {"fractions": torch.as_tensor(r.fractions), "retrain_at": torch.as_tensor(r.retrain_at),
               "flipped": r.flipped, "self_influence": r.self_influence, "losses": r.losses, "noisy": r.noisy}
    for name in ("found", "accuracy", "order"):
        tensors |= {f"{name}.{k}": torch.as_tensor(v) for k, v in getattr(r, name).items()}
    storage.save(path, tensors, dict(meta) | {"result": {k: getattr(r, k) for k in _SCALARS}})


def load_result(path: str | os.PathLike, meta: dict) -> MislabelResult | None:
    """The ``MislabelResult`` that ``save_result`` stored at ``path``, or None if there is none yet;
    ``CacheError`` if it was made with other ``meta`` (settings or data) or fails its checksum."""
    if not storage.exists(path):
        return None
    T, found = storage.load(path, expect=meta)

    def group(name, cast=lambda t: t.numpy()):  # in RANKINGS order, as the run made them
        return {k: cast(T[f"{name}.{k}"]) for k in RANKINGS}

    return MislabelResult(fractions=T["fractions"].numpy(), found=group("found"), retrain_at=T["retrain_at"].numpy(),
                          accuracy=group("accuracy"), flipped=T["flipped"], order=group("order", lambda t: t),
                          self_influence=T["self_influence"], losses=T["losses"], noisy=T["noisy"],
                          **{k: found["result"][k] for k in _SCALARS})



# ---- recipes ---------------------------------------------------------------------------------
# Each recipe was chosen by one rule: the best validation accuracy on a held-out 20% of the noisy
# training split (``validation_accuracy``: what one can measure without checking a label). Which
# ranking wins depends on the recipe: benchmarks/uses/mislabel_sweep.py, mislabel_mnist10_sweep.py
# and mislabel_net_sweep.py run the grids; their numbers are in the results files next to them
# and in BENCHMARKS.md.

#: default L2 of the linear model per data set: the decade-grid value (1e-6 .. 1e-2) chosen by the rule
#: above (mnist: 1 vs 7; mnist_all: 10 classes; enron: ``ENRON``).
L2 = {"digits": 1e-3, "mnist": 1e-2, "mnist_all": 1e-2}

#: Enron1 set-ups. "paper" (default): the one of Koh & Liang's reference release for this experiment
#: (scripts/load_spam.py, run_spam_experiment.py): raw word counts of the words in >= 5 training emails,
#: weight decay 1e-4 through scikit-learn's C = 1 / (n weight_decay), i.e. (1/n) sum L + (1e-4 / 2)||w||^2
#: (their words are spaCy lemmas; ours are the words as written, as spaCy's model is a download).
#: "validated": log1p counts of the words in >= 2 emails and the L2 the rule above chooses on the decade grid.
ENRON = {"paper": {"counts": "raw", "min_df": 5, "l2": 1e-4}, "validated": {"counts": "log1p", "min_df": 2, "l2": 1e-3}}

#: the network recipes (MNIST, all 10 classes, float32), chosen by the rule above among those of
#: benchmarks/uses/mislabel_net_sweep.py on ``NET_N_TRAIN`` images. ``fit_net``'s keywords.
MLP_RECIPE = {"hidden": (32,), "epochs": 30, "l2": 1e-4, "lr": 1e-3}
#: ``models.SmallCNN``, MNIST only
CNN_RECIPE = {"arch": "cnn", "epochs": 30, "l2": 1e-3, "lr": 1e-3}
NETS = {"mlp": MLP_RECIPE, "cnn": CNN_RECIPE}
#: default MNIST subset of the network recipes: the size they were chosen at (every refit retrains
#: the network, so all 60,000 images multiply the cost of a flip seed many times over).
NET_N_TRAIN = 3000


@dataclass(frozen=True)
class Linear:
    """Logistic (2 classes) or multinomial regression with L2 ``l2``, fitted to a stationary point
    (``fit.fit_linear``). ``solver``: ``auto`` takes the exact closed-form self-influence
    (``fit.logistic_self_influence``: any p, no p x p Hessian when p > n;
    ``fit.multinomial_self_influence``: one Cholesky of the p x p Hessian); any other name is
    passed to ``Influence``."""

    l2: float
    solver: str = "auto"
    #: the fit does not depend on a seed
    seeded: ClassVar[bool] = False
    #: validation accuracy is not recorded by default (the L2 tables above hold the choice)
    validate: ClassVar[bool] = False

    def prepare(self, X: Tensor) -> Tensor:
        return fit_input(X)  # converted once for the many fits of one run

    def fit(self, X: Tensor, y: Tensor, classes: int, seed: int) -> nn.Module:
        return fit_linear(X, y, self.l2, classes)

    def refit(self, X: Tensor, y: Tensor, classes: int, seed: int, start: nn.Module) -> nn.Module:
        with warnings.catch_warnings():  # a refit only measures test accuracy: 300 warm-started steps suffice
            warnings.simplefilter("ignore", ConvergenceWarning)
            return fit_linear(X, y, self.l2, classes, init=start, max_iter=300)

    def influence_settings(self, classes: int) -> dict[str, Any]:
        return {"loss": loss_name(classes), "solver": "exact" if self.solver == "auto" else self.solver}

    def self_influence(self, model: nn.Module, X: Tensor, y: Tensor, classes: int) -> Tensor | None:
        """The closed form (``solver="auto"``), else None (the problem's ``Influence`` computes it)."""
        if self.solver != "auto":
            return None
        closed_form = logistic_self_influence if classes == 2 else multinomial_self_influence
        return closed_form(model, X, y, self.l2).to(X.dtype)

    def describe(self, d: int, classes: int) -> str:
        return "linear"


@dataclass(frozen=True)
class Net:
    """A tanh network trained by ``fit_net`` (Adam, not to a stationary point), the same recipe and
    seed for the noisy fit and every refit; self-influence -g^T (H + dI)^-1 g with ``solver``
    (default EK-FAC with its per-layer automatic damping, ``damping=None``), optionally over the
    parameters ``params`` only (e.g. ``("head.weight", "head.bias")`` with ``solver="exact"``)."""

    arch: str = "mlp"
    hidden: tuple[int, ...] = (32,)
    epochs: int = 100
    l2: float = 1e-5
    lr: float = 1e-3
    batch_size: int = 128
    solver: str = "ekfac"
    damping: float | None = None
    params: tuple[str, ...] | None = None
    seeded: ClassVar[bool] = True
    #: validation accuracy is how the network recipes were chosen: recorded by default
    validate: ClassVar[bool] = True

    def prepare(self, X: Tensor) -> Tensor:
        return X

    def fit(self, X: Tensor, y: Tensor, classes: int, seed: int) -> nn.Module:
        return fit_net(X, y, classes, arch=self.arch, hidden=tuple(self.hidden), epochs=self.epochs, l2=self.l2,
                       lr=self.lr, batch_size=self.batch_size, seed=seed)

    def refit(self, X: Tensor, y: Tensor, classes: int, seed: int, start: nn.Module) -> nn.Module:
        return self.fit(X, y, classes, seed)  # the recipe from its seed, not a warm start

    def influence_settings(self, classes: int) -> dict[str, Any]:
        return {"loss": "cross_entropy", "solver": self.solver, "damping": self.damping,
                "params": None if self.params is None else list(self.params)}

    def self_influence(self, model: nn.Module, X: Tensor, y: Tensor, classes: int) -> Tensor | None:
        return None

    def describe(self, d: int, classes: int) -> str:
        return describe_net(d, classes, self.arch, tuple(self.hidden), self.epochs, self.l2)


Recipe = Linear | Net



# ---- problems --------------------------------------------------------------------------------

@dataclass
class Data:
    """Training and test data of a mislabel problem, and what the report shows of a training point:
    the image side (images) or the raw text (``docs``, one per training row)."""

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    description: str
    side: int | None = None
    docs: list[str] | None = None
    classes: str | None = None   # mnist: "1v7" or "all"


def load(dataset: str, data_dir: str | None = None, seed: int = 0, vocabulary: int | None = None,
         n_train: int | None = None, model: str = "linear", setup: str = "paper", classes: str | None = None) -> Data:
    """The data of ``dataset`` ("digits": bundled, 10 classes; "mnist": 1 vs 7 or all ten
    (``classes``), a seeded random ``n_train`` subset (default: all for the linear model,
    ``NET_N_TRAIN`` for the networks; 0: all); "enron": bag of words of the ``setup``, ``vocabulary``
    words at most (0 or None: all the set-up admits)), float64 for the linear model, float32 for
    the networks (``model``)."""
    dtype = torch.float32 if model in NETS else torch.float64
    if dataset == "digits":
        Xtr, ytr, Xte, yte = datasets.digits(None, seed=seed, dtype=dtype)
        return Data((Xtr, ytr), (Xte, yte), "scikit-learn digits, 10 classes, multinomial logistic regression",
                    side=8)
    if dataset == "mnist":
        ten = (classes or ("all" if model in NETS else "1v7")) == "all"
        Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes=None if ten else (1, 7), flatten=model != "cnn",
                                            dtype=dtype)  # the CNN takes images [n, 1, 28, 28]
        n_train = (NET_N_TRAIN if model in NETS else 0) if n_train is None else n_train
        if n_train and n_train < len(Xtr):
            idx = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(seed))[:n_train].sort().values
            Xtr, ytr = Xtr[idx], ytr[idx]
        kind = "" if model in NETS else (", multinomial regression" if ten else ", logistic regression")
        return Data((Xtr, ytr), (Xte, yte), ("MNIST 10 classes" if ten else "MNIST 1 vs 7") + kind, side=28,
                    classes="all" if ten else "1v7")
    if dataset != "enron":
        raise InputError(f"dataset must be 'digits', 'mnist' or 'enron', got {dataset!r}.")
    if setup not in ENRON:
        raise InputError(f"setup must be one of {list(ENRON)}, got {setup!r}.")
    docs, labels = datasets.enron(data_dir)
    feats = ENRON[setup]
    Xtr, ytr, Xte, yte, vocab = enron_features(docs, labels, max_features=vocabulary or None, seed=seed,
                                               counts=feats["counts"], min_df=feats["min_df"])
    train_docs = [docs[i] for i in enron_split(len(docs), seed=seed)[0]]  # the rows of Xtr
    return Data((Xtr, ytr), (Xte, yte), f"Enron1 spam, bag of words ({len(vocab)} words, {feats['counts']} counts), "
                "logistic regression", docs=train_docs)


def build(data: Data, recipe: Recipe, *, seed: int = 0, name: str = "mislabel", **extra: Any) -> Problem:
    """The ``Problem`` of ``recipe`` fitted (from ``seed``) on the clean labels of ``data``; a run
    flips its labels and fits the same recipe again. ``extra`` is kept in ``Problem.extra``."""
    Xtr, ytr = data.train
    classes = max(int(ytr.max()) + 1, 2)
    model = recipe.fit(recipe.prepare(Xtr), ytr, classes, seed)
    settings = recipe.influence_settings(classes)
    desc = data.description
    if isinstance(recipe, Net):
        desc = f"{desc}, {recipe.describe(Xtr[0].numel(), classes)}, EK-FAC self-influence"
    return Problem(name=name, model=model, loss=settings["loss"], train=data.train, test=data.test, l2=recipe.l2,
                   damping=settings.get("damping", 0.0), solver=settings["solver"], params=settings.get("params"),
                   expect_stationary=isinstance(recipe, Linear), notes=desc,
                   extra={"recipe": recipe, "seed": seed, "classes": classes, "data": data} | extra)


def problem(dataset: str = "digits", *, data_dir: str | None = None, seed: int = 0, model: str = "linear",
            l2: float | None = None, setup: str = "paper", vocabulary: int | None = None, classes: str | None = None,
            n_train: int | None = None) -> Problem:
    """The mislabel problem of a data set (``load``) and a model: "linear" (L2 from ``L2`` / ``ENRON``
    unless ``l2`` is given) or a network recipe of ``NETS`` ("mlp"; "cnn": MNIST only)."""
    if model not in ("linear", *NETS):
        raise InputError(f"model must be one of {['linear', *NETS]}, got {model!r}.")
    if model in NETS and dataset == "enron":
        raise InputError(f"--model {model} takes image data (digits, mnist); enron uses the linear model.")
    if model == "cnn" and dataset != "mnist":
        raise InputError("--model cnn takes MNIST's 28 x 28 images (--dataset mnist); digits are 8 x 8: use mlp.")
    if setup not in ENRON:
        raise InputError(f"setup must be one of {list(ENRON)}, got {setup!r}.")
    data = load(dataset, data_dir, seed, vocabulary, n_train, model, setup, classes)
    if model in NETS:
        recipe: Recipe = Net(**(NETS[model] | ({} if l2 is None else {"l2": l2})))
    else:
        key = "mnist_all" if data.classes == "all" else dataset
        recipe = Linear((ENRON[setup]["l2"] if dataset == "enron" else L2[key]) if l2 is None else l2)
    return build(data, recipe, seed=seed, name=f"{dataset}-{model}", dataset=dataset, model=model,
                 setup=setup if dataset == "enron" else None, vocabulary=vocabulary)

def validation_accuracy(fit, X: Tensor, noisy: Tensor, seed: int) -> float:
    """Accuracy, against the noisy labels, on a seeded 20% of (X, noisy) of ``fit(X80, noisy80)``
    trained on the other 80%: what one can measure without checking a label (the rule for choosing
    a model's L2 or recipe)."""
    perm = torch.randperm(len(noisy), generator=torch.Generator().manual_seed(seed + 7))
    k = int(round(0.8 * len(noisy)))
    return accuracy(fit(X[perm[:k]], noisy[perm[:k]]), X[perm[k:]], noisy[perm[k:]])


def flips_fitted(model: torch.nn.Module, X: Tensor, noisy: Tensor, flipped: Tensor) -> float:
    """Fraction of the flipped training points the model predicts as their (wrong) given label."""
    return float((predict(model, X[flipped]) == noisy[flipped]).double().mean())


def run_seed(problem: Problem, seed: int, *, fraction: float = 0.1, fractions: np.ndarray | None = None,
             retrain_at: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3), validate: bool | None = None,
             progress: bool = False) -> MislabelResult:
    """The experiment with one flip seed: flip ``fraction`` of the training labels of ``problem``
    (X [n, ...], y [n]), fit its recipe on them (from ``seed``), rank, measure the detection curves
    on ``fractions`` and the recovered test accuracy at the fractions ``retrain_at`` (each refit
    repeats the recipe on the fixed labels). ``validate`` (default: the recipe's): also record
    ``validation_accuracy`` in ``val_accuracy``."""
    recipe: Recipe = problem.extra["recipe"]
    Xtr, ytr = problem.train
    Xte, yte = problem.test
    classes = problem.extra["classes"]
    validate = recipe.validate if validate is None else validate
    fractions = np.linspace(0, 0.5, 51) if fractions is None else np.asarray(fractions)
    noisy, flipped = flip_labels(ytr, fraction, seed)
    val_acc = validation_accuracy(lambda X, y: recipe.fit(recipe.prepare(X), y, classes, seed), Xtr, noisy,
                                  seed) if validate else None
    Xfit = recipe.prepare(Xtr)
    same_fit = not recipe.seeded or seed == problem.extra["seed"]
    clean = problem.model if same_fit else recipe.fit(Xfit, ytr, classes, seed)
    model = recipe.fit(Xfit, noisy, classes, seed)
    noisy_problem = dataclasses.replace(problem, model=model, train=(Xtr, noisy))
    with warnings.catch_warnings():
        if not problem.expect_stationary:  # Adam stops short of a stationary point; the damping covers it
            warnings.simplefilter("ignore", UserWarning)
        inf = noisy_problem.influence()
        pre = recipe.self_influence(model, Xtr, noisy, classes)
        order, self_inf, losses = rank(inf, (Xtr, noisy), seed, progress=progress, self_influence=pre)
    found = {k: detection_curve(o, flipped, fractions) for k, o in order.items()}
    noisy_acc = accuracy(model, Xte, yte)
    acc: dict[str, list[float]] = {k: [] for k in order}
    steps = [(k, f) for k in order for f in retrain_at]
    for k, f in tqdm(steps, disable=not progress, desc="fix + refit", unit="fit"):
        checked = order[k][: int(round(f * len(noisy)))]
        if len(checked) == 0 and recipe.seeded:  # the same recipe and seed on the same labels: the noisy fit
            acc[k].append(noisy_acc)
            continue
        fixed = noisy.clone()
        fixed[checked] = ytr[checked]  # checking a label reveals (and restores) the true one
        acc[k].append(accuracy(recipe.refit(Xfit, fixed, classes, seed, model), Xte, yte))
    return MislabelResult(fractions=fractions, found=found, retrain_at=np.asarray(retrain_at),
                          accuracy={k: np.array(v) for k, v in acc.items()}, clean_accuracy=accuracy(clean, Xte, yte),
                          noisy_accuracy=noisy_acc, n=len(ytr), n_flipped=len(flipped), p=inf.p, flipped=flipped,
                          order=order, self_influence=self_inf, losses=losses, noisy=noisy,
                          convention=SIGN_CONVENTION, model=recipe.describe(Xtr[0].numel(), classes),
                          flips_fitted=flips_fitted(model, Xtr, noisy, flipped), val_accuracy=val_acc)


def run(problem: Problem, *, fraction: float = 0.1, repeats: int = 1, fractions: np.ndarray | None = None,
        retrain_at: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3), validate: bool | None = None,
        progress: bool = False, cache: str | os.PathLike | None = None) -> MislabelResult:
    """The experiment on ``problem`` (``problem`` / ``build``) with the flip seeds seed, seed + 1, ...
    (``repeats`` of them, seed = the problem's), each by ``run_seed``, averaged by ``aggregate`` when
    more than one. ``cache``: a folder where each flip seed's result is stored as it finishes and read
    back by a later call with the same settings and data, so an interrupted run resumes."""
    if repeats < 1:
        raise InputError(f"repeats must be >= 1 (the number of flip seeds), got {repeats}.")
    recipe: Recipe = problem.extra["recipe"]
    first = problem.extra["seed"]
    seeds = [first + k for k in range(repeats)]
    extra = problem.extra
    settings = {"dataset": extra.get("dataset", problem.name), "model": extra.get("model", type(recipe).__name__),
                "recipe": dataclasses.asdict(recipe), "l2": problem.l2, "fraction": fraction,
                "setup": extra.get("setup"), "vocabulary": extra.get("vocabulary"), "classes": extra["data"].classes,
                "data_seed": first, "n": len(problem.train[1]), "retrain_at": list(retrain_at),
                "fractions": None if fractions is None else np.asarray(fractions).tolist(), "validate": validate}

    def one(seed: int) -> MislabelResult:
        return run_seed(problem, seed, fraction=fraction, fractions=fractions, retrain_at=retrain_at,
                        validate=validate, progress=progress)

    runs = [_resumable(one, s, settings, problem.train, cache) for s in seeds]
    r = runs[0] if repeats == 1 else aggregate(runs, seeds)
    data: Data = extra["data"]
    return dataclasses.replace(r, dataset=extra.get("dataset"), description=problem.notes, l2=problem.l2,
                               setup=extra.get("setup"), train_x=problem.train[0], train_y=problem.train[1],
                               side=data.side, docs=data.docs)


def _resumable(one, seed: int, settings: dict, train: tuple, cache: str | os.PathLike | None) -> MislabelResult:
    """``one(seed)``, or its stored result from an earlier call with the same settings and data."""
    if cache is None:
        return one(seed)
    tag = fingerprint.sha256(json.dumps(fingerprint.jsonable(settings), sort_keys=True).encode())[:12]
    path = Path(cache) / f"{settings['dataset']}_{settings['model']}_{tag}_flips{seed}"
    meta = settings | {"flip_seed": seed, "data": fingerprint.fingerprint_data(train)}
    r = load_result(path, meta)
    if r is None:
        r = one(seed)
        save_result(path, r, meta)
    return r


def fit_net(X: Tensor, y: Tensor, classes: int, *, arch: str = "mlp", hidden: tuple[int, ...] = (32,),
            epochs: int = 100, l2: float = 1e-5, lr: float = 1e-3, batch_size: int = 128,
            seed: int = 0) -> torch.nn.Module:
    """A tanh network initialised from ``seed`` and trained by ``models.train`` (Adam, cross-entropy +
    (l2/2)||theta||^2, batches in a ``seed`` order): the same recipe for the noisy fit and every refit.
    ``arch``: "mlp" (``models.MLP``, d -> hidden -> classes; ``hidden=()``: multinomial regression) or
    "cnn" (``models.SmallCNN``, images [n, 1, 28, 28]; ``hidden`` unused)."""
    from .models import MLP, SmallCNN
    from .models import train as train_model

    if arch not in ("mlp", "cnn"):
        raise InputError(f"arch must be 'mlp' or 'cnn', got {arch!r}.")
    if arch == "cnn" and tuple(X.shape[1:]) != (1, 28, 28):
        raise InputError(f"arch 'cnn' takes 28 x 28 images [n, 1, 28, 28], got {list(X.shape)}; load MNIST with "
                         "flatten=False.")
    torch.manual_seed(seed)
    model = (SmallCNN(classes) if arch == "cnn" else MLP(X[0].numel(), tuple(hidden), classes)).to(X.dtype)
    return train_model(model, "cross_entropy", X, y, l2=l2, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)


def describe_net(d: int, classes: int, arch: str, hidden: tuple[int, ...], epochs: int, l2: float) -> str:
    """A one-line description of a ``fit_net`` recipe."""
    net = ("CNN conv 8-16, 32 hidden" if arch == "cnn"
           else f"MLP {'-'.join(str(h) for h in (d, *hidden, classes))}")
    return f"{net} tanh, {epochs} epochs Adam, l2 = {l2:g}"


# ---- data ------------------------------------------------------------------------------------

def enron_split(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of n emails: a seeded permutation, the first ``test_fraction`` test."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return perm[n_test:], perm[:n_test]


def enron_vectorizer(max_features: int | None = None, min_df: int = 2):
    """scikit-learn's CountVectorizer for emails: lower-cased alphabetic words of >= 2 letters,
    English stop words removed, words in >= ``min_df`` documents (or the ``max_features`` most frequent)."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(lowercase=True, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", stop_words="english",
                           max_features=max_features, min_df=min_df)


def enron_features(docs: list[str], labels: np.ndarray, *, max_features: int | None = None, min_df: int = 2,
                   counts: str = "log1p", test_fraction: float = 0.2,
                   seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """Bag-of-words features of raw emails: lower-cased alphabetic tokens of >= 2 letters,
    English stop words removed, vocabulary = every word in >= ``min_df`` training emails, or the
    ``max_features`` most frequent of them; ``counts``: "log1p" (log(1 + count)) or "raw" (the paper's word counts).
    Returns (X_train, y_train, X_test, y_test, vocabulary), float64 (dense)."""
    if counts not in ("log1p", "raw"):
        raise InputError(f"counts must be 'log1p' or 'raw', got {counts!r}.")
    tr, te = enron_split(len(docs), test_fraction, seed)
    vec = enron_vectorizer(max_features, min_df)
    Xtr = vec.fit_transform([docs[i] for i in tr])
    Xte = vec.transform([docs[i] for i in te])
    scale = np.log1p if counts == "log1p" else np.asarray
    t = lambda m: torch.as_tensor(scale(m.toarray()), dtype=torch.float64)  # noqa: E731
    y = torch.as_tensor(labels)
    return t(Xtr), y[tr], t(Xte), y[te], list(vec.get_feature_names_out())
