"""Run every bad input and injected fault against influencekit and print the fault table (markdown).

    python benchmarks/faults/table.py > docs/faults.md

Each case is run for real; the table shows what happened (the error type and its full message,
a warning, or a result) next to what was expected, so the document is reproducible and a
regression shows up as a row marked "NO". Exit status 1 if any row is unexpected. The counts are
recorded in benchmarks/faults/table.json (key ``cases``).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

import influencekit as ik
from influencekit.experiments.models import MLP, LogisticRegression
from influencekit.influence import scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

RESULT = "result"  # expected outcome: a finite result, no error


@dataclass
class Case:
    group: str
    what: str
    expect: str  # an error/warning class name, or RESULT
    run: Callable[[], object]


def _data(n=20, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, (X[:, 0] > 0).long(), torch.randint(0, 3, (n,), generator=g)


def _logreg(d=4):
    torch.manual_seed(0)
    return LogisticRegression(d).double().eval()


def _mlp(d=4, classes=3, extra: nn.Module | None = None):
    torch.manual_seed(0)
    model = MLP(d, (3,), classes).double()
    if extra is not None:
        model.features.append(extra)
    return model.eval()


def _up_loss(model, loss, train, test=None, **kw):
    kw.setdefault("damping", 1.0)
    inf = ik.Influence(model, loss, train, l2=0.1, solver=kw.pop("solver", "exact"), **kw)
    return inf.up_loss(test if test is not None else (train[0][:2], train[1][:2]))


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def _saddle():
    """Untrained tanh MLP under mse: an indefinite Hessian (lambda_min about -0.5)."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randn(40, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    return MLP(3, (4,), 2).double().eval(), (X, Y)


def _suggested(solver: str) -> float:
    model, (X, Y) = _saddle()
    try:
        ik.Influence(model, "mse", (X, Y), solver=solver).up_loss((X[:2], Y[:2]))
    except ik.NegativeCurvatureError as e:
        return e.suggested_damping
    raise AssertionError("expected negative curvature")


def _retry_with_suggested_damping(solver: str):
    model, (X, Y) = _saddle()
    opts = {"tol": 1e-10, "max_iter": 300} if solver == "cg" else {}
    return ik.Influence(model, "mse", (X, Y), solver=solver, damping=_suggested(solver), **opts).up_loss((X[:2], Y[:2]))


def _undamped(solver: str):
    model, (X, Y) = _saddle()
    return ik.Influence(model, "mse", (X, Y), solver=solver).up_loss((X[:2], Y[:2]))


def _cg_short():
    X, y, _ = _data()
    obj = ik.Objective(_logreg(), "logistic", (X, y), l2=0.1)
    # one iteration: block CG on 2 right-hand sides spans 2 of the 5 dimensions (3 iterations span
    # all 5 and converge exactly, so they no longer show the warning)
    return ik.make_solver("cg", max_iter=1, tol=1e-12).fit(obj).solve(obj.grads(X[:2], y[:2]))


def _lissa_on_saddle(**kw):
    model, (X, Y) = _saddle()
    obj = ik.Objective(model, "mse", (X, Y))
    return ik.make_solver("lissa", depth=10_000, batch_size=40, **kw).fit(obj).solve(obj.grads(X[:2], Y[:2]))


def _poisoned(method: str, at: int, solver: str, **kw):
    """Run ``solver`` with the ``at``-th call of Objective.<method> returning NaN."""
    X, y, _ = _data()
    obj = ik.Objective(_logreg(), "logistic", (X, y), l2=0.1)
    s = ik.make_solver(solver, **kw).fit(obj)
    original, calls = getattr(obj, method), []

    def poisoned(*args, **kwargs):
        calls.append(1)
        out = original(*args, **kwargs)
        return out * float("nan") if len(calls) == at else out

    setattr(obj, method, poisoned)
    return s.solve(obj.grads(X[:2], y[:2]))


def _nan_param(name="head.bias"):
    model = _mlp()
    with torch.no_grad():
        dict(model.named_parameters())[name][0] = float("nan")
    X, _, yc = _data()
    return ik.Objective(model, "cross_entropy", (X, yc))


def _inf_buffer():
    model = _mlp(extra=nn.BatchNorm1d(3))
    model.features[3].running_var[0] = float("inf")
    X, _, yc = _data()
    return ik.Objective(model, "cross_entropy", (X, yc))


def _nan_in_dataset(score: bool):
    X, _, yc = _data()
    inf = ik.Influence(_mlp(), "cross_entropy", TensorDataset(_with(X, (7, 1), float("nan")), yc), solver="exact",
                       damping=1.0, batch_size=8)
    if score:
        return scores(inf.objective, torch.ones(2, inf.objective.p, dtype=torch.float64), method="jvp")
    return inf.fit()


def _infinite_loss():
    X, y, _ = _data()
    model = _logreg()
    with torch.no_grad():
        model.linear.weight.fill_(1e4)
    loss = lambda o, t: -torch.log(torch.sigmoid(torch.where(t > 0, o, -o)))  # noqa: E731
    return ik.Influence(model, loss, (X, y), solver="exact").fit()


def _nan_gradient():
    X, y, _ = _data()
    model = _logreg()
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    return ik.Influence(model, lambda o, t: torch.sqrt(o**2), (X, y), solver="cg").fit()


def _one_point_loo():
    X, y, _ = _data(n=1)
    return ik.loo_retrain(ik.Objective(_logreg(), "logistic", (X, y), l2=0.1), [0], (X, y))


def _frozen(all_params: bool):
    model = _mlp()
    X, _, yc = _data()
    if all_params:
        for p in model.parameters():
            p.requires_grad_(False)
        return ik.Objective(model, "cross_entropy", (X, yc))
    model.head.weight.requires_grad_(False)
    return ik.Objective(model, "cross_entropy", (X, yc), params=["head.weight"])


def _training_mode(layer: nn.Module):
    model = _mlp(extra=layer).train()
    X, _, yc = _data()
    return _up_loss(model, "cross_entropy", (X, yc))


def _kfac_unsupported():
    name = next((k for k in ("kfac", "ekfac") if k in ik.SOLVERS), None)
    if name is None:
        raise NotImplementedError("no K-FAC solver registered yet (solvers/kfac.py); case not run")

    class Bilinear(nn.Module):  # a layer K-FAC has no Kronecker factorisation for
        def __init__(self):
            super().__init__()
            self.bil = nn.Bilinear(4, 4, 3)

        def forward(self, x):
            return self.bil(x, x)

    X, _, yc = _data()
    torch.manual_seed(0)
    # its 51 parameters would be kept as one exact block under the default exact_block (1,024)
    return ik.Influence(Bilinear().double().eval(), "cross_entropy", (X, yc), solver=name,
                        exact_block=16).up_loss((X[:2], yc[:2]))


X0, Y0, C0 = _data()
CASES = [
    # --- bad input -----------------------------------------------------------------------
    Case("input", "NaN in a training input", "NonFiniteError",
         lambda: _up_loss(_logreg(), "logistic", (_with(X0, (3, 1), float("nan")), Y0))),
    Case("input", "+inf in a training input", "NonFiniteError",
         lambda: _up_loss(_logreg(), "logistic", (_with(X0, (5, 0), float("inf")), Y0))),
    Case("input", "NaN in a regression label", "NonFiniteError",
         lambda: ik.Objective(_mlp(classes=1), "mse", (X0, _with(X0.sum(1, keepdim=True), 5, float("nan"))))),
    Case("input", "inf in a test input", "NonFiniteError",
         lambda: _up_loss(_logreg(), "logistic", (X0, Y0), (_with(X0[:3], (2, 0), float("inf")), Y0[:3]))),
    Case("input", "class index 3 for a 3-logit model (cross_entropy)", "InputError",
         lambda: _up_loss(_mlp(), "cross_entropy", (X0, _with(C0, 4, 3)))),
    Case("input", "class index -1", "InputError", lambda: _up_loss(_mlp(), "cross_entropy", (X0, _with(C0, 4, -1)))),
    Case("input", "fractional class labels (2.5)", "InputError",
         lambda: _up_loss(_mlp(), "cross_entropy", (X0, C0.double() + 0.5))),
    Case("input", "one-hot labels for cross_entropy", "InputError",
         lambda: _up_loss(_mlp(), "cross_entropy", (X0, nn.functional.one_hot(C0, 3)))),
    Case("input", "test label 5 for a 3-logit model", "InputError",
         lambda: _up_loss(_mlp(), "cross_entropy", (X0, C0), (X0[:2], torch.tensor([0, 5])))),
    Case("input", "label 5 in a Dataset, beyond the first batch", "InputError",
         lambda: ik.Influence(_mlp(), "cross_entropy", TensorDataset(X0, _with(C0, 15, 5)), solver="exact",
                              damping=1.0, batch_size=8).fit()),
    Case("input", "logistic labels in {0, 2}", "InputError", lambda: _up_loss(_logreg(), "logistic", (X0, 2 * Y0))),
    Case("input", "smooth_hinge labels in {0, 0.5}", "InputError",
         lambda: _up_loss(_logreg(), "smooth_hinge", (X0, 0.5 * Y0))),
    Case("input", "labels in {-1, +1} for logistic (allowed)", RESULT,
         lambda: _up_loss(_logreg(), "logistic", (X0, 2 * Y0 - 1))),
    Case("input", "5 features for a model taking 4", "InputError",
         lambda: _up_loss(_logreg(), "logistic", (torch.randn(20, 5, dtype=torch.float64), Y0))),
    Case("input", "integer inputs for a float64 model", "InputError",
         lambda: _up_loss(_logreg(), "logistic", (X0.long(), Y0))),
    Case("input", "3-logit model with the (binary) logistic loss", "InputError",
         lambda: _up_loss(_mlp(), "logistic", (X0, Y0))),
    Case("input", "mse with 3 outputs and 2 targets per example", "InputError",
         lambda: _up_loss(_mlp(), "mse", (X0, torch.randn(20, 2, dtype=torch.float64)))),
    Case("input", "a custom loss that averages the batch (no per-example values)", "InputError",
         lambda: ik.Objective(_logreg(), lambda o, t: (o - t).pow(2).mean(), (X0, Y0.double()))),
    Case("input", "test point with 5 features (training: 4)", "InputError",
         lambda: _up_loss(_logreg(), "logistic", (X0, Y0), (torch.randn(1, 5, dtype=torch.float64), Y0[:1]))),
    Case("input", "test point without its batch dimension (X[0], y[0])", "InputError",
         lambda: _up_loss(_logreg(), "logistic", (X0, Y0), (X0[0], Y0[0]))),
    Case("input", "test X with 2 rows, Y with 3", "InputError",
         lambda: _up_loss(_logreg(), "logistic", (X0, Y0), (X0[:2], Y0[:3]))),
    Case("input", "empty training set", "InputError", lambda: _up_loss(_logreg(), "logistic", (X0[:0], Y0[:0]))),
    Case("input", "empty test set", "InputError", lambda: _up_loss(_logreg(), "logistic", (X0, Y0), (X0[:0], Y0[:0]))),
    Case("input", "one training point: influence (defined: H = grad^2 L(z_1) + l2 I)", RESULT,
         lambda: _up_loss(_logreg(), "logistic", (X0[:1], Y0[:1]), damping=0.0)),
    Case("input", "one training point: leave-one-out retraining (undefined: no data left)", "InputError",
         _one_point_loo),
    Case("input", "model in training mode (dropout)", "ModelStateError", lambda: _training_mode(nn.Dropout(0.5))),
    Case("input", "model in training mode (batch-norm)", "ModelStateError",
         lambda: _training_mode(nn.BatchNorm1d(3))),
    Case("input", "parameter in scope with requires_grad=False", "ModelStateError", lambda: _frozen(False)),
    Case("input", "no parameter requires grad", "ModelStateError", lambda: _frozen(True)),
    Case("input", "unknown parameter name in params", "InputError",
         lambda: ik.Objective(_mlp(), "cross_entropy", (X0, C0), params=["fc.weight"])),
    Case("input", "negative damping", "InputError", lambda: _up_loss(_logreg(), "logistic", (X0, Y0), damping=-1.0)),
    Case("input", "batch_size = 0", "InputError", lambda: ik.Objective(_logreg(), "logistic", (X0, Y0), batch_size=0)),
    Case("input", "unknown solver name", "InputError", lambda: ik.make_solver("newton")),
    Case("input", "unknown loss name", "InputError", lambda: ik.Objective(_logreg(), "log_loss", (X0, Y0))),
    Case("input", "K-FAC on a layer it cannot factorise, over exact_block (nn.Bilinear, 51 > 16 parameters)",
         "UnsupportedLayerError", _kfac_unsupported),
    # --- injected faults -----------------------------------------------------------------
    Case("fault", "NaN written into a parameter", "NonFiniteError", _nan_param),
    Case("fault", "inf written into a batch-norm running_var buffer", "NonFiniteError", _inf_buffer),
    Case("fault", "NaN inside a Dataset item: fitting", "NonFiniteError", lambda: _nan_in_dataset(False)),
    Case("fault", "NaN inside a Dataset item: scoring (jvp)", "NonFiniteError", lambda: _nan_in_dataset(True)),
    Case("fault", "loss is +inf at the trained parameters (log of an underflowed sigmoid)", "NonFiniteError",
         _infinite_loss),
    Case("fault", "finite loss, NaN gradient (sqrt(f^2) at f = 0)", "NonFiniteError", _nan_gradient),
    Case("fault", "CG: 3rd Hessian-vector product returns NaN", "NonFiniteError",
         lambda: _poisoned("hvp", 3, "cg", max_iter=500)),
    Case("fault", "LiSSA: 15th mini-batch HVP returns NaN (depth 1000)", "NonFiniteError",
         lambda: _poisoned("hvp_batch", 15, "lissa", depth=1000, batch_size=8)),
    Case("numerics", "indefinite Hessian, exact solver, no damping", "NegativeCurvatureError",
         lambda: _undamped("exact")),
    Case("numerics", "... exact solver with the suggested damping", RESULT,
         lambda: _retry_with_suggested_damping("exact")),
    Case("numerics", "indefinite Hessian, CG, no damping", "NegativeCurvatureError",
         lambda: _undamped("cg")),
    Case("numerics", "... CG with the suggested damping", RESULT, lambda: _retry_with_suggested_damping("cg")),
    Case("numerics", "indefinite Hessian, LiSSA (depth 10,000), no damping", "DivergenceError", _lissa_on_saddle),
    Case("numerics", "LiSSA scale 0.05, far below lambda_max(H + dI) (depth 10,000)", "DivergenceError",
         lambda: _lissa_on_saddle(damping=1.0, scale=0.05)),
    Case("numerics", "CG stopped at max_iter=1 before tol=1e-12", "ConvergenceWarning",
         _cg_short),
]


def run(case: Case) -> tuple[str, str, float]:
    """(outcome class name or RESULT, message, seconds)."""
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = case.run()
        except NotImplementedError as e:
            return "not run", str(e), time.perf_counter() - t
        except Exception as e:  # noqa: BLE001 - the table records whatever happened
            return type(e).__name__, str(e), time.perf_counter() - t
    seconds = time.perf_counter() - t
    ours = [w for w in caught if issubclass(w.category, ik.ConvergenceWarning)]
    if ours:
        return "ConvergenceWarning", str(ours[0].message), seconds
    if isinstance(out, torch.Tensor):
        finite = bool(torch.isfinite(out).all())
        return (RESULT if finite else "NaN result"), f"finite tensor of shape {list(out.shape)}" if finite else \
            "NON-FINITE values returned", seconds
    return RESULT, f"{type(out).__name__} returned", seconds


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> int:
    torch.set_num_threads(1)
    rows, unexpected, groups = [], 0, {}
    t0 = time.perf_counter()
    for i, case in enumerate(CASES, 1):
        got, message, seconds = run(case)
        ok = "yes" if got == case.expect else ("n/a" if got == "not run" else "NO")
        unexpected += ok == "NO"
        groups[case.group] = groups.get(case.group, 0) + 1
        rows.append(f"| {i} | {case.group} | {_cell(case.what)} | {case.expect} | {got} | {ok} | "
                    f"{seconds * 1e3:.0f} | {_cell(message)} |")
    print("# Fault table: bad inputs and injected faults\n")
    print("Generated by `python benchmarks/faults/table.py > docs/faults.md`, which runs every case below for "
          f"real (torch {torch.__version__}, float64, 1 thread). *expected*: the error or warning class from "
          "`influencekit.errors` (or `result`: a finite answer and no error); *got*: what happened; *ms*: "
          "time until it was detected. Sign convention of every score: I_up,loss > 0 harmful, < 0 helpful; "
          "loo = -(1/n) I_up,loss.\n")
    print("Decisions: a **one-point training set** has a defined influence (H = grad^2 L(z_1) + l2 I, "
          "invertible when l2 > 0 or damping > 0), so `Influence` computes it; **leave-one-out retraining** on "
          "it is refused (`InputError`): removing the point leaves only the regulariser, whose minimiser is "
          "not a model fitted to data. Labels of a `Dataset` are checked on a probe batch at construction "
          "and all of them during the first pass over the data (`Influence.fit`); labels of tensors are "
          "checked at construction. Interruption, atomic writes and checksums are covered elsewhere "
          "(storage/resume).\n")
    print("| # | group | case | expected | got | as expected | ms | message |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{len(CASES)} cases, {unexpected} unexpected.")
    record(__file__, "cases", {"cases": len(CASES), "unexpected": unexpected, "groups": groups,
                               "seconds": time.perf_counter() - t0})
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
