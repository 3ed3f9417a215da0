"""Explain one prediction: the training points that helped and harmed it most (Koh & Liang,
Sec. 5.1, Fig. 1 and 4), set against the nearest neighbours a distance-based explanation
would give.

Sign convention (``influencekit.influence``): ``up_loss`` = I_up,loss(z_i, z_test) > 0 means
z_i is *harmful* (up-weighting it raises the test loss), < 0 *helpful*; removing z_i changes
the test loss by about loo = -(1/n) up_loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..influence import Influence
from .fit import fit_linear, linear_model


@dataclass
class Explanation:
    """Influence of every training point on one test point, and its neighbours.

    up_loss [n]: I_up,loss(z_i, z_test) (positive = harmful). helpful / harmful: indices of
    the k most negative / most positive. input_distance [n] and feature_distance [n] (or None):
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


def explain(influence: Influence, x_test: Tensor, y_test: Tensor, *, k: int = 5,
            features: Callable[[Tensor], Tensor] | None = None, method: str = "auto") -> Explanation:
    """Most helpful and harmful training points for one test point (x_test [1, ...], y_test [1]).

    ``features(X) -> [n, f]`` maps inputs to the model's feature space (e.g. the penultimate
    layer), for the feature-space neighbours; omitted: input space only.
    """
    if x_test.shape[0] != 1 or y_test.shape[0] != 1:
        raise InputError(f"explain takes one test point: x_test [1, ...], y_test [1]; got {tuple(x_test.shape)} "
                         f"and {tuple(y_test.shape)}. Slice it as X[j:j+1], y[j:j+1].")
    n = influence.n
    if not 1 <= k <= n:
        raise InputError(f"k must be in [1, n = {n}], got {k}.")
    u = influence.up_loss((x_test, y_test), method=method)[0].detach().cpu()
    Xtr = influence.objective.train.take(slice(0, n))[0].cpu()
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

    Returns {"rbf": {...}, "mlp": {...}, "test_index": j} where each entry holds ``up_loss`` [n],
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
        e = explain(inf, x, yy, k=10)
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
