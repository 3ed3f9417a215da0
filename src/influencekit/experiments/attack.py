"""Training-set attacks (Koh & Liang 2017, Sec. 5.2): perturb a few training inputs, within an
L-inf bound, so that the model *retrained* on them misclassifies a chosen test point.

Each step moves the chosen training inputs by ``step`` along sign(I_pert,loss(z_i, z_target))
(``perturbation.py``): to first order that raises the target's test loss by
(1/n) step ||I_pert,loss||_1 per point. The perturbation is clipped to the L-inf ball of radius
``bound`` around the original inputs and to the valid pixel range [0, 1]; then the model is
retrained on the perturbed training set and s_test recomputed at the new parameters, so later
steps follow the gradient of the model that would actually be deployed.

Two victims:

* ``TopLayerVictim``: a frozen feature extractor with a convex top layer (e.g. logistic
  regression on SmallCNN features). Retraining goes to the stationary point of the convex
  objective (``retrain.minimize``), and the perturbation flows through the frozen features to
  the pixels.
* ``NetworkVictim``: every parameter of the network in scope, retrained from the warm start
  to the stationary point of its basin (the local model influence linearises); s_test by CG
  with damping.

Success is always measured on the retrained model, never on the influence prediction. Each
victim builds objectives of its own (retraining with moved inputs is the method) and never
changes the parameters of one it shares: an objective at other parameters is a copy (``_at``).

``run(problem)`` attacks a few test points of a problem whose ``extra["victim"]`` is a ``Victim``
(``attack_mnist.top_layer`` / ``network``). Signs: ``influencekit.convention``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import storage
from ..convention import PERT_CONVENTION, SIGN_CONVENTION
from ..errors import InputError
from ..influence import Influence
from ..losses import LossFn
from ..objective import Objective
from ..perturbation import pert_loss, predicted_change
from ..retrain import minimize
from . import report
from .problems import Problem


@dataclass
class AttackConfig:
    """Settings of one attack.

    Attributes:
        k: number of training points perturbed.
        bound: L-inf bound on each perturbation, in input units (pixels in [0, 1]: 8/255).
        step: size of each signed step (1/255: one grey level).
        max_steps: steps before giving up; at least bound/step to use the whole budget.
        select: how the k points are chosen at the start: ``"up_loss"`` (largest |I_up,loss|,
            as in the paper) or ``"pert_l1"`` (largest ||I_pert,loss||_1, the first-order
            gain of an L-inf step; costs I_pert,loss for every training point).
        lo, hi: valid input range the perturbed inputs are clipped to.
        solver, damping: inverse-HVP solver for s_test (``exact`` for a small top layer).
    """

    k: int = 5
    bound: float = 8 / 255
    step: float = 1 / 255
    max_steps: int = 16
    select: str = "up_loss"
    lo: float = 0.0
    hi: float = 1.0
    solver: str = "exact"
    damping: float = 0.0

    def check(self) -> None:
        if self.k < 1:
            raise InputError(f"k (training points to perturb) must be >= 1, got {self.k}.")
        if not (0 < self.step <= self.bound):
            raise InputError(f"need 0 < step <= bound, got step={self.step}, bound={self.bound}; e.g. step=1/255, "
                             "bound=8/255.")
        if self.select not in ("up_loss", "pert_l1"):
            raise InputError(f"select must be 'up_loss' or 'pert_l1', got {self.select!r}.")
        if self.max_steps < 1:
            raise InputError(f"max_steps must be >= 1, got {self.max_steps}.")


@dataclass
class AttackResult:
    """Outcome of one attack, measured on the retrained model.

    Shapes: index [k]; x_before, x_after [k, *input shape]. Losses are the target's test loss
    (the training loss function) at the trained and at the finally retrained parameters.
    ``predicted_rise`` sums the first-order predictions (1/n) I_pert,loss . delta of the steps
    taken; ``actual_rise`` = loss_after - loss_before from retraining.
    """

    index: Tensor
    x_before: Tensor
    x_after: Tensor
    label: int
    prediction_before: int
    prediction_after: int
    loss_before: float
    loss_after: float
    predicted_rise: float
    steps: int
    theta: Tensor
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def flipped(self) -> bool:
        return self.prediction_after != self.prediction_before

    @property
    def delta(self) -> Tensor:
        return self.x_after - self.x_before

    @property
    def actual_rise(self) -> float:
        return self.loss_after - self.loss_before

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no tensors but the indices)."""
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, Tensor)}
        d.update(index=self.index.tolist(), flipped=self.flipped, actual_rise=self.actual_rise,
                 linf=float(self.delta.abs().max()))
        return d


def _at(objective: Objective, theta: Tensor) -> Objective:
    """``objective`` at the parameters ``theta`` [p]: a shallow copy (model and data shared), so the
    objective itself keeps its own parameters."""
    moved = copy.copy(objective)
    moved.theta = theta.to(objective.device, objective.dtype)
    return moved


class Victim:
    """What an attack needs of a model: its parameters in scope, I_pert,loss on (perturbed)
    inputs, s_test, retraining, and the target's loss and prediction."""

    theta: Tensor
    X0: Tensor
    Y: Tensor

    def pert(self, theta: Tensor, s: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """I_pert,loss at parameters theta for inputs x [B, ...]: [B, ...]."""
        raise NotImplementedError

    def training_objective(self, X: Tensor, theta: Tensor) -> Objective:
        """The training objective (whose Hessian s_test uses) on inputs X, at theta."""
        raise NotImplementedError

    def retrain(self, X: Tensor, theta0: Tensor) -> Tensor:
        """Parameters [p] retrained on inputs X from the warm start theta0."""
        raise NotImplementedError

    def target(self, x: Tensor, y: Tensor) -> tuple[Objective, Tensor, Tensor]:
        """(objective, x', y') such that objective.losses/outputs/grads(theta, x', y') evaluate
        the model on the test points (x, y) at any theta."""
        raise NotImplementedError

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        obj, xx, _ = self.target(x, torch.zeros(len(x)))
        with torch.no_grad():
            return obj.outputs(theta, xx)

    def predict(self, theta: Tensor, x: Tensor, batch: int = 1024) -> Tensor:
        """Predicted class of each input: [B] (long): logit > 0 for one output, else argmax."""
        out = torch.cat([self.logits(theta, x[i:i + batch]) for i in range(0, len(x), batch)])
        return (out > 0).long() if out.dim() == 1 else out.argmax(1)

    def accuracy(self, theta: Tensor, x: Tensor, y: Tensor) -> float:
        """Fraction of (x, y) classified correctly at theta."""
        return float((self.predict(theta, x) == y.long()).double().mean())


class TopLayerVictim(Victim):
    """A frozen ``features`` module followed by a trainable convex ``head`` (for example
    ``LogisticRegression(d)`` with the logistic loss). Inputs are what ``features`` takes
    (pixels); the head is retrained on cached features, recomputed only for perturbed rows.

    Args:
        features: frozen extractor [B, ...] -> [B, d] (not modified; evaluated in its own dtype).
        head: the top layer, trained (ideally to a stationary point) on features(X).
        loss: per-example loss of the head (``logistic``, ``cross_entropy``...).
        X, Y: training inputs [n, ...] and labels [n].
        l2: L2 coefficient the head was trained with (> 0 keeps the problem strongly convex).
        dtype: dtype of the head's objective and retraining (float64: L-BFGS to round-off).
    """

    def __init__(self, features: nn.Module, head: nn.Module, loss: str | LossFn, X: Tensor, Y: Tensor, *,
                 l2: float, dtype: torch.dtype = torch.float64, batch_size: int = 1024):
        self.dtype, self.batch_size, self.l2 = dtype, batch_size, float(l2)
        self.features = copy.deepcopy(features).eval().requires_grad_(False)
        fdtype = next(self.features.parameters()).dtype
        self.head = copy.deepcopy(head).to(dtype).eval()
        self.X0, self.Y = X, Y
        self.F = self._features(X)  # [n, d] cache, updated in place for perturbed rows
        self._X_cached = X.clone()
        self.head_objective = Objective(self.head, loss, (self.F, Y), l2=l2, dtype=dtype, batch_size=batch_size)
        self.theta = self.head_objective.theta.clone()
        # pixel-level objective: I_pert,loss flows through the frozen features to the pixels
        model = nn.Sequential(OrderedDict(features=self.features, head=copy.deepcopy(head).to(fdtype).eval()))
        self.pixel_objective = Objective(model, loss, (X[:4], Y[:4]), l2=l2, dtype=fdtype,
                                         params=[f"head.{k}" for k, _ in head.named_parameters()])

    def _features(self, X: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.features(X[i:i + self.batch_size])
                              for i in range(0, len(X), self.batch_size)]).to(self.dtype)

    def _refresh(self, X: Tensor) -> None:
        changed = (X != self._X_cached).reshape(len(X), -1).any(1).nonzero().flatten()
        if len(changed):
            self.F[changed] = self._features(X[changed])
            self._X_cached[changed] = X[changed]

    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        # features of the two most recent input tensors are kept (keyed by identity; inputs must
        # not be changed in place): the test set evaluated after each attack costs a head pass, not a CNN pass
        cache = self.__dict__.setdefault("_feature_cache", {})
        hit = cache.get(id(x))
        if hit is None or hit[0] is not x:
            if len(cache) >= 2:  # the target and one test set: drop the least recently used
                cache.pop(next(iter(cache)))
            hit = (x, self._features(x))
        cache.pop(id(x), None)
        cache[id(x)] = hit  # most recently used last
        with torch.no_grad():
            return self.head_objective.outputs(theta.to(self.dtype), hit[1])

    def predict(self, theta: Tensor, x: Tensor, batch: int = 1024) -> Tensor:
        out = self.logits(theta, x)
        return (out > 0).long() if out.dim() == 1 else out.argmax(1)

    def pert(self, theta: Tensor, s: Tensor, x: Tensor, y: Tensor) -> Tensor:
        obj = _at(self.pixel_objective, theta)
        return pert_loss(obj, s.to(obj.dtype), x, y)

    def training_objective(self, X: Tensor, theta: Tensor) -> Objective:
        # the same R(theta) as on pixels, on cached features: no convolution per pass
        self._refresh(X)
        return _at(self.head_objective, theta)

    def target(self, x: Tensor, y: Tensor) -> tuple[Objective, Tensor, Tensor]:
        return self.head_objective, self._features(x), y

    def retrain(self, X: Tensor, theta0: Tensor) -> Tensor:
        # a few Newton steps (p is small) take L-BFGS's answer to round-off: a stationary point, not a near one
        return minimize(self.training_objective(X, theta0), theta0=theta0, grad_tol=1e-9, max_iter=500, newton_steps=1)


class NetworkVictim(Victim):
    """A whole network, every trainable parameter in scope, retrained from the warm start by
    full-batch L-BFGS towards a stationary point (``max_iter`` iterations at most)."""

    def __init__(self, model: nn.Module, loss: str | LossFn, X: Tensor, Y: Tensor, *, l2: float,
                 batch_size: int = 512, max_iter: int = 200):
        self.model = copy.deepcopy(model).eval()
        self.loss, self.l2, self.batch_size, self.max_iter = loss, float(l2), batch_size, max_iter
        self.X0, self.Y = X, Y
        self._obj = Objective(self.model, loss, (X, Y), l2=l2, batch_size=batch_size)
        self.theta = self._obj.theta.clone()

    def training_objective(self, X: Tensor, theta: Tensor) -> Objective:
        return _at(Objective(self.model, self.loss, (X, self.Y), l2=self.l2, batch_size=self.batch_size), theta)

    def pert(self, theta: Tensor, s: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return pert_loss(_at(self._obj, theta), s, x, y)

    def target(self, x: Tensor, y: Tensor) -> tuple[Objective, Tensor, Tensor]:
        return self._obj, x, y

    def retrain(self, X: Tensor, theta0: Tensor) -> Tensor:
        import warnings

        from ..errors import ConvergenceWarning

        with warnings.catch_warnings():  # a network stops short of round-off; the flip is what is judged
            warnings.simplefilter("ignore", ConvergenceWarning)
            return minimize(self.training_objective(X, theta0), theta0=theta0, grad_tol=1e-6, max_iter=self.max_iter)


def attack(victim: Victim, x_target: Tensor, y_target: Tensor, config: AttackConfig | None = None,
           index: Tensor | None = None) -> AttackResult:
    """Attack one test point ``(x_target [1, ...], y_target [1])``: perturb ``config.k``
    training inputs (or those in ``index``) along sign(I_pert,loss) until the retrained model's
    prediction on it changes or ``max_steps`` is reached.

    Returns an ``AttackResult`` (prediction before/after retraining, test losses, the
    perturbed inputs). The victim's training inputs are not modified.
    """
    config = config or AttackConfig()
    config.check()
    if x_target.shape[0] != 1 or y_target.shape[0] != 1:
        raise InputError(f"attack one target at a time: x_target [1, ...], y_target [1]; got {tuple(x_target.shape)}.")
    X = victim.X0.clone()
    n = len(X)
    theta = victim.theta.clone()
    tobj, tx, ty = victim.target(x_target, y_target)
    tx, ty = tobj.cast(tx, ty)

    def target_loss(th: Tensor) -> float:
        with torch.no_grad():
            return float(tobj.losses(th, tx, ty)[0])

    def influence(th: Tensor) -> Influence:
        # the face over the (perturbed) training objective at th: its H is what s_test inverts
        return Influence.from_objective(victim.training_objective(X, th), solver=config.solver, damping=config.damping)

    def s_test(th: Tensor) -> Tensor:
        return influence(th).solve(tobj.grads(tx, ty, theta=th))[0]  # (H + dI)^{-1} grad L(z_target)

    pred0 = int(victim.predict(theta, x_target)[0])
    loss0 = target_loss(theta)
    s = s_test(theta)
    if index is None:
        if config.select == "up_loss":
            up = -influence(theta).scores(s)[0]  # I_up,loss for every training point
            index = up.abs().topk(min(config.k, n)).indices
        else:
            l1 = torch.cat([victim.pert(theta, s, X[i:i + 256], victim.Y[i:i + 256]).reshape(-1, X[0].numel())
                            .abs().sum(1) for i in range(0, n, 256)])
            index = l1.topk(min(config.k, n)).indices
    index = torch.as_tensor(index, dtype=torch.long).flatten()
    if index.min() < 0 or index.max() >= n:
        raise InputError(f"training indices must be in [0, {n}), got {index.tolist()}.")
    x0 = X[index].clone()
    predicted, history, pred, loss, steps = 0.0, [], pred0, loss0, 0
    for steps in range(1, config.max_steps + 1):
        g = victim.pert(theta, s, X[index], victim.Y[index]).to(X.dtype)
        new = X[index] + config.step * g.sign()
        new = torch.minimum(torch.maximum(new, x0 - config.bound), x0 + config.bound).clamp(config.lo, config.hi)
        predicted += float(predicted_change(g, new - X[index], n))
        X[index] = new
        theta = victim.retrain(X, theta)
        pred, loss = int(victim.predict(theta, x_target)[0]), target_loss(theta)
        history.append({"step": steps, "loss": loss, "predicted_rise": predicted, "prediction": pred})
        if pred != pred0:
            break
        s = s_test(theta)
    victim.training_objective(victim.X0, victim.theta)  # leave the victim's caches at the clean data
    return AttackResult(index=index, x_before=x0, x_after=X[index].clone(), label=int(y_target[0]),
                        prediction_before=pred0, prediction_after=pred, loss_before=loss0, loss_after=loss,
                        predicted_rise=predicted, steps=steps, theta=theta, history=history)


# ---- the use: attacks on a problem's test points, their JSON and report section ----------------

@dataclass
class AttackRun:
    """``run``'s result: one row per attacked test point (``AttackResult.summary()`` plus the
    retrained model's accuracy on the rest of the test set), the settings, and the attacks
    themselves (``attacks``, with their targets ``targets`` [1, ...] each) for the figures."""

    problem: str
    notes: str
    clean_accuracy: float
    config: AttackConfig
    rows: list[dict[str, Any]]
    seconds: float
    attacks: list[AttackResult] = field(repr=False, default_factory=list)
    targets: list[Tensor] = field(repr=False, default_factory=list)

    @property
    def success_rate(self) -> float:
        """Fraction of the attacked test points whose retrained prediction changed."""
        return sum(r["flipped"] for r in self.rows) / len(self.rows)

    def to_json(self) -> dict[str, Any]:
        """JSON-able: settings, success rate, one row per attack, and both conventions."""
        return {"setting": self.problem, "notes": self.notes, "clean_accuracy": self.clean_accuracy,
                "success_rate": self.success_rate, "config": asdict(self.config), "seconds": self.seconds,
                "convention": SIGN_CONVENTION, "perturbation_convention": PERT_CONVENTION, "attacks": self.rows}

    def figure(self, i: int) -> bytes:
        """Attack ``i``'s before / after / difference figure (PNG bytes)."""
        r, j = self.attacks[i], self.rows[i]["test_index"]
        return report.attack_figure(r, self.targets[i], f"test #{j}, k={self.config.k}, L-inf <= "
                                    f"{self.config.bound * 255:g}/255")

    def report(self, page: report.Page) -> None:
        """Attack section: the outcome of every attack after retraining, and its figure."""
        c = self.config
        page.heading(f"Training-set attack: {self.problem}")
        page.text(f"{self.notes}. Clean test accuracy {self.clean_accuracy:.4f}; k = {c.k} training images moved "
                  f"along sign(I_pert,loss), L-inf <= {c.bound * 255:g}/255, step {c.step * 255:g}/255, <= "
                  f"{c.max_steps} steps; success rate after retraining {self.success_rate:.2f}.")
        page.text(PERT_CONVENTION, note=True)
        cols = ["test index", "label", "prediction before", "after", "flipped", "steps", "loss before", "loss after",
                "predicted rise", "accuracy on the rest"]
        keys = ["test_index", "label", "prediction_before", "prediction_after", "flipped", "steps", "loss_before",
                "loss_after", "predicted_rise", "retrained_accuracy_rest"]
        page.table(cols, [[r[k] for k in keys] for r in self.rows])
        for i, r in enumerate(self.rows):
            page.figure(self.figure(i), f"test point {r['test_index']}: the target, then each perturbed training "
                        "image: original, perturbed, difference")


def correct_targets(problem: Problem, count: int, seed: int = 0) -> Tensor:
    """Indices of ``count`` random test points of ``problem`` its victim classifies correctly: [count]."""
    v: Victim = problem.extra["victim"]
    x_test, y_test = problem.test
    ok = (v.predict(v.theta, x_test) == y_test.long()).nonzero().flatten()
    return ok[torch.randperm(len(ok), generator=torch.Generator().manual_seed(seed))[:count]]


def run(problem: Problem, config: AttackConfig | None = None, *, test_index: list[int] | None = None,
        targets: int = 3, seed: int = 0, out: str | os.PathLike | None = None) -> AttackRun:
    """Attack the test points ``test_index`` of ``problem`` (default: ``targets`` random correctly
    classified ones) one at a time with its victim (``problem.extra["victim"]``), s_test by the
    problem's solver and damping (they replace ``config``'s). With ``out``: per target a figure
    (attack_test{j}.png) and the perturbed images (attack_test{j}.safetensors, ``storage``), and
    attack.json."""
    t0 = time.perf_counter()
    v: Victim = problem.extra["victim"]
    x_test, y_test = problem.test
    cfg = dataclasses.replace(config or AttackConfig(), solver=problem.solver, damping=problem.damping)
    cfg.check()
    if targets < 1:
        raise InputError(f"targets must be >= 1, got {targets}.")
    if test_index:
        bad = [i for i in test_index if not 0 <= i < len(x_test)]
        if bad:
            raise InputError(f"--test-index {bad} out of range [0, {len(x_test)}).")
        chosen = list(test_index)
    else:
        chosen = correct_targets(problem, targets, seed).tolist()
    res = AttackRun(problem.extra.get("setting", problem.name), problem.notes, v.accuracy(v.theta, x_test, y_test),
                    cfg, [], 0.0)
    folder = Path(out) if out is not None else None
    for j in chosen:
        x, y = x_test[j:j + 1], y_test[j:j + 1]
        r = attack(v, x, y, cfg)
        rest = [i for i in range(len(x_test)) if i != j]
        row = {"test_index": j, **r.summary(),
               "retrained_accuracy_rest": v.accuracy(r.theta, x_test[rest], y_test[rest])}
        res.attacks.append(r)
        res.targets.append(x)
        res.rows.append(row)
        if folder is not None:
            row["figure"] = str(report.save(res.figure(len(res.rows) - 1), folder / f"attack_test{j}.png"))
            storage.save(folder / f"attack_test{j}", {"index": r.index, "x_before": r.x_before.float(),
                                                       "x_after": r.x_after.float()}, {"test_index": j})
    res.seconds = time.perf_counter() - t0
    if folder is not None:
        report.save(json.dumps(res.to_json(), indent=1).encode(), folder / "attack.json")
    return res
