"""K-FAC and EK-FAC inverse-HVPs: block-diagonal (one block per layer) Kronecker-factored
curvature for Linear/Conv2d/Embedding layers (Martens & Grosse 2015; KFC for convolutions, Grosse &
Martens 2016; EK-FAC, George et al. 2018). An embedding is a linear layer on one-hot inputs: its
A is diagonal (token counts / n), Q_A = I, and EK-FAC's refit sums the rotated output gradients of
the positions holding each token (``_embedding_squares``).

For a layer with block gradient G_b = sum_t g_bt a_bt^T [d_out, cols] (see ``capture``):

    A = (1/n) sum_b sum_t a_bt a_bt^T                  [cols, cols]  (ones column for the bias)
    S = (1/(n T)) sum_b sum_r sum_t g_brt g_brt^T       [d_out, d_out]
    curvature block ~ S (x) A = (Q_S (x) Q_A) diag(lam) (Q_S (x) Q_A)^T

K-FAC: lam_ij = s_i a_j (eigenvalues of S and A). EK-FAC refits them in the Kronecker eigenbasis
from the per-example block gradients, lam_ij = (1/n) sum_b sum_r (Q_S^T G_br Q_A)_ij^2, which is
the best diagonal in that basis (in Frobenius norm). Where memory allows (``row_bases``), EK-FAC
here goes one step further and keeps, per output eigendirection i, the whole second moment of the
rotated row (Q_S^T G_br)_i [cols, cols] instead of its diagonal in the Q_A basis. The g's are
pseudo-gradients of the GGN by default (``capture.FISHER_TYPES``): the curvature approximated is
the Gauss-Newton part of the Hessian of the data term, always positive semi-definite.

The inverse applied to a block V [d_out, cols] is Q_S [(Q_S^T V Q_A) / (lam + l2 + d)] Q_A^T,
where l2 is the objective's L2 coefficient (its exact l2 I Hessian term) and d the damping; with
row bases, row i of M = Q_S^T V is solved in its own basis, U_i [(U_i^T m_i) / (lam_i + l2 + d)].

Small layers keep their exact block instead (``exact_block``): with P = d_out x cols parameters,
B = (1/n) sum_b sum_r vec(G_br) vec(G_br)^T [P, P] is formed from the same captures (n R P^2 time,
P^2 memory) and inverted through its eigendecomposition. The Kronecker factorisation exists to
make large blocks tractable; on a block this small it saves nothing and loses accuracy (a
network's last layer, typically: on the benchmark networks of benchmarks/peers it raised the
correlation with exact influence, though not on every network). The same holds for a small
module of any other type (LayerNorm, an embedding, batch norm in eval mode, a grouped
convolution, a custom layer): it is one exact block of its parameters, whose per-example
gradients come from a VJP of the module alone (``capture``, "generic" blocks); one over
``exact_block`` parameters is refused with the solvers that handle it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..capture import FISHER_TYPES, LayerBlock, LayerCapture
from ..errors import InputError, NegativeCurvatureError
from ..objective import Objective
from .base import Solver, register

#: damping=None: per layer, d = AUTO_DAMPING x mean eigenvalue of the layer's block (the
#: rule of kronfluence / Grosse et al. 2023 for networks).
AUTO_DAMPING = 0.1

#: exact_block default: layers with at most this many parameters (weight + bias) keep their exact
#: curvature block: 8 MB in float64 at the limit, and an eigendecomposition that stays small next
#: to a pass over the data; forming it costs n R P^2, so larger limits grow quadratically.
EXACT_BLOCK = 1024

#: row_bases default (EK-FAC): per-row input bases while d_out x cols^2 <= 2^22 entries
#: (32 MB in float64 for the moments, the same again for their eigenvectors).
ROW_BASES = 1 << 22


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
            (observed labels). See ``capture.FISHER_TYPES``.
        batch_size: examples per capture batch (memory: batch x outputs x layer width);
            default the objective's batch size, at most 256.
        exact_block: layers with at most this many parameters (d_out x cols) keep their exact
            block of the same curvature instead of its Kronecker factorisation (``EXACT_BLOCK``),
            and so do modules of other types (LayerNorm, embeddings, ...) up to this size;
            0 factorises every layer (textbook K-FAC / EK-FAC) and refuses other modules.

    After ``fit``: ``blocks`` (the layers), ``kinds`` (per layer "exact", "kronecker" or, EK-FAC
    only, "rows"), ``factors`` (per layer a dict: ``QA``, ``QS`` and ``eigenvalues`` [d_out, cols]
    for a Kronecker-factored layer; ``Q`` [P, P] and ``eigenvalues`` [P] for an exact one) and
    ``layer_damping`` (the d used per layer).
    """

    name = "kfac"
    automatic_damping = True
    needs = frozenset({"layers"})
    #: whether the eigenvalues are refitted from per-example gradients (EK-FAC)
    corrected = False
    #: per-row input bases up to this many entries per layer (EK-FAC's option; K-FAC keeps none)
    row_bases: int = 0

    def __init__(self, damping: float | None = None, fisher: str = "ggn", batch_size: int | None = None,
                 exact_block: int = EXACT_BLOCK):
        super().__init__(0.0 if damping is None else damping)
        self.auto_damping = damping is None
        if fisher not in FISHER_TYPES:
            raise InputError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}.")
        if not isinstance(exact_block, int) or exact_block < 0:
            raise InputError(f"exact_block must be an int >= 0 (parameters per layer; 0 factorises every layer), "
                             f"got {exact_block!r}.")
        self.fisher, self.batch_size, self.exact_block = fisher, batch_size, exact_block
        self.kinds: list[str] = []
        self.factors: list[dict[str, Tensor]] = []
        self.layer_damping: list[float] = []

    def _stream(self, objective: Objective, term):
        """``objective.stream`` over capture batches (default the objective's batch size, at most 256)."""
        b = self.batch_size or min(objective.batch_size, 256)
        return objective.stream(lambda x, y, w: term(x, y), batch_size=b)

    def _fit(self, objective: Objective) -> None:
        self.capture = LayerCapture(objective, generic=self.exact_block)  # small other modules: exact
        self.blocks: list[LayerBlock] = self.capture.blocks
        f64 = torch.float64
        self.kinds = [self._kind(b) for b in self.blocks]
        T = [0] * len(self.blocks)

        def statistics(x, y):
            """This batch's sums of the factors, in float64 (per-batch sums in the objective's dtype):
            an exact layer's block B in "A"; a layer with row bases only S (its input side is
            refitted); a Kronecker-factored one A and S (an embedding's A is diagonal, the token
            counts: a vector [V])."""
            out = {}
            for i, (a, g) in enumerate(self.capture.capture(x, y, self.fisher)):
                blk, kind = self.blocks[i], self.kinds[i]
                if kind == "exact":  # a generic block's capture is its Z already
                    Z = g if a is None else LayerCapture.per_example(a, g).flatten(2)  # [B, R, P], like gather
                    out[f"A{i}"] = torch.einsum("brp,brq->pq", Z, Z).to(f64)
                    continue
                if blk.kind == "embedding":  # a: token indices [B, T]
                    out[f"A{i}"] = torch.bincount(a.reshape(-1), minlength=blk.cols).to(f64)
                elif kind == "kronecker":
                    out[f"A{i}"] = torch.einsum("btc,btd->cd", a, a).to(f64)
                out[f"S{i}"] = torch.einsum("brto,brtq->oq", g, g).to(f64)
                T[i] = a.shape[1]
            return out

        sums = self._stream(objective, statistics)
        A = [sums.get(f"A{i}") for i in range(len(self.blocks))]
        S = [sums.get(f"S{i}") for i in range(len(self.blocks))]
        n = objective.n
        self.factors = []
        for i, kind in enumerate(self.kinds):
            if kind == "exact":
                lam, Q = torch.linalg.eigh(A[i] / n)
                self.factors.append({"Q": Q, "eigenvalues": lam.clamp_min(0)})
                continue
            lam_s, QS = torch.linalg.eigh(S[i] / (n * T[i]))
            if kind == "rows":  # eigenvalues and input bases come from the refit
                self.factors.append({"QS": QS})
                continue
            if self.blocks[i].kind == "embedding":  # Q_A = I: the one-hot directions
                pad = self.capture.modules[i].padding_idx
                if pad is not None:  # its positions carry no gradient (zeroed in the capture)
                    A[i][pad] = 0.0
                self.factors.append({"QS": QS, "eigenvalues": lam_s.clamp_min(0)[:, None] * (A[i] / n)[None, :]})
                continue
            lam_a, QA = torch.linalg.eigh(A[i] / n)
            # the factors are PSD; eigh can return tiny negatives from round-off
            lam = lam_s.clamp_min(0)[:, None] * lam_a.clamp_min(0)[None, :]
            self.factors.append({"QA": QA, "QS": QS, "eigenvalues": lam})
        if self.corrected:
            self._refit(objective)
        self._set_damping(objective)

    def _refit(self, objective: Objective) -> None:
        """EK-FAC: refit the curvature of each factorised layer inside K-FAC's output eigenbasis
        Q_S, from the per-example block gradients. With r_i = (Q_S^T G)_i [cols] the row of output
        eigendirection i (mean over examples and pseudo-gradients):

        - "kronecker" (George et al. 2018): lam_ij = mean (q_A,j^T r_i)^2, in K-FAC's input basis;
        - "rows" (``row_bases``): the whole C_i = mean r_i r_i^T [cols, cols] per row, kept as
          C_i = U_i diag(lam_i) U_i^T. EK-FAC's diagonal is C_i's diagonal in the Q_A basis, so
          this drops only the couplings between rows and is the closer of the two to the layer's
          block in Frobenius norm (both keep its trace).
        """
        f64, kinds = torch.float64, self.kinds
        todo = [i for i, k in enumerate(kinds) if k != "exact"]  # exact blocks have their own eigenvalues
        if not todo:
            return

        def squares(x, y):
            """This batch's sums of the squared rotated rows, in float64 (per-batch sums in the
            objective's dtype), one per factorised layer."""
            out = []
            for i, (a, g) in zip(todo, self.capture.capture(x, y, self.fisher, only=todo)):
                fc, linear = self.factors[i], a.shape[1] == 1  # one position: Linear
                gq = g @ fc["QS"].to(g.dtype)  # rows in the output eigenbasis
                if self.blocks[i].kind == "embedding":
                    out.append(_embedding_squares(gq, a, self.blocks[i].cols))
                elif kinds[i] == "rows" and linear:  # sum_r (q_i^T g_r)^2 a a^T: no per-example G needed
                    w, a0 = (gq[:, :, 0] ** 2).sum(1), a[:, 0]
                    out.append(torch.einsum("bo,bc,bd->ocd", w, a0, a0))
                elif kinds[i] == "rows":
                    G = torch.einsum("brto,btc->broc", gq, a)
                    out.append(torch.einsum("broc,brod->ocd", G, G))
                elif linear:  # the squared entries of (Q_S^T g)(Q_A^T a)^T factorise
                    aq = a[:, 0] @ fc["QA"].to(a.dtype)
                    out.append(torch.einsum("bro,bc->oc", gq[:, :, 0] ** 2, aq ** 2))
                else:  # rotate before contracting over positions t
                    G = torch.einsum("brto,btc->broc", gq, a @ fc["QA"].to(a.dtype))
                    out.append((G * G).sum((0, 1)))
            return [t.to(f64) for t in out]

        acc = dict(zip(todo, self._stream(objective, squares)))
        acc = [acc.get(i) for i in range(len(kinds))]
        for fc, kind, total in zip(self.factors, kinds, acc):
            if kind == "rows":
                lam, U = torch.linalg.eigh(total / objective.n)  # batched over the d_out rows
                fc["UA"], fc["eigenvalues"] = U, lam.clamp_min(0)
            elif kind == "kronecker":
                fc["eigenvalues"] = total / objective.n

    def _kind(self, blk: LayerBlock) -> str:
        """How a layer's block is kept: "exact" (``exact_block``), "rows" (EK-FAC's per-row input
        bases, ``row_bases``) or "kronecker" (Q_S (x) Q_A with a diagonal; an embedding always,
        as ``find_layers`` made a small one a generic block)."""
        if blk.kind == "embedding":
            return "kronecker"
        if blk.d_out * blk.cols <= self.exact_block:
            return "exact"
        if blk.d_out * blk.cols ** 2 <= self.row_bases:
            return "rows"
        return "kronecker"

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
        for blk, kind, fc in zip(self.blocks, self.kinds, self.factors):
            M = blk.gather(V).to(torch.float64)
            if kind == "exact":  # Q diag(1 / den) Q^T on the flattened block
                Q = fc["Q"]
                M = (((M.flatten(1) @ Q) / fc["denominator"]) @ Q.T).reshape(M.shape)
            elif kind == "rows":  # row i of Q_S^T M in its own input basis U_i
                U = fc["UA"]
                M = torch.einsum("ocd,koc->kod", U, fc["QS"].T @ M) / fc["denominator"]
                M = fc["QS"] @ torch.einsum("ocd,kod->koc", U, M)
            elif blk.kind == "embedding":  # Q_A = I
                M = fc["QS"] @ ((fc["QS"].T @ M) / fc["denominator"])
            else:
                M = fc["QS"].T @ M @ fc["QA"]
                M = fc["QS"] @ (M / fc["denominator"]) @ fc["QA"].T
            blk.scatter(M.to(V.dtype), X)
        return X

    def settings(self) -> dict[str, Any]:
        return {"solver": self.name, "damping": "auto" if self.auto_damping else self.damping,
                "fisher": self.fisher, "batch_size": self.batch_size, "exact_block": self.exact_block}


def _embedding_squares(gq: Tensor, tokens: Tensor, vocab: int) -> Tensor:
    """EK-FAC's squared entries for an embedding: sum over examples and pseudo-gradients of
    ((Q_S^T G_br)_jv)^2 [d, V], where column v of G_br sums the output gradients gq [B, R, T, d]
    (already rotated by Q_S) over the positions t holding token v (tokens [B, T]). A token
    repeated within an example adds inside the square, so positions are first merged per
    (example, token)."""
    B, R, T, d = gq.shape
    keys = (torch.arange(B, device=tokens.device)[:, None] * vocab + tokens).reshape(-1)
    uniq, inv = torch.unique(keys, return_inverse=True)
    rows = gq.permute(0, 2, 1, 3).reshape(B * T, R, d)
    merged = rows.new_zeros(len(uniq), R, d).index_add_(0, inv, rows)
    return rows.new_zeros(d, vocab).index_add_(1, uniq % vocab, (merged ** 2).sum(1).T)


@register
class EKFACSolver(KFACSolver):
    """EK-FAC: K-FAC's Kronecker eigenbasis with eigenvalues refitted from per-example
    gradients (one more pass over the data).

    Args:
        damping, fisher, batch_size, exact_block: see ``KFACSolver``.
        row_bases: a factorised layer with d_out x cols^2 <= row_bases keeps a full input
            second-moment matrix per output eigendirection (kind "rows", see ``_refit``;
            memory d_out x cols^2, time n R d_out cols^2 for a convolution, n d_out cols^2 for a
            Linear layer) instead of EK-FAC's diagonal (``ROW_BASES``); 0: the diagonal of George
            et al. 2018 for every layer.

    ``factors`` of a layer with row bases hold ``QS``, ``UA`` [d_out, cols, cols] (U_i per row)
    and ``eigenvalues`` [d_out, cols].
    """

    name = "ekfac"
    corrected = True

    def __init__(self, damping: float | None = None, fisher: str = "ggn", batch_size: int | None = None,
                 exact_block: int = EXACT_BLOCK, row_bases: int = ROW_BASES):
        super().__init__(damping, fisher, batch_size, exact_block)
        if not isinstance(row_bases, int) or row_bases < 0:
            raise InputError(f"row_bases must be an int >= 0 (matrix entries per layer; 0: EK-FAC's diagonal), "
                             f"got {row_bases!r}.")
        self.row_bases = row_bases

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "row_bases": self.row_bases}
