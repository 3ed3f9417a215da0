"""LiSSA (Agarwal et al. 2016): a stochastic Neumann series for (H + dI)^{-1} v.

    h_0 = v,   h_j = v + (I - (H_{b_j} + dI) / scale) h_{j-1},   result h_depth / scale

H_{b_j} is the Hessian on a random mini-batch (including l2 I). The series converges when
``scale`` exceeds the largest eigenvalue of H + dI and H + dI is positive definite; ``repeats``
independent runs are averaged to cut variance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..curvature import spectrum
from ..errors import DivergenceError, NonFiniteError
from ..objective import Objective
from .base import Solver, register


@register
class LiSSASolver(Solver):
    """Stochastic inverse-HVP by the recursion above, batched over k right-hand sides.

    Args:
        damping: see ``Solver``.
        depth: recursion steps per repeat (each one a mini-batch HVP).
        repeats: independent recursions averaged.
        batch_size: mini-batch size of each stochastic HVP.
        scale: must exceed lambda_max(H + dI); "auto" sets 1.5 x a Lanczos estimate.
        tol: optional early stop when the relative change of h over 10 steps is below tol.
        seed: for the mini-batch sampling.

    Divergence (non-finite h, or ||h_j|| beyond 10 (j+1) ||v||, which a convergent series never
    reaches) is detected every 10 steps and raises ``DivergenceError`` naming the setting to change.
    """

    name = "lissa"
    needs = frozenset({"minibatch_hvp"})

    def __init__(self, damping: float = 0.0, depth: int = 1000, repeats: int = 1, batch_size: int = 128,
                 scale: float | str = "auto", tol: float | None = None, seed: int = 0):
        super().__init__(damping)
        self.depth, self.repeats, self.batch_size = depth, repeats, batch_size
        self.scale_option, self.tol, self.seed = scale, tol, seed
        self.scale: float | None = None

    def _fit(self, objective: Objective) -> None:
        self.spectrum = None
        if self.scale_option == "auto":
            self.spectrum = spectrum(objective, steps=20)
            top = self.spectrum.max_eigenvalue + self.damping
            self.scale = 1.5 * top
        else:
            self.scale = float(self.scale_option)

    def _solve(self, V: Tensor) -> Tensor:
        obj = self.objective
        g = torch.Generator().manual_seed(self.seed)
        vnorm = V.norm(dim=1).clamp_min(torch.finfo(V.dtype).tiny)
        total = torch.zeros_like(V)
        for r in range(self.repeats):
            h = V.clone()
            check = h
            # step of the first NaN/inf HVP met while h was still bounded (0: none), kept on the
            # device so the loop does not synchronise every step; read at the checks below
            fault = torch.zeros((), dtype=torch.long, device=V.device)
            for j in range(self.depth):
                x, y = obj.sample_batch(self.batch_size, g)
                Hh = obj.hvp_batch(h, x, y, 1.0 / x.shape[0]) + (obj.l2 + self.damping) * h
                bounded = torch.isfinite(h).all() & ((h.norm(dim=1) / vnorm).max() <= 10 * (j + 1))
                fault = torch.where((fault == 0) & ~torch.isfinite(Hh).all() & bounded, j + 1, fault)
                h = V + h - Hh / self.scale
                if (j + 1) % 10 == 0 or j + 1 == self.depth:
                    self._raise_if_fault(int(fault), r)
                if (j + 1) % 10 == 0:
                    growth = (h.norm(dim=1) / vnorm).max().item()
                    # h_j = sum_{i<=j} (I - (H+dI)/scale)^i v, and each term has norm <= ||v|| when
                    # the series converges, so ||h_j|| <= (j+1)||v||. Growth well past that bound
                    # (10x, for mini-batch noise) means divergence: scale too small or negative
                    # curvature. This trips within tens of steps, not after the full depth.
                    if not torch.isfinite(h).all() or growth > 10 * (j + 1):
                        sp = self.spectrum
                        if sp is not None and sp.min_eigenvalue + self.damping <= 0:
                            raise DivergenceError(
                                f"LiSSA diverged at step {j + 1} of repeat {r} (||h||/||v|| = {growth:.2e}): H has "
                                f"negative curvature (smallest eigenvalue about {sp.min_eigenvalue:.3e}). Increase "
                                f"damping to >= {sp.suggested_damping:.3e} (now {self.damping}).")
                        raise DivergenceError(
                            f"LiSSA diverged at step {j + 1} of repeat {r} (||h||/||v|| = {growth:.2e}). "
                            f"Increase scale (now {self.scale:.3e}; it must exceed the largest eigenvalue of "
                            f"H + dI) or increase damping (now {self.damping}) if H has negative curvature.")
                    if self.tol is not None:
                        change = ((h - check).norm(dim=1) / h.norm(dim=1).clamp_min(1e-30)).max().item()
                        if change < self.tol:
                            break
                        check = h
            total += h / self.scale
        return total / self.repeats

    def _raise_if_fault(self, step: int, repeat: int) -> None:
        if step:  # h was bounded when the HVP went non-finite: a fault of the model/loss, not divergence
            raise NonFiniteError(
                f"LiSSA got a NaN/inf Hessian-vector product at step {step} of repeat {repeat} while the series was "
                "bounded; the loss is not twice differentiable at theta_hat or the model overflows on a "
                "mini-batch: check the model, loss and data (or use float64).")

    def settings(self) -> dict:
        return {**super().settings(), "depth": self.depth, "repeats": self.repeats,
                "batch_size": self.batch_size, "scale": self.scale, "tol": self.tol, "seed": self.seed}
