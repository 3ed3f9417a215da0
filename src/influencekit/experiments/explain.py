"""Explain one prediction: the training points that helped and harmed it most (Koh & Liang,
Sec. 5.1, Fig. 1 and 4), set against the nearest neighbours a distance-based explanation
would give; and influence against distance for an RBF-kernel model and a learned-feature model.

``problem`` builds the 1 vs 7 problem (logistic regression, or an MLP with influence over its
last layer); ``run(problem)`` explains a few of its test points. Signs: ``influencekit.convention``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..influence import Influence
from . import datasets, report
from .fit import fit_linear, linear_model
from .problems import Problem


@dataclass
class Explanation:
    """Influence of every training point on one test point, and its neighbours.

    up_loss [n]: I_up,loss(z_i, z_test) (sign: ``influencekit.convention``). helpful / harmful:
    indices of the k most negative / most positive. input_distance [n] and feature_distance [n] (or None):
    Euclidean distances to the test point in input space and in the model's feature space.
    overlap_input / overlap_feature: fraction of the k most influential (by |up_loss|) that
    are among the k nearest neighbours in that space.
    """

    up_loss: Tensor
    helpful: list[int]
    harmful: list[int]
    input_distance: Tensor
    feature_distance: Tensor | None
    overlap_input: float
    overlap_feature: float | None
    convention: str = SIGN_CONVENTION

    def to_json(self) -> dict:
        """JSON-able summary (no per-point arrays)."""
        u = self.up_loss
        return {"helpful": [{"index": i, "up_loss": float(u[i])} for i in self.helpful],
                "harmful": [{"index": i, "up_loss": float(u[i])} for i in self.harmful],
                "overlap_input": self.overlap_input, "overlap_feature": self.overlap_feature,
                "convention": self.convention}


def top_k_overlap(a: Tensor, b: Tensor, k: int) -> float:
    """|A ∩ B| / k for the k largest entries of ``a`` [n] and the k smallest of ``b`` [n]
    (influence magnitude against distance)."""
    A = set(a.topk(k).indices.tolist())
    B = set(b.topk(k, largest=False).indices.tolist())
    return len(A & B) / k


def distances(X: Tensor, x: Tensor) -> Tensor:
    """Euclidean distance of every row of X [n, ...] to x [...] (flattened): [n]."""
    return (X.reshape(X.shape[0], -1) - x.reshape(1, -1)).norm(dim=1)


def explain(influence: Influence, train_x: Tensor, x_test: Tensor, y_test: Tensor, *, k: int = 5,
            features: Callable[[Tensor], Tensor] | None = None, method: str = "auto") -> Explanation:
    """Most helpful and harmful training points (inputs ``train_x`` [n, ...], the rows of
    ``influence``'s training data) for one test point (x_test [1, ...], y_test [1]).

    ``features(X) -> [n, f]`` maps inputs to the model's feature space (e.g. the penultimate
    layer), for the feature-space neighbours; omitted: input space only.
    """
    if x_test.shape[0] != 1 or y_test.shape[0] != 1:
        raise InputError(f"explain takes one test point: x_test [1, ...], y_test [1]; got {tuple(x_test.shape)} "
                         f"and {tuple(y_test.shape)}. Slice it as X[j:j+1], y[j:j+1].")
    n = influence.n
    if not 1 <= k <= n:
        raise InputError(f"k must be in [1, n = {n}], got {k}.")
    if len(train_x) != n:
        raise InputError(f"train_x has {len(train_x)} rows, the influence's training data {n}; pass its inputs.")
    u = influence.up_loss((x_test, y_test), method=method)[0].detach().cpu()
    Xtr = train_x.cpu()
    d_in = distances(Xtr.double(), x_test.cpu().double())
    d_ft = None
    if features is not None:
        with torch.no_grad():
            d_ft = distances(features(Xtr).double(), features(x_test).double())
    mag = u.abs()
    return Explanation(up_loss=u, helpful=u.topk(k, largest=False).indices.tolist(),
                       harmful=u.topk(k).indices.tolist(), input_distance=d_in, feature_distance=d_ft,
                       overlap_input=top_k_overlap(mag, d_in, k),
                       overlap_feature=None if d_ft is None else top_k_overlap(mag, d_ft, k))


# ---- Fig. 1 / 4: influence vs distance, RBF-kernel model against learned features --------------

class RBFLogistic(nn.Module):
    """Logistic regression on fixed RBF (Nystroem) kernel features of the input: [B, d] -> [B].

    ``phi(x)`` is frozen; only ``linear`` is trained, so the model is an RBF-kernel machine
    (the paper's RBF SVM, with the log loss instead of the smooth hinge).
    """

    def __init__(self, nystroem, d_features: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        # phi(x) = K(x, C) W with landmarks C and normalisation W, from scikit-learn's fit
        self.register_buffer("centers", torch.as_tensor(nystroem.components_, dtype=dtype))
        self.register_buffer("normalization", torch.as_tensor(nystroem.normalization_, dtype=dtype))
        self.gamma = float(nystroem.gamma)
        self.linear = linear_model(d_features, 2, dtype).linear

    def features(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        k = torch.exp(-self.gamma * torch.cdist(x, self.centers).pow(2))
        return k @ self.normalization.T

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x)).squeeze(-1)


def fit_rbf_logistic(X: Tensor, y: Tensor, *, l2: float = 1e-3, gamma: float | None = None,
                     components: int = 100, seed: int = 0) -> RBFLogistic:
    """Fit an ``RBFLogistic`` on binary (X [n, d], y [n] in {0,1}); gamma defaults to 1 / (d var X)."""
    from sklearn.kernel_approximation import Nystroem

    Xn = X.reshape(X.shape[0], -1).double().numpy()
    gamma = gamma if gamma is not None else 1.0 / (Xn.shape[1] * Xn.var())
    ny = Nystroem(gamma=gamma, n_components=min(components, len(Xn)), random_state=seed).fit(Xn)
    model = RBFLogistic(ny, ny.components_.shape[0], X.dtype)
    with torch.no_grad():
        F = model.features(X)
    head = fit_linear(F, y, l2, classes=2)
    model.linear.load_state_dict(head.linear.state_dict())
    return model.eval()


def fit_mlp(X: Tensor, y: Tensor, *, l2: float = 1e-3, hidden: int = 16, epochs: int = 60, seed: int = 0):
    """A tanh MLP (learned features) trained with Adam, then its head (``head.*``) polished to a
    stationary point so influence over the head is exact. Returns (model, head parameter names)."""
    from ..objective import Objective
    from ..retrain import minimize
    from .models import MLP, train

    torch.manual_seed(seed)
    classes = int(y.max()) + 1
    model = MLP(X[0].numel(), (hidden,), classes=max(classes, 2)).to(X.dtype)
    model = train(model, "cross_entropy", X, y, l2=l2, epochs=epochs, batch_size=64, lr=1e-2, seed=seed)
    names = ["head.weight", "head.bias"]
    obj = Objective(model, "cross_entropy", (X, y), l2=l2, params=names, batch_size=4096)
    return obj.to_model(minimize(obj, grad_tol=1e-9, max_iter=500)).eval(), names


def influence_vs_distance(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, test_index: int | None = None,
                          l2: float = 1e-3, seed: int = 0) -> dict:
    """Paper Fig. 1: I_up,loss of every training point on one test point against its Euclidean
    distance in input space, for an RBF-kernel model and a learned-feature MLP (influence over
    its last layer, as the paper's Inception model), on the same binary data.

    Returns {"rbf": {...}, "mlp": {...}, "test_index": j, "convention": ...} where each entry holds ``up_loss`` [n],
    ``distance`` [n] (numpy), ``spearman`` between |up_loss| and distance (strongly negative:
    near points dominate), ``overlap`` (top-10 |influence| vs 10 nearest) and test accuracy.
    """
    Xtr, ytr = train
    Xte, yte = test
    rbf = fit_rbf_logistic(Xtr, ytr, l2=l2, seed=seed)
    mlp, head = fit_mlp(Xtr, ytr, l2=l2, seed=seed)
    if test_index is None:  # a test point both models get right, with the most confident RBF prediction
        with torch.no_grad():
            ok = ((rbf(Xte) > 0).long() == yte) & (mlp(Xte).argmax(1) == yte)
        test_index = int(ok.nonzero()[0]) if ok.any() else 0
    j = test_index
    x, yy = Xte[j:j + 1], yte[j:j + 1]
    out: dict = {"test_index": j, "convention": SIGN_CONVENTION}
    for name, model, loss, params in (("rbf", rbf, "logistic", None), ("mlp", mlp, "cross_entropy", head)):
        inf = Influence(model, loss, (Xtr, ytr), l2=l2, params=params, solver="exact")
        e = explain(inf, Xtr, x, yy, k=10)
        mag, d = e.up_loss.abs().numpy(), e.input_distance.numpy()
        with torch.no_grad():
            pred = model(Xte)
            pred = (pred > 0).long() if pred.dim() == 1 else pred.argmax(1)
        out[name] = {"up_loss": e.up_loss.numpy(), "distance": d, "same_label": (ytr == yy).numpy(),
                     "spearman": float(spearmanr(mag, d).statistic), "overlap": e.overlap_input,
                     "accuracy": float((pred == yte).double().mean())}
    return out


def summary(result: dict) -> dict:
    """JSON-able figures of ``influence_vs_distance`` (drops the per-point arrays)."""
    return {"test_index": result["test_index"], "convention": result["convention"],
            **{m: {k: v for k, v in result[m].items() if not isinstance(v, np.ndarray)} for m in ("rbf", "mlp")}}


# ---- the use: a problem, its explanations, their JSON and report section ----------------------

def problem(dataset: str = "digits", model: str = "logreg", *, l2: float = 1e-2, data_dir: str | None = None,
            seed: int = 0) -> Problem:
    """Digits 1 vs 7 (``dataset="digits"``, bundled 8 x 8) or MNIST 1 vs 7 ("mnist", 28 x 28; needs
    mnist.npz), float64 flat inputs, with ``model`` "logreg" (logistic regression fitted to a
    stationary point, influence over all parameters) or "mlp" (``fit_mlp``: influence over its last
    layer, the learned features frozen), both with L2 ``l2``; exact inverse Hessian."""
    if dataset == "digits":
        Xtr, ytr, Xte, yte = datasets.digits((1, 7), seed=seed)
        side = 8
    elif dataset == "mnist":
        Xtr, ytr, Xte, yte = datasets.mnist(data_dir, classes=(1, 7), flatten=True, dtype=torch.float64)
        side = 28
    else:
        raise InputError(f"dataset must be 'digits' or 'mnist', got {dataset!r}.")
    extra = {"dataset": dataset, "model": model, "side": side, "seed": seed, "features": None}
    if model == "logreg":
        m = fit_linear(Xtr, ytr, l2, classes=2)
        return Problem(f"{dataset}-1v7-logreg", m, "logistic", (Xtr, ytr), (Xte, yte), l2, solver="exact",
                       notes=f"{dataset} 1 vs 7, logistic regression, l2 = {l2:g}", extra=extra)
    if model == "mlp":
        m, head = fit_mlp(Xtr, ytr, l2=l2, seed=seed)
        return Problem(f"{dataset}-1v7-mlp", m, "cross_entropy", (Xtr, ytr), (Xte, yte), l2, solver="exact",
                       params=head, notes=f"{dataset} 1 vs 7, tanh MLP, influence over its last layer, l2 = {l2:g}",
                       extra=extra | {"features": m.features})
    raise InputError(f"model must be 'logreg' or 'mlp', got {model!r}.")


@dataclass
class Explained:
    """One explained test point: its index in the problem's test data, label, test loss and explanation."""

    test_index: int
    label: int
    loss: float
    explanation: Explanation


@dataclass
class ExplainResult:
    """``run``'s result: the explanations of a few test points and, optionally, the influence-vs-
    distance study (``influence_vs_distance``'s dict)."""

    dataset: str
    model: str
    n: int
    p: int
    side: int
    explanations: list[Explained]
    train: tuple[Tensor, Tensor] = field(repr=False)
    test: tuple[Tensor, Tensor] = field(repr=False)
    distance: dict | None = field(repr=False, default=None)
    convention: str = SIGN_CONVENTION

    def to_json(self) -> dict:
        """JSON-able: per test point the helpful and harmful training points with their scores."""
        out = {"dataset": self.dataset, "model": self.model, "n": self.n, "p": self.p, "convention": self.convention}
        out["explanations"] = [{"test_index": e.test_index, "label": e.label, "loss": e.loss,
                                **e.explanation.to_json()} for e in self.explanations]
        if self.distance is not None:
            out["influence_vs_distance"] = summary(self.distance)
        return out

    def distance_figure(self) -> bytes:
        """Paper Fig. 1 (PNG bytes); needs the distance study (``run(..., distance=True)``)."""
        if self.distance is None:
            raise InputError("this result has no influence-vs-distance study: run with distance=True.")
        return report.influence_distance_figure(self.distance)

    def report(self, page: report.Page) -> None:
        """Explain section: per test point, a sortable table of the helpful and harmful training
        points with thumbnails, scores and distance ranks; then the influence-vs-distance figure."""
        Xtr, ytr = self.train
        Xte, _ = self.test
        side, n = self.side, self.n
        page.heading(f"Explain: most helpful and harmful training points ({self.dataset} 1 vs 7, {self.model}, "
                     f"n = {n}, p = {self.p})")
        page.text("Labels: 0 = digit 1, 1 = digit 7. I_up,loss > 0: harmful (up-weighting raises the test loss); < 0: "
                  "helpful. Removing the point changes the test loss by about -(1/n) I_up,loss. Distance rank: "
                  "position among the training points sorted by Euclidean distance to the test input (0 = nearest).",
                  note=True)
        for item in self.explanations:
            e, j = item.explanation, item.test_index
            rank_in = e.input_distance.argsort().argsort()
            rank_ft = None if e.feature_distance is None else e.feature_distance.argsort().argsort()
            cols = ["role", "train index", "image", "label", "I_up,loss", "-(1/n) I_up,loss", "input-distance rank"]
            if rank_ft is not None:
                cols.append("feature-distance rank")
            rows = []
            for role, idx in (("helpful", e.helpful), ("harmful", e.harmful)):
                for i in idx:
                    row = [role, i, report.Image(report.thumbnail(Xtr[i].reshape(side, side).numpy()), f"train {i}"),
                           int(ytr[i]), float(e.up_loss[i]), float(-e.up_loss[i] / n), int(rank_in[i])]
                    if rank_ft is not None:
                        row.append(int(rank_ft[i]))
                    rows.append(row)
            ovl = f"top-{len(e.helpful)} |influence| among the {len(e.helpful)} nearest in input space: " \
                  f"{e.overlap_input:.0%}"
            if e.overlap_feature is not None:
                ovl += f"; in feature space: {e.overlap_feature:.0%}"
            page.table(["test image"], [[report.Image(report.thumbnail(Xte[j].reshape(side, side).numpy()),
                                                      f"test {j}")]],
                       caption=f"test point {j}: label {item.label}, test loss {item.loss:.3g}")
            page.table(cols, rows, caption=f"test point {j}: {ovl}")
        if self.distance is not None:
            d = self.distance
            page.heading("Influence vs Euclidean distance: RBF-kernel model vs learned features (paper Fig. 1)")
            page.figure(self.distance_figure(),
                        f"test point {d['test_index']}: for the RBF-kernel model the influential points are the near "
                        f"ones (Spearman(|I|, distance) = {d['rbf']['spearman']:.2f}, top-10 overlap with 10-NN "
                        f"{d['rbf']['overlap']:.0%}); for the MLP they are not (Spearman {d['mlp']['spearman']:.2f}, "
                        f"overlap {d['mlp']['overlap']:.0%}).")


def run(problem: Problem, *, test_index: list[int] | None = None, k: int = 5, distance: bool = True,
        distance_l2: float = 1e-3) -> ExplainResult:
    """Explain the test points ``test_index`` of ``problem`` (default: the two with the highest test
    loss and one of median loss) by their ``k`` most helpful and harmful training points; with
    ``distance``, also ``influence_vs_distance`` on the problem's data (models fitted with L2
    ``distance_l2``, seeded by the problem's seed)."""
    inf = problem.influence()
    Xte, yte = problem.test
    losses = inf.losses(problem.test).detach().cpu()
    if not test_index:
        order = losses.argsort(descending=True).tolist()
        test_index = order[:2] + [order[len(order) // 2]]
    bad = [j for j in test_index if not 0 <= j < len(yte)]
    if bad:
        raise InputError(f"test indices {bad} out of range [0, {len(yte)}).")
    features = problem.extra.get("features")
    out = [Explained(j, int(yte[j]), float(losses[j]),
                     explain(inf, problem.train[0], Xte[j:j + 1], yte[j:j + 1], k=k, features=features))
           for j in test_index]
    extra = problem.extra
    return ExplainResult(dataset=extra.get("dataset", problem.name), model=extra.get("model", ""), n=inf.n, p=inf.p,
                         side=extra["side"], explanations=out, train=problem.train, test=problem.test,
                         distance=influence_vs_distance(problem.train, problem.test, l2=distance_l2,
                                                        seed=extra.get("seed", 0)) if distance else None)
