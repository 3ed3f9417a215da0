"""Find flipped training labels by self-influence (Koh & Liang, Sec. 5.4).

Flip a fraction of the training labels, fit, then check labels in the order of a ranking:
|I_up,loss(z_i, z_i)| (self-influence: how much a point props up its own fit), the training
loss, or at random. The detection curve is the fraction of flipped labels found against the
fraction of the training data checked; fixing the checked labels and refitting gives the
recovered test accuracy.

Sign: self_influence = I_up,loss(z_i, z_i) = -g^T H^-1 g <= 0 for a positive-definite H, so the
ranking is by magnitude (most negative first), as in the paper.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import storage
from ..convention import SIGN_CONVENTION
from ..errors import ConvergenceWarning, InputError
from ..influence import Influence
from .fit import (
    accuracy,
    fit_input,
    fit_linear,
    logistic_self_influence,
    loss_name,
    multinomial_self_influence,
    predict,
)

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


def rank(influence: Influence, seed: int = 0, *, progress: bool = False,
         self_influence: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Orders in which to check the training points [n] (first = check first), by |self-influence|,
    by training loss (highest first) and at random; also the self-influences [n] and losses [n].
    ``self_influence`` [n]: precomputed I_up,loss(z_i, z_i) (e.g. ``fit.logistic_self_influence``)
    instead of ``influence.self_influence()``."""
    obj = influence.objective
    self_inf = (influence.self_influence(progress=progress) if self_influence is None else self_influence).cpu()
    losses = torch.cat([obj.losses(obj.theta, *obj.cast(x, y)).detach().cpu()
                        for _, x, y in obj.train.batches(obj.batch_size)])
    g = torch.Generator().manual_seed(seed + 1)
    return {"self_influence": self_inf.abs().argsort(descending=True), "loss": losses.argsort(descending=True),
            "random": torch.randperm(obj.n, generator=g)}, self_inf, losses


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
    model: str = "linear"                # "linear" (run) or a network description (run_net)
    flips_fitted: float | None = None    # fraction of flipped points the noisy model predicts as their wrong label
    val_accuracy: float | None = None    # validate=True: ``validation_accuracy`` (held-out 20%, noisy labels)
    # ``aggregate`` of several flip seeds: found / accuracy / clean / noisy above are means over them,
    # these their standard deviations; ``repeats`` holds each seed's numbers (the rest is the first seed's)
    found_std: dict[str, np.ndarray] | None = None
    accuracy_std: dict[str, np.ndarray] | None = None
    repeats: list[dict] | None = None

    def at(self, fraction: float, curves: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Fraction of flipped labels found by each ranking at ``fraction`` checked (or the value of
        other ``curves`` over ``fractions``, e.g. ``found_std``)."""
        i = int(np.argmin(np.abs(self.fractions - fraction)))
        return {k: float(v[i]) for k, v in (self.found if curves is None else curves).items()}

    def to_json(self) -> dict:
        return {"fractions": self.fractions.tolist(), "retrain_at": self.retrain_at.tolist(),
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

_SCALARS = ("clean_accuracy", "noisy_accuracy", "n", "n_flipped", "p", "model", "flips_fitted", "val_accuracy")


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


def run(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, l2: float = 1e-2, fraction: float = 0.1,
        fractions: np.ndarray | None = None, retrain_at: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3),
        solver: str = "auto", seed: int = 0, validate: bool = False, progress: bool = False) -> MislabelResult:
    """The whole experiment on a linear model (logistic / multinomial regression with L2 ``l2``):
    flip ``fraction`` of the training labels of (X [n, d], y [n]), rank, measure the detection
    curves on ``fractions`` and the recovered test accuracy at the fractions ``retrain_at``;
    ``validate``: also record ``validation_accuracy`` in ``val_accuracy``.

    ``solver``: ``auto`` takes the exact closed forms ``fit.logistic_self_influence`` (2 classes; any
    p: no p x p Hessian when p > n) and ``fit.multinomial_self_influence`` (more classes; one Cholesky
    of the p x p Hessian); any other name is passed to ``Influence``."""
    Xtr, ytr = train
    Xte, yte = test
    classes = max(int(ytr.max()) + 1, 2)
    fractions = np.linspace(0, 0.5, 51) if fractions is None else np.asarray(fractions)
    noisy, flipped = flip_labels(ytr, fraction, seed)
    val_acc = validation_accuracy(lambda X, y: fit_linear(X, y, l2, classes), Xtr, noisy, seed) if validate else None
    Xfit = fit_input(Xtr)  # converted once for the 2 + 3 x len(retrain_at) fits below
    clean_acc = accuracy(fit_linear(Xfit, ytr, l2, classes), Xte, yte)
    model = fit_linear(Xfit, noisy, l2, classes)
    inf = Influence(model, loss_name(classes), (Xtr, noisy), l2=l2,
                    solver="exact" if solver == "auto" else solver)
    closed_form = logistic_self_influence if classes == 2 else multinomial_self_influence
    pre = closed_form(model, Xtr, noisy, l2).to(Xtr.dtype) if solver == "auto" else None
    order, self_inf, losses = rank(inf, seed, progress=progress, self_influence=pre)
    found = {k: detection_curve(o, flipped, fractions) for k, o in order.items()}
    acc: dict[str, list[float]] = {k: [] for k in order}
    steps = [(k, f) for k in order for f in retrain_at]
    for k, f in tqdm(steps, disable=not progress, desc="fix + refit", unit="fit"):
        fixed = noisy.clone()
        checked = order[k][: int(round(f * len(noisy)))]
        fixed[checked] = ytr[checked]  # checking a label reveals (and restores) the true one
        with warnings.catch_warnings():  # a refit only measures test accuracy: 300 warm-started steps suffice
            warnings.simplefilter("ignore", ConvergenceWarning)
            acc[k].append(accuracy(fit_linear(Xfit, fixed, l2, classes, init=model, max_iter=300), Xte, yte))
    return MislabelResult(fractions=fractions, found=found, retrain_at=np.asarray(retrain_at),
                          accuracy={k: np.array(v) for k, v in acc.items()}, clean_accuracy=clean_acc,
                          noisy_accuracy=accuracy(model, Xte, yte), n=len(ytr), n_flipped=len(flipped),
                          p=inf.objective.p, flipped=flipped, order=order,
                          self_influence=self_inf, losses=losses, noisy=noisy, convention=SIGN_CONVENTION,
                          flips_fitted=flips_fitted(model, Xtr, noisy, flipped), val_accuracy=val_acc)


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


def run_net(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, arch: str = "mlp",
            hidden: tuple[int, ...] = (32,), epochs: int = 100, l2: float = 1e-5, lr: float = 1e-3,
            batch_size: int = 128, fraction: float = 0.1, fractions: np.ndarray | None = None,
            retrain_at: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3),
            solver: str = "ekfac", damping: float | None = None, params: tuple[str, ...] | None = None,
            seed: int = 0, validate: bool = False, progress: bool = False) -> MislabelResult:
    """The experiment of ``run`` with a network that can memorise flipped labels: a tanh MLP or CNN
    (``arch``) trained by ``fit_net`` (Adam, not to a stationary point) on the noisy labels, self-influence
    -g^T (H + dI)^-1 g with ``solver`` (default EK-FAC with its per-layer automatic damping
    (``damping=None``): one Kronecker-factored inverse applied per example, no iterative solve),
    optionally on the parameters ``params`` only (e.g. ``("head.weight", "head.bias")`` with
    ``solver="exact"``). Every refit after fixing labels repeats the recipe from the same seed.

    ``validate``: also train the recipe on a seeded 80% of the noisy training set and record its
    accuracy on the other 20% (noisy labels: what one can see without checking) in ``val_accuracy``,
    the rule for choosing a recipe."""
    Xtr, ytr = train
    Xte, yte = test
    classes = max(int(ytr.max()) + 1, 2)
    fractions = np.linspace(0, 0.5, 51) if fractions is None else np.asarray(fractions)
    recipe = dict(arch=arch, hidden=tuple(hidden), epochs=epochs, l2=l2, lr=lr, batch_size=batch_size, seed=seed)
    noisy, flipped = flip_labels(ytr, fraction, seed)
    val_acc = validation_accuracy(lambda X, y: fit_net(X, y, classes, **recipe), Xtr, noisy, seed) if validate else None
    clean_acc = accuracy(fit_net(Xtr, ytr, classes, **recipe), Xte, yte)
    model = fit_net(Xtr, noisy, classes, **recipe)
    with warnings.catch_warnings():  # Adam stops short of a stationary point; the damping covers it
        warnings.simplefilter("ignore", UserWarning)
        inf = Influence(model, "cross_entropy", (Xtr, noisy), l2=l2, solver=solver, damping=damping, params=params)
        order, self_inf, losses = rank(inf, seed, progress=progress)
    found = {k: detection_curve(o, flipped, fractions) for k, o in order.items()}
    noisy_acc = accuracy(model, Xte, yte)
    acc: dict[str, list[float]] = {k: [] for k in order}
    steps = [(k, f) for k in order for f in retrain_at]
    for k, f in tqdm(steps, disable=not progress, desc="fix + refit", unit="fit"):
        checked = order[k][: int(round(f * len(noisy)))]
        if len(checked) == 0:
            acc[k].append(noisy_acc)
            continue
        fixed = noisy.clone()
        fixed[checked] = ytr[checked]  # checking a label reveals (and restores) the true one
        acc[k].append(accuracy(fit_net(Xtr, fixed, classes, **recipe), Xte, yte))
    desc = describe_net(Xtr[0].numel(), classes, arch, tuple(hidden), epochs, l2)
    return MislabelResult(fractions=fractions, found=found, retrain_at=np.asarray(retrain_at),
                          accuracy={k: np.array(v) for k, v in acc.items()}, clean_accuracy=clean_acc,
                          noisy_accuracy=noisy_acc, n=len(ytr), n_flipped=len(flipped), p=inf.objective.p,
                          flipped=flipped, order=order, self_influence=self_inf, losses=losses, noisy=noisy,
                          convention=SIGN_CONVENTION, model=desc,
                          flips_fitted=flips_fitted(model, Xtr, noisy, flipped), val_accuracy=val_acc)


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
    English stop words removed, vocabulary = every word in >= ``min_df`` training emails (17,119
    words on Enron1 at min_df 2, 6,358 at the paper's min_df 5), or the ``max_features`` most
    frequent of them; ``counts``: "log1p" (log(1 + count)) or "raw" (the paper's word counts).
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
