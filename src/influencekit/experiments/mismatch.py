"""Debug a domain mismatch (Koh & Liang, Sec. 5.3): hospital readmission, logistic regression.

The paper's set-up: about 20K diabetic patients; in the original training data a few dozen
children (age [0-10)), most not readmitted. The mismatch is induced by removing children from
the training set until only a handful remain, most of them readmitted; the model then
predicts readmission for the (mostly not readmitted) test children. Influence should name
those few training children as the most influential points for a wrongly predicted test
child, and the perturbation influence I_pert should name the age feature behind it.

``problem`` induces the mismatch and fits the model; ``run(problem)`` explains the wrong test
child with ``Influence.up_loss`` and ``Influence.pert_loss``. Signs: ``influencekit.convention``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..convention import SIGN_CONVENTION
from ..errors import InputError
from . import datasets, report
from .fit import fit_linear
from .problems import Problem

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
        """JSON-able: every field, features as {feature, value} records."""
        return {**self.__dict__, "top_features": [{"feature": f, "i_pert": v} for f, v in self.top_features],
                "top_present_features": [{"feature": f, "x_times_i_pert": v} for f, v in self.top_present_features]}

    def figure(self) -> bytes:
        """The kept children's features by x * I_pert,loss (PNG bytes)."""
        names, vals = zip(*self.top_present_features)
        return report.bar_figure(list(names), list(vals), "features of the kept children: x * I_pert,loss",
                                 "first-order change of the test loss (per unit eps) scaling the feature by 1+eps")

    def report(self, page: report.Page) -> None:
        """Mismatch section: the explained child, its 10 most influential training points, and the
        features of the kept children by I_pert,loss."""
        page.heading(f"Domain mismatch: diabetes readmission, logistic regression (n = {self.n}, p = {self.p})")
        page.text(f"Training keeps {len(self.kept_children)} children (age [0-10)); test children are classified with "
                  f"accuracy {self.children_test_accuracy:.0%} (all test points: {self.overall_test_accuracy:.0%}). "
                  f"Explained: test child {self.test_index}, label {self.test_label}, predicted P(readmitted) = "
                  f"{self.test_probability:.2f}. {self.children_in_top10} of the {len(self.kept_children)} training "
                  f"children are among its 10 most influential training points (ranks {self.children_ranks}, 0 = most "
                  "influential by |I_up,loss|).")
        kept = set(self.kept_children)
        page.table(["rank", "train index", "child (age [0-10))", "I_up,loss", "role"],
                   [[k, i, i in kept, v, "harmful" if v > 0 else "helpful"]
                    for k, (i, v) in enumerate(zip(self.top10, self.top10_up_loss))],
                   caption="the 10 most influential training points for the test child")
        page.figure(self.figure(), "Which features of the kept training children drive the error: x * I_pert,loss "
                    "summed over them (I_pert,loss = -grad_x (s_test^T grad_theta L(z)), ``Influence.pert_loss``).")
        page.table(["feature", "I_pert,loss summed over kept children"], [[f, v] for f, v in self.top_features],
                   caption="features by |I_pert,loss| (including one-hot levels the children do not have)")


def problem(df=None, *, data_dir: str | None = None, n: int = 20000, l2: float = 1e-5, keep: int = 4,
            keep_readmitted: int = 3, seed: int = 0, solver: str = "exact") -> Problem:
    """The mismatch induced on the readmission table ``df`` (default: ``datasets.diabetes(data_dir)``):
    ``n`` encounters (``features``), training children dropped but ``keep`` (``induce``), logistic
    regression with L2 ``l2`` fitted to a stationary point. ``extra`` holds the feature names, the kept
    training children (positions in the training rows) and which test rows are children."""
    df = datasets.diabetes(data_dir) if df is None else df
    X, y, names, is_child = features(df, n=n, seed=seed)
    tr, te, kept = induce(y, is_child, keep=keep, keep_readmitted=keep_readmitted, seed=seed)
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    model = fit_linear(Xtr, ytr, l2, classes=2)
    return Problem("diabetes-mismatch", model, "logistic", (Xtr, ytr), (Xte, yte), l2, solver=solver,
                   notes=f"diabetes readmission, {n} encounters, {keep} training children kept "
                         f"({keep_readmitted} readmitted), logistic regression, l2 = {l2:g}",
                   extra={"feature_names": names, "kept": kept, "test_children": np.flatnonzero(is_child[te])})


def run(problem: Problem) -> MismatchResult:
    """Explain the wrongly predicted test child the model is most confident about (``problem``'s
    ``extra``: ``test_children``, ``kept``, ``feature_names``): its most influential training points
    (I_up,loss) and the kept children's features (I_pert,loss)."""
    Xtr, ytr = problem.train
    Xte, yte = problem.test
    kept, names, kids = problem.extra["kept"], problem.extra["feature_names"], problem.extra["test_children"]
    with torch.no_grad():
        prob = torch.sigmoid(problem.model(Xte))
    pred = (prob > 0.5).long()
    if len(kids) == 0:
        raise InputError("no child in the test split; sample more rows (n) or change the seed.")
    wrong = [i for i in kids if pred[i] != yte[i]]
    # the wrongly predicted child the model is most confident about (highest test loss)
    j = int(max(wrong or list(kids), key=lambda i: abs(float(prob[i]) - float(yte[i]))))
    inf = problem.influence()
    test = (Xte[j:j + 1], yte[j:j + 1])
    u = inf.up_loss(test)[0].detach().cpu()  # I_up,loss(z_i, z_test): [n]
    order = u.abs().argsort(descending=True)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(len(order))
    top10 = order[:10].tolist()
    P = inf.pert_loss(test, torch.as_tensor(kept))[0].detach().cpu()  # I_pert,loss of the kept children: [k, d]
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
        top_present_features=[(names[f], float(present[f])) for f in pi], n=len(Xtr), p=inf.p)
