"""The influence quantities of Koh & Liang (2017) for one trained model: the ``Influence`` face.

Signs and scaling of every quantity: ``influencekit.convention``.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .curvature import Spectrum, spectrum
from .data import DataLike, Examples
from .errors import InputError, NonFiniteError, UnsupportedLayerError
from .losses import LossFn, get_loss
from .objective import Objective
from .retrain import evaluate_losses
from .solvers import Solver, make_solver

#: With at most this many test vectors, "auto" scoring uses forward-mode directional derivatives
#: (k jvp passes, no per-example gradients); above it, per-layer factorised contractions
#: (``scoring.py``: Linear/Conv2d blocks without per-example gradients, vmap for any other
#: parameter), whose cost grows more slowly with k. Measured in benchmarks/scoring/epoch_ratio.py.
JVP_MAX_VECTORS = 2

#: the candidate prefilters of ``Influence.top_k``
PREFILTERS = (None, "knn", "grad")

Index = Iterable[int] | Tensor


def scores(objective: Objective, S: Tensor, data: DataLike | None = None, *, method: str = "auto",
           batch_size: int | None = None, progress: bool = False, index: Tensor | None = None) -> Tensor:
    """grad L(z_i)^T s_k for every example z_i of ``data`` (default: the training data): [k, n].

    Streams ``data`` in batches: memory is one batch (per-layer activations and output
    gradients with ``"layers"``, per-example gradients [B, p] with ``"grad"``, k forward-mode
    passes with ``"jvp"``) plus the [k, n] output. ``index`` [c]: score only those rows of the
    training data, in that order ([k, c]; e.g. FastIF's candidates); they were checked when the
    objective was built, so they are not re-validated batch by batch as ``data`` is.
    """
    S = S.unsqueeze(0) if S.dim() == 1 else S
    auto = method == "auto"
    if index is not None and data is not None:
        raise InputError("index selects rows of the training data; pass either data or index, not both.")
    ex = objective.train if data is None else Examples(data, name="scored data")
    if method == "auto":
        method = "jvp" if S.shape[0] <= JVP_MAX_VECTORS else "layers"
    if method not in ("jvp", "grad", "layers"):
        raise InputError(f"method must be 'auto', 'jvp', 'grad' or 'layers', got {method!r}.")
    S = S.to(objective.device, objective.dtype)
    if method == "layers":  # per-layer factorised contractions (scoring.py), no [B, p] gradients
        from .scoring import LayerScorer

        try:
            scorer = LayerScorer(objective, S)
        except UnsupportedLayerError:
            if not auto:
                raise
            method = "grad"  # a module the layer capture cannot replay: per-example gradients score any model
    b = batch_size or objective.batch_size
    if index is None:
        count, batches = len(ex), ex.batches(b)
    else:
        index = torch.as_tensor(index, dtype=torch.long)
        count = len(index)
        batches = ((lo, *ex.take(index[lo:lo + b])) for lo in range(0, count, b))
    out = torch.empty(S.shape[0], count, dtype=objective.dtype, device=objective.device)
    for start, x, y in tqdm(batches, total=-(-count // b), disable=not progress, desc="scoring", unit="batch"):
        if data is not None:
            objective.check_batch(x, y, "scored data")
        if method == "jvp":
            block = objective.directional(S, x, y).T
        elif method == "layers":
            try:
                block = scorer(x, y)
            except UnsupportedLayerError:  # found only when the batch runs (a layer returning a tuple, ...)
                if not auto:
                    raise
                method = "grad"
                block = S @ objective.grads(x, y).T
        else:
            block = S @ objective.grads(x, y).T
        if not torch.isfinite(block).all():  # never hand back NaN scores silently
            rows = (~torch.isfinite(block)).any(0).nonzero().flatten()[:10] + start
            rows = rows if index is None else index[rows.cpu()]
            raise NonFiniteError(f"non-finite influence scores for examples {rows.tolist()}; their gradients are "
                                 "NaN/inf: check those inputs and the loss there.")
        out[:, start:start + x.shape[0]] = block
    return out


@dataclass(frozen=True)
class TopK:
    """The k most harmful and k most helpful training points of each of m test points.

    ``harmful`` / ``helpful`` [m, k]: I_up,loss of those points (``influencekit.convention``),
    harmful largest first, helpful most negative first; ``harmful_index`` / ``helpful_index``
    [m, k]: their training rows. A list holds points of the other sign when fewer than k have
    its sign. ``scored``: distinct training points whose influence was computed (n without a
    prefilter); ``candidates`` [m, c]: the rows the prefilter offered each test point, or None;
    ``index_rebuilt``: whether the prefilter's FAISS index was built (False: reused from
    ``index_path``; None without a prefilter).
    """

    harmful: Tensor
    harmful_index: Tensor
    helpful: Tensor
    helpful_index: Tensor
    scored: int
    candidates: Tensor | None = None
    index_rebuilt: bool | None = None


class Influence:
    """Influence of every training point on any test loss, for one trained model.

    Args:
        model: trained ``nn.Module`` in eval mode (never modified).
        loss: per-example training loss, a name (``cross_entropy``, ``logistic``, ``mse``,
            ``smooth_hinge``) or ``loss(outputs, targets) -> [B]``.
        train: training data: (X, Y) tensors, a Dataset of (x, y) or a DataLoader.
        l2: the L2 / weight-decay coefficient lambda the model was trained with.
        params: names of the parameters in scope (default: all trainable).
        solver: inverse-HVP solver name (``exact``, ``cg``, ``lissa``, ...) or a ``Solver``
            instance, which carries its own damping and options (then leave ``damping`` at 0
            or equal to the solver's, and pass no ``solver_options``).
        damping: added to the Hessian's diagonal (see ``solvers.base.Solver``).
        test_loss: the loss measured on test points, if not the training loss.
        batch_size, dtype, device: see ``Objective``.
        **solver_options: passed to the solver (``tol``, ``depth``, ``scale``...).

    Every result follows ``influencekit.convention``.
    """

    def __init__(self, model: nn.Module, loss: str | LossFn, train: DataLike, *, l2: float = 0.0,
                 params: Iterable[str] | None = None, solver: str | Solver = "cg", damping: float | None = 0.0,
                 test_loss: str | LossFn | None = None, batch_size: int = 512,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 **solver_options: Any):
        self.solver = _solver(solver, damping, solver_options)
        self.objective = self.make_objective(model, loss, train, l2=l2, params=params, batch_size=batch_size,
                                             dtype=dtype, device=device)
        self.test_loss = get_loss(test_loss) if test_loss is not None else None
        self._fitted = False

    @classmethod
    def from_objective(cls, objective: Objective, *, solver: str | Solver = "cg", damping: float | None = 0.0,
                       test_loss: str | LossFn | None = None, **solver_options: Any) -> Influence:
        """The face over a training objective built elsewhere: a method that moves the training
        inputs or the parameters (the training-set attack retrains on perturbed inputs) builds an
        ``Objective`` per step and asks the same questions of it. Arguments as ``Influence``."""
        inf = cls.__new__(cls)
        inf.solver = _solver(solver, damping, solver_options)
        inf.objective = objective
        inf.test_loss = get_loss(test_loss) if test_loss is not None else None
        inf._fitted = False
        return inf

    def make_objective(self, model: nn.Module, loss: str | LossFn, train: DataLike, *, l2: float,
                       params: Iterable[str] | None, batch_size: int, dtype: torch.dtype | None,
                       device: torch.device | str | None) -> Objective:
        """The training objective R(theta). A subclass overrides this to build another kind once
        (e.g. one whose sums over the training data run across processes)."""
        return Objective(model, loss, train, l2=l2, params=params, batch_size=batch_size, dtype=dtype, device=device)

    @property
    def n(self) -> int:
        """Number of training points."""
        return self.objective.n

    @property
    def p(self) -> int:
        """Number of parameters in scope."""
        return self.objective.p

    @property
    def batch_size(self) -> int:
        """Examples per streamed batch (memory is bounded by it, not by n)."""
        return self.objective.batch_size

    def settings(self) -> dict[str, Any]:
        """What the results depend on besides model weights and data, as JSON values: the
        solver's settings (name, damping, options), n, p, l2, dtype, parameters in scope, test loss."""
        from .fingerprint import describe, jsonable

        obj = self.objective
        return jsonable({"solver": self.solver.settings(), "n": obj.n, "p": obj.p, "l2": obj.l2,
                         "dtype": str(obj.dtype), "params": list(obj.names),
                         "test_loss": None if self.test_loss is None else describe(self.test_loss)})

    def fit(self) -> Influence:
        """Check theta_hat is (near) stationary and fit the solver's curvature. Called lazily."""
        if not self._fitted:
            loss, g = self.objective.risk(with_grad=True)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"the training objective is {loss.item()} at the trained parameters; "
                                     "influence needs a finite loss: check data, labels and the model.")
            if not torch.isfinite(g).all():
                raise NonFiniteError("the gradient of the training objective is NaN/inf at the trained parameters "
                                     "(a loss that is not differentiable there, e.g. sqrt or log at 0?); use a "
                                     "smooth loss or move the parameters off that point.")
            gnorm, tnorm = g.norm().item(), self.objective.theta.norm().item()
            self.stationarity = gnorm
            if gnorm > 1e-2 * max(1.0, tnorm) * max(self.objective.l2, 1e-3):
                warnings.warn(f"the training gradient norm is {gnorm:.2e}: theta_hat is not a stationary point "
                              "of R, so influence estimates are less reliable. Train longer or check l2 "
                              f"(now {self.objective.l2}).", stacklevel=2)
            self.solver.fit(self.objective)
            self._fitted = True
        return self

    # ---- gradients, losses and s_test ---------------------------------------------------------
    def _rows(self, index: Index | None) -> Tensor:
        """Training rows as a 1-D long tensor (default: all n), checked to lie in [0, n)."""
        if index is None:
            return torch.arange(self.n)
        rows = torch.as_tensor(index if isinstance(index, Tensor) else list(index))
        if rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool:
            raise InputError(f"training indices must be integers, got {rows.dtype} (a boolean mask? pass "
                             "mask.nonzero().flatten()).")
        rows = rows.to(torch.long).flatten()
        if rows.numel() and (rows.min() < 0 or rows.max() >= self.n):
            raise InputError(f"training indices must lie in [0, n = {self.n}); got range "
                             f"[{rows.min().item()}, {rows.max().item()}].")
        return rows

    def train_gradients(self, index: Index) -> Tensor:
        """grad_theta L(z_i, theta_hat) for the training points in ``index``: [len(index), p]."""
        rows, b = self._rows(index), self.objective.batch_size
        out = [self.objective.grads(*self.objective.train.take(rows[lo:lo + b])) for lo in range(0, len(rows), b)]
        return torch.cat(out) if out else self.objective.theta.new_zeros(0, self.p)

    def test_gradients(self, test: DataLike) -> Tensor:
        """grad_theta L(z_test, theta_hat) for every test point (the test loss if one was given): [m, p]."""
        ex = Examples(test, name="test data")
        out = []
        for _, x, y in ex.batches(self.objective.batch_size):
            self.objective.check_batch(x, y, "test data", self.test_loss)
            out.append(self.objective.grads(x, y, self.test_loss))
        return torch.cat(out)

    def losses(self, data: DataLike) -> Tensor:
        """L(z, theta_hat) for every example of ``data`` (the test loss if one was given): [m]."""
        ex = Examples(data, name="data")
        for _, x, y in ex.batches(self.objective.batch_size):
            self.objective.check_batch(x, y, "data", self.test_loss)
            break  # the first batch shows a mismatch; the rest share its shapes
        return evaluate_losses(self.objective, self.objective.theta, ex, self.test_loss)

    def solve(self, V: Tensor) -> Tensor:
        """(H + dI)^{-1} V for raw vectors V [k, p] (or [p]): the solver's inverse-HVP, fitted on first use."""
        single = V.dim() == 1
        V = V.unsqueeze(0) if single else V
        if V.dim() != 2 or V.shape[1] != self.p:
            raise InputError(f"V must be [k, p] with p = {self.p} (parameters in scope), got {tuple(V.shape)}.")
        self.fit()
        out = self.solver.solve(V)
        return out[0] if single else out

    def s_test(self, test: DataLike) -> Tensor:
        """s_test = (H + dI)^{-1} grad L(z_test): [m, p]."""
        G = self.test_gradients(test)  # first: bad test data fails before the (costly) curvature fit
        return self.solve(G)

    # ---- up-weighting -------------------------------------------------------------------------
    def scores(self, S: Tensor, data: DataLike | None = None, *, index: Index | None = None, method: str = "auto",
               progress: bool = False) -> Tensor:
        """grad L(z_i)^T s_k for raw vectors S [k, p] (or [p]) and every example z_i of ``data``
        (default: the training data; ``index``: only those training rows, in that order): [k, n]
        (or [k, len(index)]). With S = s_test this is -I_up,loss. ``method``: see ``scores``."""
        S = S.unsqueeze(0) if S.dim() == 1 else S
        if S.dim() != 2 or S.shape[1] != self.p:
            raise InputError(f"S must be [k, p] with p = {self.p} (parameters in scope), got {tuple(S.shape)}.")
        rows = None if index is None else self._rows(index)
        return scores(self.objective, S, data, method=method, index=rows, progress=progress)

    def up_loss(self, test: DataLike, *, method: str = "auto", progress: bool = False) -> Tensor:
        """I_up,loss(z_i, z_test_j) for all test points j and training points i: [m, n]."""
        return -self.scores(self.s_test(test), method=method, progress=progress)

    def loo(self, test: DataLike, **kwargs: Any) -> Tensor:
        """Predicted change of each test loss when training point i is removed: -(1/n) up_loss, [m, n]."""
        return -self.up_loss(test, **kwargs) / self.n

    def up_params(self, index: Index | None = None) -> Tensor:
        """I_up,params(z_i) = -(H + dI)^{-1} grad L(z_i) for the training points in ``index``
        (default: all; memory [n, p]): [len(index), p]."""
        return -self.solve(self.train_gradients(self._rows(index)))

    def self_influence(self, *, batch_size: int | None = None, progress: bool = False) -> Tensor:
        """I_up,loss(z_i, z_i) = -grad L(z_i)^T (H + dI)^{-1} grad L(z_i) for all n points: [n].

        One solve per training point (batched), so cheap solvers (exact, low-rank) suit it best.
        """
        self.fit()
        b = batch_size or self.objective.batch_size
        out = []
        for _, x, y in tqdm(self.objective.train.batches(b), total=-(-self.n // b), disable=not progress,
                            desc="self-influence", unit="batch"):
            G = self.objective.grads(x, y)
            out.append(-(G * self.solve(G)).sum(1))
        return torch.cat(out)

    def run(self, test: DataLike, folder: str | Path, *, chunk_size: int = 1024, method: str = "grad",
            progress: bool = False) -> Tensor:
        """``up_loss(test)`` [m, n], computed chunk by chunk into ``folder`` and resumable: run again
        after an interruption, only the missing chunks are computed (``runs.ScoringRun``). A folder
        made with another model, data or settings is refused (``CacheError``)."""
        from .runs import ScoringRun

        run = ScoringRun(self, test, folder, chunk_size=chunk_size, method=method)
        with tqdm(total=len(run.bounds), disable=not progress, desc="chunks", unit="chunk") as bar:
            bar.update(len(run.bounds) - len(run.missing()))
            run.run(callback=lambda i, total: bar.update(1))
        return run.assemble()

    # ---- the most influential points ----------------------------------------------------------
    def top_k(self, test: DataLike, k: int = 10, *, prefilter: str | None = None, candidates: int = 1000,
              features: Callable[[Tensor], Tensor] | tuple[Tensor, Tensor] | None = None,
              index_kind: str = "flat", index_path: str | Path | None = None, progress: bool = False) -> TopK:
        """The k most harmful and k most helpful training points of each test point (``TopK``).

        Without ``prefilter`` all n training points are scored. With one, only ``candidates``
        per test point (at most n) are, as in FastIF (Guo et al. 2020), and their scores are the
        exact I_up,loss:

        * ``"knn"``: the nearest training points in feature space. ``features``: a function
          x [B, ...] -> [B, d], or the pair (training features [n, d], test features [m, d]);
          default ``model.features``.
        * ``"grad"``: half the candidates with the largest harmful and half with the largest
          helpful last-layer term of I_up,loss (``fastif.gradients``).

        The prefilters search a FAISS index (``pip install influencekit[fastif]``) of kind
        ``index_kind`` (``flat`` exact, ``ivf``, ``hnsw``); with ``index_path`` it is saved there
        and reused while the model and training data are unchanged.
        """
        k = _count(k, "k")
        if not 1 <= k <= self.n:
            raise InputError(f"k must be in [1, n = {self.n}] (points listed per sign), got {k}.")
        if prefilter not in PREFILTERS:
            raise InputError(f"prefilter must be one of {PREFILTERS}, got {prefilter!r}.")
        if prefilter is None:
            up = self.up_loss(test, progress=progress)
            best = _top(up, None, k)
            return TopK(**best, scored=self.n)

        candidates = _count(candidates, "candidates")
        if candidates < max(k, 2 if prefilter == "grad" else 1):
            raise InputError(f"candidates must be >= k = {k}" + (" and >= 2 (half harmful, half helpful)"
                                                                   if prefilter == "grad" else "") +
                             f", got {candidates}; raise candidates or lower k.")
        candidates = min(candidates, self.n)
        fastif = _import_fastif(prefilter)
        if index_kind not in fastif.index.KINDS:
            raise InputError(f"index_kind must be one of {fastif.index.KINDS}, got {index_kind!r}.")
        path = None if index_path is None else Path(index_path)
        test = Examples(test, name="test data")
        if prefilter == "knn":
            train_features, test_features, what = self._features(features, test)
            stamp = fastif.fingerprint(self.objective.model, self._data_fingerprint(), "knn", what)
            index, rebuilt = fastif.load_or_build(path, train_features, stamp, kind=index_kind)
            S = self.s_test(test)
            _, cand = index.search(test_features(), candidates)
        else:
            from .fingerprint import describe

            S = self.s_test(test)
            obj = self.objective
            head = fastif.head_params(obj.model)
            stamp = fastif.fingerprint(obj.model, self._data_fingerprint(), "grad", describe(obj.loss_fn),
                                       str(obj.dtype), *head)
            index, rebuilt = fastif.load_or_build(path, lambda: fastif.gradient_embedding(obj, head,
                                                                                          progress=progress),
                                            stamp, kind=index_kind, metric="ip")
            cand = fastif.gradient_candidates(index, fastif.head_block(obj, S, head), candidates)
        up = -fastif.candidate_scores(self.objective, S, cand, progress=progress)
        best = _top(up, cand, k)
        return TopK(**best, scored=int(torch.unique(cand).numel()), candidates=cand, index_rebuilt=rebuilt)

    def _data_fingerprint(self) -> str:
        from .fingerprint import fingerprint_data

        return fingerprint_data(self.objective.train)

    def _features(self, features: Any, test: Examples) -> tuple[Callable[[], Tensor], Callable[[], Tensor], Any]:
        """(training features [n, d], test features [m, d]) as deferred calls, and what identifies them."""
        from .fastif import embed
        from .fingerprint import describe

        model = self.objective.model
        if isinstance(features, (tuple, list)):
            if len(features) != 2 or not all(isinstance(f, Tensor) for f in features):
                raise InputError("features as tensors must be the pair (training features [n, d], test features "
                                 "[m, d]); or pass a function x -> [B, d].")
            F_train, F_test = features
            if F_train.dim() != 2 or F_train.shape[0] != self.n or F_test.dim() != 2 or F_test.shape[0] != len(test):
                raise InputError(f"features must be ([n = {self.n}, d], [m = {len(test)}, d]), got "
                                 f"{tuple(F_train.shape)} and {tuple(F_test.shape)}.")
            return lambda: embed(None, F_train), lambda: embed(None, F_test), F_train
        if isinstance(features, Tensor):
            raise InputError("a feature tensor alone cannot place the test points; pass (training features [n, d], "
                             "test features [m, d]) or a function x -> [B, d].")
        fn = features if features is not None else getattr(model, "features", None)
        if fn is None:
            raise InputError(f"prefilter='knn' needs feature embeddings, and {type(model).__name__} has no "
                             "`features`; pass features=<function x -> [B, d]> or (train [n, d], test [m, d]), "
                             "or use prefilter='grad'.")
        if not callable(fn):
            raise InputError(f"features must be a function x -> [B, d] or a pair of tensors, got {type(fn).__name__}.")
        what = "model.features" if features is None else describe(fn)
        return (lambda: embed(model, self.objective.train, fn=fn), lambda: embed(model, test, fn=fn), what)

    # ---- input perturbation -------------------------------------------------------------------
    def pert_loss(self, test: DataLike, index: Index | None = None, *, wrt: str = "x") -> Tensor:
        """I_pert,loss(z_i, z_test_j) for the training rows ``index`` (default: all n):
        [m, k, *x.shape[1:]] (``wrt="y"``: shaped like the labels), ``perturbation.py``."""
        from .perturbation import pert_loss

        rows = self._rows(index)
        if not len(rows):
            raise InputError("index is empty; name at least one training row.")
        S = self.s_test(test)
        obj, b = self.objective, self.objective.batch_size
        return torch.cat([pert_loss(obj, S, *obj.train.take(rows[lo:lo + b]), wrt=wrt)
                          for lo in range(0, len(rows), b)], dim=1)

    # ---- curvature ----------------------------------------------------------------------------
    def spectrum(self, steps: int = 30, seed: int = 0) -> Spectrum:
        """Estimated extreme eigenvalues of the undamped H (``curvature.spectrum``)."""
        return spectrum(self.objective, steps, seed)

    def suggest_damping(self, steps: int = 30) -> float:
        """A damping that makes H + dI positive definite (``curvature.Spectrum.suggested_damping``)."""
        return self.spectrum(steps).suggested_damping

    def loo_newton(self, test: DataLike, index: Iterable[int]) -> Tensor:
        """Predicted change of each test loss when training point i is removed, by one exact
        Newton step on the leave-one-out objective: [m, len(index)].

            theta_{-i} - theta_hat ~ (1/n) (H + dI - (1/n) grad^2 L(z_i))^{-1} grad L(z_i)

        Unlike ``loo`` it takes the removed point's own curvature out of the Hessian, which
        matters when one point carries much of it (a support vector on the margin of a
        smooth-hinge SVM, a point of high leverage). Needs the explicit Hessian [p, p] and one
        per-example Hessian and solve per index: for small p. Same sign as ``loo``.
        """
        from torch.func import hessian as func_hessian

        self.fit()
        obj = self.objective
        H = getattr(self.solver, "hessian", None)
        if H is None:
            H = obj.hessian().to(torch.float64)
        H = H + self.solver.damping * torch.eye(obj.p, dtype=H.dtype, device=H.device)
        G_test = self.test_gradients(test).to(torch.float64)
        idx = self._rows(index).tolist()
        x, y = obj.cast(*obj.train.take(idx))
        single = lambda th, xi, yi: obj.losses(th, xi[None], yi[None])[0]  # noqa: E731
        out = torch.empty(G_test.shape[0], len(idx), dtype=torch.float64)
        for col in range(len(idx)):
            g = obj.grads(x[col:col + 1], y[col:col + 1])[0].to(torch.float64)
            with torch.no_grad():
                Hi = func_hessian(single)(obj.theta, x[col], y[col]).to(torch.float64)
            delta = torch.linalg.solve(H - Hi / self.n, g) / self.n
            out[:, col] = (G_test @ delta).cpu()
        return out



def _solver(solver: str | Solver, damping: float | None, options: dict[str, Any]) -> Solver:
    """The solver by name (with ``damping`` and ``options``), or the instance given, which carries
    its own damping and options: then a different damping or any option is an error, not ignored."""
    if not isinstance(solver, Solver):
        return make_solver(solver, damping=damping, **options)
    if options:
        raise InputError(f"solver options {sorted(options)} were given alongside a {solver.name!r} solver instance; "
                         "pass them to its constructor (make_solver(name, ...)), or pass the solver by name.")
    if damping != 0.0 and damping != solver.damping:
        raise InputError(f"damping={damping} was given alongside a {solver.name!r} solver instance whose damping is "
                         f"{solver.damping}; set it in the solver (make_solver({solver.name!r}, damping={damping})), "
                         f"or pass solver={solver.name!r} by name.")
    return solver

def _count(value: Any, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise InputError(f"{name} must be an integer, got {value!r}.") from None


def _top(up_loss: Tensor, index: Tensor | None, k: int) -> dict[str, Tensor]:
    from .fastif.prefilter import top_influential

    return top_influential(up_loss, index, k)


def _import_fastif(prefilter: str) -> Any:
    """``influencekit.fastif`` once FAISS is importable, else an ``InputError`` that says how to get it."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise InputError(f"prefilter={prefilter!r} searches a FAISS index and faiss is not installed; "
                         "pip install influencekit[fastif] (or use prefilter=None).") from None
    from . import fastif
    from .fastif import index  # noqa: F401  (for fastif.index.KINDS)

    return fastif
