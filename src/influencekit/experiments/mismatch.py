"""Debug a domain mismatch (Koh & Liang, Sec. 5.3): hospital readmission, logistic regression.

The paper's set-up: about 20K diabetic patients; in the original training data a few dozen
children (age [0-10)), most not readmitted. The mismatch is induced by removing children from
the training set until only a handful remain, most of them readmitted; the model then
predicts readmission for the (mostly not readmitted) test children. Influence should name
those few training children as the most influential points for a wrongly predicted test
child, and the perturbation influence I_pert should name the age feature behind it.

Sign convention (``influencekit.influence``): I_up,loss > 0 harmful (up-weighting raises the
test loss), < 0 helpful. I_pert,loss(z, z_test) = -grad_x (s_test^T grad_theta L(z)) [d]: moving
training input x along it raises the test loss most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from ..influence import Influence
from ..objective import Objective
from .fit import fit_linear

CHILD = "age=[0-10)"
CATEGORICAL = ("race", "gender", "age", "admission_type_id", "discharge_disposition_id", "admission_source_id",
               "max_glu_serum", "A1Cresult", "insulin", "metformin", "change", "diabetesMed")
NUMERIC = ("time_in_hospital", "num_lab_procedures", "num_procedures", "num_medications", "number_outpatient",
           "number_emergency", "number_inpatient", "number_diagnoses")


def features(df, *, n: int = 20000, seed: int = 0) -> tuple[Tensor, Tensor, list[str], np.ndarray]:
    """Sample ``n`` encounters and encode them: one-hot categoricals (missing -> its own level),
    standardised numerics. Label: readmitted at all (``<30`` or ``>30``) = 1, ``NO`` = 0.
    Returns (X [n, d] float64, y [n], feature names, is_child [n] bool)."""
    import pandas as pd

    if n < len(df):
        df = df.sample(n=n, random_state=seed)
    cat = pd.get_dummies(df[list(CATEGORICAL)].astype(str), prefix_sep="=")
    num = df[list(NUMERIC)].astype(float)
    num = (num - num.mean()) / num.std().replace(0, 1)
    X = pd.concat([cat.astype(float), num], axis=1)
    y = (df["readmitted"] != "NO").to_numpy(np.int64)
    return (torch.as_tensor(X.to_numpy(np.float64)), torch.as_tensor(y), list(X.columns),
            (df["age"] == "[0-10)").to_numpy().copy())


def induce(y: Tensor, is_child: np.ndarray, *, test_fraction: float = 0.2, keep: int = 4, keep_readmitted: int = 3,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split rows into train/test, then drop training children except ``keep`` of them, of which
    ``keep_readmitted`` are readmitted (the paper: 4 kept, 3 readmitted). Returns (train rows,
    test rows, the kept training children as positions in the train rows)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    yy = y.numpy()
    kids_pos = [i for i in tr if is_child[i] and yy[i] == 1]
    kids_neg = [i for i in tr if is_child[i] and yy[i] == 0]
    if len(kids_pos) < keep_readmitted or len(kids_neg) < keep - keep_readmitted:
        raise InputError(f"the training split has {len(kids_pos)} readmitted and {len(kids_neg)} other children; "
                         f"cannot keep {keep_readmitted} + {keep - keep_readmitted}: sample more rows (n) or lower "
                         "keep.")
    kept = set(kids_pos[:keep_readmitted] + kids_neg[: keep - keep_readmitted])
    tr = np.array([i for i in tr if not is_child[i] or i in kept])
    kept_pos = np.array([k for k, i in enumerate(tr) if i in kept])
    return tr, te, kept_pos


def perturbation_influence(influence: Influence, s_test: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """I_pert,loss(z_b, z_test) = -grad_x (s_test^T grad_theta L(z_b)) for a batch (x [B, d], y [B]): [B, d].

    s_test^T grad_theta L is a forward-mode directional derivative in theta; its gradient in x is
    the mixed second derivative without forming the [p, d] Jacobian. (Computed here because
    ``influencekit.perturbation`` was not available when this was written.)
    """
    obj: Objective = influence.objective
    x, y = obj.cast(x, y)
    s = s_test.reshape(-1).to(obj.device, obj.dtype)

    def directional(xi: Tensor, yi: Tensor) -> Tensor:
        f = lambda th: obj.losses(th, xi[None], yi[None])[0]  # noqa: E731
        return jvp(f, (obj.theta,), (s,))[1]

    return -vmap(grad(directional))(x, y)


@dataclass
class MismatchResult:
    """The mismatch experiment: which training points and features explain the test child's error."""

    test_index: int                 # position of the explained test child among the test rows
    test_label: int
    test_probability: float         # predicted P(readmitted) for it
    children_test_accuracy: float   # accuracy on all test children
    overall_test_accuracy: float
    kept_children: list[int]        # positions of the kept training children
    top10: list[int]                # the 10 training points with the largest |I_up,loss|
    top10_up_loss: list[float]
    children_in_top10: int
    children_ranks: list[int]       # rank (0 = most influential) of each kept child by |I_up,loss|
    children_up_loss: list[float]
    top_features: list[tuple[str, float]]  # features by |I_pert| summed over the kept children
    top_present_features: list[tuple[str, float]]  # by |x * I_pert| summed over them (features they have)
    n: int
    p: int
    convention: str = SIGN_CONVENTION

    def to_json(self) -> dict:
        return {**self.__dict__, "top_features": [{"feature": f, "i_pert": v} for f, v in self.top_features],
                "top_present_features": [{"feature": f, "x_times_i_pert": v} for f, v in self.top_present_features]}


def run(df, *, n: int = 20000, l2: float = 1e-5, keep: int = 4, keep_readmitted: int = 3, seed: int = 0,
        solver: str = "exact") -> MismatchResult:
    """Induce the mismatch on the readmission table ``df`` (``datasets.diabetes()``), fit,
    and explain the wrongly predicted test child with the highest loss."""
    X, y, names, is_child = features(df, n=n, seed=seed)
    tr, te, kept = induce(y, is_child, keep=keep, keep_readmitted=keep_readmitted, seed=seed)
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    model = fit_linear(Xtr, ytr, l2, classes=2)
    with torch.no_grad():
        prob = torch.sigmoid(model(Xte))
    pred = (prob > 0.5).long()
    kids = np.flatnonzero(is_child[te])
    if len(kids) == 0:
        raise InputError("no child in the test split; sample more rows (n) or change the seed.")
    wrong = [i for i in kids if pred[i] != yte[i]]
    # the wrongly predicted child the model is most confident about (highest test loss)
    j = int(max(wrong or list(kids), key=lambda i: abs(float(prob[i]) - float(yte[i]))))
    inf = Influence(model, "logistic", (Xtr, ytr), l2=l2, solver=solver)
    test = (Xte[j:j + 1], yte[j:j + 1])
    s = inf.s_test(test)
    u = -(inf.objective.grads(Xtr, ytr) @ s[0]).cpu()  # I_up,loss(z_i, z_test): [n]
    order = u.abs().argsort(descending=True)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(len(order))
    top10 = order[:10].tolist()
    P = perturbation_influence(inf, s, Xtr[kept], ytr[kept]).cpu()
    pert = P.sum(0)
    fi = pert.abs().argsort(descending=True)[:10].tolist()
    # x * I_pert: first-order change of the test loss (per unit eps) when the children's own feature
    # values are scaled by (1 + eps); zero for one-hot levels a child does not have
    present = (Xtr[kept].cpu() * P).sum(0)
    pi = present.abs().argsort(descending=True)[:10].tolist()
    return MismatchResult(
        test_index=j, test_label=int(yte[j]), test_probability=float(prob[j]),
        children_test_accuracy=float((pred[kids] == yte[kids]).double().mean()),
        overall_test_accuracy=float((pred == yte).double().mean()), kept_children=kept.tolist(), top10=top10,
        top10_up_loss=[float(u[i]) for i in top10], children_in_top10=sum(int(k) in top10 for k in kept),
        children_ranks=[int(rank_of[k]) for k in kept], children_up_loss=[float(u[k]) for k in kept],
        top_features=[(names[f], float(pert[f])) for f in fi],
        top_present_features=[(names[f], float(present[f])) for f in pi], n=len(tr), p=inf.objective.p)
