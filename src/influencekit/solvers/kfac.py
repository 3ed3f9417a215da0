"""K-FAC and EK-FAC inverse-HVPs: block-diagonal (one block per Linear/Conv2d layer) Kronecker-
factored curvature (Martens & Grosse 2015; KFC for convolutions, Grosse & Martens 2016; EK-FAC,
George et al. 2018).

For a layer with block gradient G_b = sum_t g_bt a_bt^T [d_out, cols] (see ``layers``):

    A = (1/n) sum_b sum_t a_bt a_bt^T                  [cols, cols]  (ones column for the bias)
    S = (1/(n T)) sum_b sum_r sum_t g_brt g_brt^T       [d_out, d_out]
    curvature block ~ S (x) A = (Q_S (x) Q_A) diag(lam) (Q_S (x) Q_A)^T

K-FAC: lam_ij = s_i a_j (eigenvalues of S and A). EK-FAC refits them in the Kronecker eigenbasis
from the per-example block gradients, lam_ij = (1/n) sum_b sum_r (Q_S^T G_br Q_A)_ij^2, which is
the best diagonal in that basis (in Frobenius norm). The g's are pseudo-gradients of the GGN by
default (``layers.FISHER_TYPES``): the curvature approximated is the Gauss-Newton part of the
Hessian of the data term, always positive semi-definite.

The inverse applied to a block V [d_out, cols] is Q_S [(Q_S^T V Q_A) / (lam + l2 + d)] Q_A^T,
where l2 is the objective's L2 coefficient (its exact l2 I Hessian term) and d the damping.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, NegativeCurvatureError
from ..layers import FISHER_TYPES, LayerBlock, LayerCapture
from ..objective import Objective
from .base import Solver, register

#: damping=None: per layer, d = AUTO_DAMPING x mean eigenvalue of the layer's block (the
#: rule of kronfluence / Grosse et al. 2023 for networks).
AUTO_DAMPING = 0.1


@register
class KFACSolver(Solver):
    """K-FAC inverse-HVP (block-diagonal over layers).

    Args:
        damping: d >= 0 added to every eigenvalue (with the objective's l2), the same d as
            ``H + dI`` of the other solvers; ``None``: per layer 0.1 x the mean eigenvalue of
            that layer's block (``AUTO_DAMPING``; a default for networks, whose Hessian the
            GGN underestimates in directions of small curvature). ``Influence`` passes its
            own ``damping`` (default 0).
        fisher: "ggn" (default; exact expected true Fisher, no label sampling) or "empirical"
            (observed labels). See ``layers.FISHER_TYPES``.
        batch_size: examples per capture batch (memory: batch x outputs x layer width);
            default the objective's batch size, at most 256.

    After ``fit``: ``blocks`` (the layers), ``factors`` (per layer a dict with ``QA``, ``QS``
    and ``eigenvalues`` [d_out, cols]) and ``layer_damping`` (the d used per layer).
    """

    name = "kfac"
    needs = frozenset({"layers"})
    corrected = False

    def __init__(self, damping: float | None = None, fisher: str = "ggn", batch_size: int | None = None):
        super().__init__(0.0 if damping is None else damping)
        self.auto_damping = damping is None
        if fisher not in FISHER_TYPES:
            raise InputError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}.")
        self.fisher, self.batch_size = fisher, batch_size
        self.factors: list[dict[str, Tensor]] = []
        self.layer_damping: list[float] = []

    def _batches(self, objective: Objective):
        b = self.batch_size or min(objective.batch_size, 256)
        return objective.train.batches(b)

    def _fit(self, objective: Objective) -> None:
        self.capture = LayerCapture(objective)
        self.blocks: list[LayerBlock] = self.capture.blocks
        f64 = torch.float64
        A = [torch.zeros(b.cols, b.cols, dtype=f64, device=objective.device) for b in self.blocks]
        S = [torch.zeros(b.d_out, b.d_out, dtype=f64, device=objective.device) for b in self.blocks]
        T = [0] * len(self.blocks)
        for _, x, y in self._batches(objective):
            for i, (a, g) in enumerate(self.capture.capture(x, y, self.fisher)):
                # per-batch sums in the objective's dtype, accumulated over batches in float64
                A[i] += torch.einsum("btc,btd->cd", a, a).to(f64)
                S[i] += torch.einsum("brto,brtq->oq", g, g).to(f64)
                T[i] = a.shape[1]
        n = objective.n
        self.factors = []
        for i in range(len(self.blocks)):
            lam_a, QA = torch.linalg.eigh(A[i] / n)
            lam_s, QS = torch.linalg.eigh(S[i] / (n * T[i]))
            # the factors are PSD; eigh can return tiny negatives from round-off
            lam = lam_s.clamp_min(0)[:, None] * lam_a.clamp_min(0)[None, :]
            self.factors.append({"QA": QA, "QS": QS, "eigenvalues": lam})
        if self.corrected:
            self._refit_eigenvalues(objective)
        self._set_damping(objective)

    def _refit_eigenvalues(self, objective: Objective) -> None:
        """EK-FAC: replace lam by the second moments of the gradients in the Kronecker eigenbasis."""
        f64 = torch.float64
        acc = [torch.zeros_like(fc["eigenvalues"]) for fc in self.factors]
        for _, x, y in self._batches(objective):
            for i, (a, g) in enumerate(self.capture.capture(x, y, self.fisher)):
                fc = self.factors[i]
                # rotate before contracting over t: (Q_S^T G Q_A) = sum_t (Q_S^T g_t)(Q_A^T a_t)^T,
                # in the objective's dtype (the sums over examples accumulate in float64)
                gq, aq = g @ fc["QS"].to(g.dtype), a @ fc["QA"].to(a.dtype)
                if a.shape[1] == 1:  # one position (Linear): the squared entries factorise, no G needed
                    acc[i] += torch.einsum("bro,bc->oc", gq[:, :, 0] ** 2, aq[:, 0] ** 2).to(f64)
                else:
                    G = torch.einsum("brto,btc->broc", gq, aq)
                    acc[i] += (G * G).sum((0, 1)).to(f64)
        for fc, s in zip(self.factors, acc):
            fc["eigenvalues"] = s / objective.n

    def _set_damping(self, objective: Objective) -> None:
        self.layer_damping = []
        for blk, fc in zip(self.blocks, self.factors):
            lam = fc["eigenvalues"]
            d = AUTO_DAMPING * lam.mean().item() if self.auto_damping else self.damping
            den = lam + objective.l2 + d
            top = den.max().item()
            if den.min().item() <= 1e-12 * max(top, 1e-300):
                suggested = 1e-3 * max(lam.max().item(), 1e-12)
                raise NegativeCurvatureError(
                    f"{self.name}: layer {blk.name} has a singular curvature block (smallest eigenvalue + l2 + "
                    f"damping = {den.min().item():.3e}) and cannot be inverted; use damping >= {suggested:.3e} "
                    f"(now {self.damping}) or damping=None for the automatic rule.",
                    min_eigenvalue=den.min().item(), suggested_damping=suggested)
            self.layer_damping.append(d)
            fc["denominator"] = den

    def _solve(self, V: Tensor) -> Tensor:
        X = torch.zeros_like(V)
        for blk, fc in zip(self.blocks, self.factors):
            M = blk.gather(V).to(torch.float64)
            M = fc["QS"].T @ M @ fc["QA"]
            M = fc["QS"] @ (M / fc["denominator"]) @ fc["QA"].T
            blk.scatter(M.to(V.dtype), X)
        return X

    def settings(self) -> dict[str, Any]:
        return {"solver": self.name, "damping": "auto" if self.auto_damping else self.damping,
                "fisher": self.fisher, "batch_size": self.batch_size}


@register
class EKFACSolver(KFACSolver):
    """EK-FAC: K-FAC's Kronecker eigenbasis with eigenvalues refitted from per-example
    gradients (one more pass over the data). Same arguments as ``KFACSolver``."""

    name = "ekfac"
    corrected = True
