"""Properties that must hold for any small model and data (hypothesis draws them, float64):

* influence does not depend on how the data is batched, chunked or wrapped (tensors, Dataset,
  DataLoader);
* exact, CG and LiSSA solve the same system (LiSSA to the accuracy its depth guarantees);
* the sign convention: removing the most helpful training point (most negative I_up,loss)
  raises the test loss on retraining, removing the most harmful one lowers it.

Draws are derandomised (the same examples every run) so CI is reproducible.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import influencekit as ik
from influencekit.experiments.models import MLP, LogisticRegression
from influencekit.influence import scores

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Problem:
    kind: str
    model: nn.Module
    loss: str
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    l2: float
    damping: float

    @property
    def n(self) -> int:
        return len(self.train[0])

    def influence(self, **kw) -> ik.Influence:
        kw.setdefault("damping", self.damping)
        return ik.Influence(self.model, self.loss, self.train, l2=self.l2, **kw)


def _make(kind: str, n: int, d: int, l2: float, seed: int, m: int = 8) -> Problem:
    """n training and m test points; linear regression (mse), logistic regression, or a 3-class
    tanh MLP (cross-entropy; not convex at its random initialisation, so damped by
    d = max(0, -lambda_min) + lambda_max / 4, which makes H + dI well conditioned)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + m, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    noise = torch.randn(n + m, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    if kind == "linear":
        Y, model, loss = (X @ w + 0.5 * noise).unsqueeze(1), nn.Linear(d, 1), "mse"
    elif kind == "logistic":
        Y, model, loss = (X @ w + noise > 0).long(), LogisticRegression(d), "logistic"
    else:
        Y, model, loss = torch.randint(0, 3, (n + m,), generator=g), MLP(d, (3,), 3), "cross_entropy"
    model = model.double().eval()
    damping = 0.0
    if kind == "mlp":
        lam = torch.linalg.eigvalsh(ik.Objective(model, loss, (X[:n], Y[:n]), l2=l2).hessian())
        damping = max(0.0, -lam[0].item()) + 0.25 * lam[-1].abs().item()
    return Problem(kind, model, loss, (X[:n], Y[:n]), (X[n:], Y[n:]), l2, damping)


@st.composite
def problems(draw, kinds=("linear", "logistic", "mlp"), min_n: int = 3) -> Problem:
    return _make(draw(st.sampled_from(kinds)), draw(st.integers(min_n, 24)), draw(st.integers(1, 4)),
                 draw(st.floats(0.1, 1.0)), draw(st.integers(0, 2**16)))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@settings(max_examples=15, **SETTINGS)
@given(problems(), st.data())
def test_influence_is_the_same_for_every_batch_size_chunk_size_data_format_and_scoring_method(prob, data):
    event(f"model: {prob.kind}")
    batch = st.integers(1, prob.n + 3)
    ref = prob.influence(solver="exact", batch_size=prob.n).up_loss(prob.test, method="grad")
    inf = prob.influence(solver="exact", batch_size=data.draw(batch, "objective batch"))
    torch.testing.assert_close(inf.up_loss(prob.test, method=data.draw(st.sampled_from(["jvp", "grad"]))), ref,
                               rtol=1e-9, atol=1e-12)
    # scoring chunks independent of the objective's batches
    S = inf.s_test(prob.test)
    chunked = -scores(inf.objective, S, batch_size=data.draw(batch, "scoring chunk"),
                         method=data.draw(st.sampled_from(["jvp", "grad"])))
    torch.testing.assert_close(chunked, ref, rtol=1e-9, atol=1e-12)
    # the same data as a Dataset or a DataLoader (whose own batching and shuffling are ignored)
    X, Y = prob.train
    as_dataset = TensorDataset(X, Y)
    as_loader = DataLoader(as_dataset, batch_size=data.draw(batch, "loader batch"), shuffle=True)
    for train in (as_dataset, as_loader):
        other = ik.Influence(prob.model, prob.loss, train, l2=prob.l2, damping=prob.damping, solver="exact",
                             batch_size=data.draw(batch))
        torch.testing.assert_close(other.up_loss(prob.test), ref, rtol=1e-9, atol=1e-12)
    # test points together or one at a time
    Xt, Yt = prob.test
    alone = torch.cat([inf.up_loss((Xt[j:j + 1], Yt[j:j + 1])) for j in range(len(Xt))])
    torch.testing.assert_close(alone, ref, rtol=1e-9, atol=1e-12)
    # the explicit Hessian, built column chunk by column chunk
    H = inf.objective.hessian(chunk=data.draw(st.integers(max(1, inf.objective.p // 4), inf.objective.p)))
    torch.testing.assert_close(H, prob.influence(solver="exact", batch_size=prob.n).objective.hessian(),
                               rtol=1e-10, atol=1e-12)
    # an iterative solver too: CG's Hessian-vector products summed over other batches
    few = st.integers(max(1, prob.n // 3), prob.n + 3)  # <= 3 batches per CG iteration: keeps it fast
    cg_a = prob.influence(solver="cg", tol=1e-11, max_iter=4 * S.shape[1], batch_size=data.draw(few))
    cg_b = prob.influence(solver="cg", tol=1e-11, max_iter=4 * S.shape[1], batch_size=data.draw(few))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ik.ConvergenceWarning)  # judged by the result below
        assert _rel(cg_a.up_loss(prob.test), cg_b.up_loss(prob.test)) < 1e-7


@settings(max_examples=12, **SETTINGS)
@given(problems())
def test_exact_cg_and_lissa_give_the_same_influence(prob):
    event(f"model: {prob.kind}")
    test = (prob.test[0][:3], prob.test[1][:3])
    exact = prob.influence(solver="exact")
    ref = exact.up_loss(test)
    cg = prob.influence(solver="cg", tol=1e-11, max_iter=4 * exact.objective.p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ik.ConvergenceWarning)  # judged by the result below
        assert _rel(cg.up_loss(test), ref) < 1e-7
    # LiSSA on the full batch is the deterministic Neumann series: after t steps its error is at
    # most (1 - lambda_min/scale)^(t+1) of the solution, so choose t for 1e-4 and check that
    lam = exact.solver.eigenvalues  # of H + dI
    lissa = prob.influence(solver="lissa", batch_size=prob.n, depth=1)
    lissa.fit()
    rate = 1.0 - lam[0].item() / lissa.solver.scale
    assert 0 <= rate < 1  # scale above lambda_max: the series converges
    depth = math.ceil(math.log(1e-3) / math.log(rate))
    assume(depth <= 200)  # keep the test fast; slower-converging draws are skipped, not failed
    lissa.solver.depth = depth
    assert _rel(lissa.s_test(test), exact.s_test(test)) < 1e-3
    assert _rel(lissa.up_loss(test), ref) < 1e-2


@settings(max_examples=10, **SETTINGS)
@given(problems(min_n=8))
def test_removing_the_most_helpful_point_raises_the_test_loss_and_the_most_harmful_lowers_it(prob):
    """On a high-loss test point (where the first-order term dominates, as in Koh & Liang), at a
    stationary point; the MLP is kept only where that point is a minimum (H positive definite)."""
    obj = ik.Objective(prob.model, prob.loss, prob.train, l2=prob.l2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ik.ConvergenceWarning)
            model = obj.to_model(ik.minimize(obj, newton_steps=2)).eval()
        inf = ik.Influence(model, prob.loss, prob.train, l2=prob.l2, solver="exact")
        inf.fit()
    except ik.NegativeCurvatureError:
        assume(False)  # a saddle of the MLP: no minimum to linearise around
    test_losses = inf.objective.losses(inf.objective.theta, *inf.objective.cast(*prob.test))
    j = int(test_losses.argmax())
    test = (prob.test[0][j:j + 1], prob.test[1][j:j + 1])
    up = inf.up_loss(test)[0]
    helpful, harmful = int(up.argmin()), int(up.argmax())
    assert up[helpful] < 0 < up[harmful]
    event(f"model: {prob.kind}")
    try:
        actual = ik.loo_retrain(inf.objective, [helpful, harmful], test, newton_steps=2)[0]
    except ik.NegativeCurvatureError:
        assume(False)  # removing a point turned the MLP's minimum into a saddle
    assert actual[0] > 0, f"removing helpful z_{helpful} (I_up,loss {up[helpful]:.3e}) changed the loss by {actual[0]}"
    assert actual[1] < 0, f"removing harmful z_{harmful} (I_up,loss {up[harmful]:.3e}) changed the loss by {actual[1]}"
    # and loo = -(1/n) I_up,loss predicts the change to first order
    torch.testing.assert_close(inf.loo(test)[0, [helpful, harmful]], -up[[helpful, harmful]] / prob.n)
