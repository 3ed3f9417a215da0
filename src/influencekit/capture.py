"""The one capture of per-layer inputs and output gradients of a batch: what K-FAC / EK-FAC's
curvature (``solvers.kfac``) and fast scoring (``scoring``) are built from.

A supported layer is a linear map per location t: out_t = W a_t (+ b), with W [d_out, d_in].
For a Linear layer t runs over any leading dimensions besides the batch (T = 1 for [B, d]);
for a Conv2d layer a_t is the receptive-field patch at spatial location t (im2col, ``patches``,
so d_in = C_in * kh * kw and T = output height x width; KFC, Grosse & Martens
2016). The per-example gradient of the block [W | b] is then

    G_b = sum_t g_bt [a_bt ; 1]^T    [d_out, cols],    cols = d_in (+ 1 when the bias is in scope)

with g_bt = dL_b / d out_bt. Flattened row-major, vec(G_b) = sum_t g_bt (x) [a_bt; 1], which is
how ``LayerBlock.gather``/``scatter`` map a block to its slices of the flat theta [p].

An nn.Embedding is a linear layer on one-hot inputs, out_t = W^T e_{x_t} with W [V, d]: its block
is kept in the layout [d_out = d, cols = V] (``gather`` transposes), and its captured input a is the
token indices [B, T] rather than one-hot rows, so A = diag(token counts) / n costs O(V).

Any other module (LayerNorm, a small embedding, a grouped convolution, a custom layer) can be kept
as a "generic" block of its own parameters up to a size (``find_layers(..., generic=P)``:
K-FAC/EK-FAC's ``exact_block``; any size for scoring): its per-example block gradients come from a
VJP of the module alone (``torch.func.vjp`` under ``vmap``) with the captured output gradient, so
no structure is assumed. Scoring also accepts a parameter shared by several modules (tied
weights, ``shared=True``): each module's block is its own term of the gradient, and the terms add.

The capture runs a private deep copy of the model through ``functional_call`` with the
objective's parameters; forward hooks on the copy record each layer's input and add a zero
"probe" to its output, whose gradient is the output gradient g. The user's module is never
touched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, hessian, vjp, vmap

from .errors import InputError, UnsupportedLayerError
from .objective import Objective

SUPPORTED = (nn.Linear, nn.Conv2d, nn.Embedding)

#: How per-example "gradients" are formed for curvature statistics:
#: "ggn": the generalised Gauss-Newton J^T H_out J, which equals the true Fisher (labels drawn
#: from the model's predictive distribution) in expectation for cross-entropy/logistic. It is
#: computed exactly, without sampling, by back-propagating the columns of H_out^{1/2} (the
#: per-example Hessian of the loss w.r.t. the model outputs; R = number of outputs pseudo-
#: gradients per example). "empirical": the gradient of the loss at the observed label (R = 1).
FISHER_TYPES = ("ggn", "empirical")


@dataclass(frozen=True)
class LayerBlock:
    """One supported layer in scope and where its parameters sit in the flat theta [p].

    ``weight``/``bias``: slices of theta (None when that parameter is out of scope).
    ``d_out``: output features / channels. ``d_in``: columns of the weight matrix
    (in_features, or C_in * kh * kw for a convolution, or the vocabulary V of an embedding,
    whose [V, d] weight is held transposed as [d, V]). A "generic" block (any other module)
    is one row: d_out = 1, d_in = its P parameters in scope, whose names (local to the module)
    and slices are ``params``.
    """

    name: str
    kind: str
    weight: slice | None
    bias: slice | None
    d_out: int
    d_in: int
    params: tuple[tuple[str, slice], ...] = ()

    @property
    def cols(self) -> int:
        """Columns of the block matrix [W | b] in scope (a generic block: its P parameters)."""
        if self.kind == "generic":
            return self.d_in
        return (self.d_in if self.weight is not None else 0) + (1 if self.bias is not None else 0)

    def gather(self, V: Tensor) -> Tensor:
        """The block of each row of V [k, p] as a matrix: [k, d_out, cols]."""
        if self.kind == "generic":
            return torch.cat([V[:, s] for _, s in self.params], 1).unsqueeze(1)
        if self.kind == "embedding":
            return V[:, self.weight].reshape(V.shape[0], self.d_in, self.d_out).transpose(1, 2)
        parts = []
        if self.weight is not None:
            parts.append(V[:, self.weight].reshape(V.shape[0], self.d_out, self.d_in))
        if self.bias is not None:
            parts.append(V[:, self.bias].reshape(V.shape[0], self.d_out, 1))
        return torch.cat(parts, 2)

    def scatter(self, M: Tensor, out: Tensor) -> None:
        """Write block matrices M [k, d_out, cols] into their slices of out [k, p] (in place)."""
        if self.kind == "generic":
            start = 0
            for _, s in self.params:
                width = s.stop - s.start
                out[:, s] = M[:, 0, start:start + width]
                start += width
            return
        if self.kind == "embedding":
            out[:, self.weight] = M.transpose(1, 2).reshape(M.shape[0], -1)
            return
        if self.weight is not None:
            out[:, self.weight] = M[:, :, : self.d_in].reshape(M.shape[0], -1)
        if self.bias is not None:
            out[:, self.bias] = M[:, :, -1]


#: who needs the layers and what to use instead, for the messages of ``find_layers`` / ``LayerCapture``
KFAC_USE = ("K-FAC/EK-FAC", "use solver='cg' or 'exact'")
SCORING_USE = ("per-layer scoring", "score with method='grad' or 'jvp'")


def find_layers(objective: Objective, generic: int | None = 0, *, shared: bool = False,
                use: tuple[str, str] = KFAC_USE) -> list[LayerBlock]:
    """The supported layers among the parameters in scope, in module order; a module of another
    type (or a convolution that does not unfold into one matmul) with at most ``generic``
    parameters in scope (None: any number) becomes a "generic" block.

    Raises ``UnsupportedLayerError`` when a parameter in scope belongs to another layer type
    with more parameters, or is shared between modules (unless ``shared``: then every module
    holding it gets a block, and a sum over blocks, not a scatter, gives its gradient), naming it
    and what works instead (``use``: who needs the layers, and the alternative). (A generic block
    must treat the examples of a batch independently; ``Objective`` already refuses batch norm
    in training mode.)
    """
    who, fix = use
    offsets, start = {}, 0
    for name, numel in zip(objective.names, objective.numels):
        offsets[name] = slice(start, start + numel)
        start += numel
    owners: dict[int, list[str]] = {}
    for mname, m in objective.model.named_modules():
        for pname, prm in m.named_parameters(recurse=False):
            owners.setdefault(id(prm), []).append(f"{mname}.{pname}" if mname else pname)
    # a shared parameter is in scope under its first name only; its other owners use that slice
    alias = {full: names[0] for names in owners.values() for full in names}
    blocks, covered = [], set()
    for mname, m in objective.model.named_modules():
        local = {pn: alias[f"{mname}.{pn}" if mname else pn] for pn, _ in m.named_parameters(recurse=False)}
        in_scope = [full for full in local.values() if full in offsets]
        if not in_scope:
            continue
        what = f"{mname or 'the model'} ({type(m).__name__})"
        tied = [local[pn] for pn, prm in m.named_parameters(recurse=False)
                if local[pn] in offsets and len(owners[id(prm)]) > 1 and not shared]
        if tied:
            raise UnsupportedLayerError(f"parameters {tied} of {what} are shared between modules (tied weights); "
                                        f"{who}'s block-diagonal form does not apply: {fix}.")
        size = sum(offsets[full].stop - offsets[full].start for full in in_scope)
        if isinstance(m, nn.Embedding) and m.max_norm is not None:  # renormalises rows in place in forward
            raise UnsupportedLayerError(f"{what} has max_norm={m.max_norm}, which rescales its rows inside the "
                                        f"forward pass; {who} need it off: {fix}.")
        fits = generic is None or size <= generic
        # a small module of any type (a small embedding too) keeps its exact block
        if not _factorisable(m) or (isinstance(m, nn.Embedding) and generic is not None and size <= generic):
            if not fits:
                raise UnsupportedLayerError(
                    f"parameters {in_scope} belong to layer {what}, which {who} cannot factorise (supported: "
                    f"nn.Linear, nn.Conv2d with groups=1 and zero padding, nn.Embedding; any other module is kept "
                    f"exact when its {size} parameters are at most exact_block = {generic}); {fix} (or 'arnoldi', "
                    "'lissa'), raise exact_block, or leave those parameters out of params.")
            params = tuple((pn, offsets[full]) for pn, full in local.items() if full in offsets)
            blocks.append(LayerBlock(mname, "generic", None, None, 1, size, params))
            covered.update(in_scope)
            continue
        wname, bname = local.get("weight"), local.get("bias")
        w = offsets.get(wname) if wname else None
        b = offsets.get(bname) if bname else None
        if isinstance(m, nn.Embedding):
            blocks.append(LayerBlock(mname, "embedding", w, None, m.embedding_dim, m.num_embeddings))
        else:
            blocks.append(LayerBlock(mname, "conv2d" if isinstance(m, nn.Conv2d) else "linear", w, b,
                                     m.weight.shape[0], m.weight[0].numel()))
        covered.update(in_scope)
    missing = [k for k in objective.names if k not in covered]
    if missing:  # a parameter registered on no module (e.g. via parametrisations)
        raise UnsupportedLayerError(f"parameters {missing} belong to no module; {fix}, or leave them out of params.")
    return blocks


def _factorisable(m: nn.Module) -> bool:
    """Whether a module is a linear map per location whose block ``patches``/``out_rows`` capture."""
    if isinstance(m, nn.Conv2d):  # grouped and non-zero-padded convolutions do not unfold into one matmul
        return m.groups == 1 and m.padding_mode == "zeros" and m.padding != "same"
    return isinstance(m, SUPPORTED)


class LayerCapture:
    """Per-layer inputs and output gradients of a batch, for the blocks of ``find_layers``: the one
    engine under K-FAC/EK-FAC's statistics and fast scoring.

    ``capture(x, y, fisher)`` returns, per block (same order), ``(a, g)`` with
    a: [B, T, cols] layer inputs (patches for conv; a column of ones appended for the bias)
    and g: [B, R, T, d_out] output gradients of R pseudo-gradients per example (``FISHER_TYPES``),
    in the capture's dtype. ``per_example(a, g)`` gives the block gradients [B, R, d_out, cols].
    A generic block returns ``(None, Z)``: its block gradients Z [B, R, P] themselves; an
    embedding returns a = the token indices [B, T] (integers) instead of one-hot rows.

    Args:
        objective: model, loss and parameters in scope (never modified: a private copy of the
            model carries the hooks).
        blocks: the layers to capture (default ``find_layers(objective, generic)``).
        generic: see ``find_layers``.
        dtype: compute dtype; default the objective's.
        use: who captures, and what to use instead, for error messages (see ``find_layers``).
    """

    def __init__(self, objective: Objective, blocks: list[LayerBlock] | None = None, generic: int | None = 0, *,
                 dtype: torch.dtype | None = None, use: tuple[str, str] = KFAC_USE):
        self.objective = objective
        self.use = use
        self.blocks = find_layers(objective, generic, use=use) if blocks is None else blocks
        self.dtype = dtype or objective.dtype
        # our own copy carries the hooks; functional_call supplies the objective's tensors
        self.model = copy.deepcopy(objective.model)
        mods = dict(self.model.named_modules())
        self.modules = [mods[b.name] for b in self.blocks]

    def _params(self) -> dict[str, Tensor]:
        obj, dt = self.objective, self.dtype
        return {k: (v.to(dt) if v.is_floating_point() else v)
                for k, v in {**obj.unflatten(obj.theta), **obj.fixed}.items()}

    def _cast(self, t: Tensor) -> Tensor:
        t = t.to(self.objective.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    def capture(self, x: Tensor, y: Tensor, fisher: str = "empirical", only: list[int] | None = None, *,
                ones: bool = True) -> list[tuple[Tensor | None, Tensor]]:
        """``only``: indices of the blocks to capture (default all); the result has one entry
        per index, in increasing order. ``ones=False``: a Linear/Conv2d layer's a is its inputs
        [B, T, d_in] only, without the bias's column of ones (for a caller that treats the bias
        on its own, and saves the copy)."""
        if fisher not in FISHER_TYPES:
            raise InputError(f"fisher must be one of {FISHER_TYPES}, got {fisher!r}.")
        obj, (who, fix) = self.objective, self.use
        x, y = self._cast(x), self._cast(y)
        inputs: list[list[Tensor]] = [[] for _ in self.blocks]
        probes: list[list[Tensor]] = [[] for _ in self.blocks]

        def hook(i):
            def fn(module, args, kwargs, out):
                if not isinstance(out, Tensor):
                    raise UnsupportedLayerError(f"layer {self.blocks[i].name} returns {type(out).__name__}, not one "
                                                f"tensor; {who} need a single output: {fix}.")
                if kwargs:  # a generic block replays the call from its positional inputs
                    raise UnsupportedLayerError(f"layer {self.blocks[i].name} is called with keyword arguments "
                                                f"{sorted(kwargs)}; {who} replay positional inputs only: pass "
                                                f"them positionally, or {fix}.")
                keep = tuple(t.detach() if isinstance(t, Tensor) else t for t in args)
                inputs[i].append(keep if self.blocks[i].kind == "generic" else keep[0])
                probe = torch.zeros_like(out, requires_grad=True)
                probes[i].append(probe)
                return out + probe  # d loss / d probe = d loss / d out

            return fn

        chosen = range(len(self.blocks)) if only is None else sorted(only)
        handles = [self.modules[i].register_forward_hook(hook(i), with_kwargs=True) for i in chosen]
        params = self._params()
        try:
            with torch.enable_grad():
                f = functional_call(self.model, params, (x,))
                leaves = [p for ps in probes for p in ps]
                # a layer whose output does not reach the loss has a zero output gradient
                if fisher == "empirical":
                    cot = [torch.autograd.grad(obj.loss_fn(f, y).sum(), leaves, allow_unused=True)]
                else:
                    cot = [torch.autograd.grad(f, leaves, grad_outputs=r, retain_graph=True, allow_unused=True)
                           for r in _output_hessian_roots(obj.loss_fn, f.detach(), y)]
                cot = [[torch.zeros_like(p) if c is None else c for c, p in zip(cs, leaves)] for cs in cot]
        finally:
            for h in handles:
                h.remove()
        out = []
        pos = 0
        for i in chosen:
            blk, m = self.blocks[i], self.modules[i]
            calls = len(probes[i])
            if calls == 0:
                raise UnsupportedLayerError(f"layer {blk.name} is in scope but was not called in the forward pass (its "
                                 "parameters may be used directly by another module); leave its parameters out of "
                                 f"params, or {fix}.")
            if blk.kind == "generic":  # sum over the calls of the per-example module VJPs
                Z = sum(_module_gradients(m, blk, params, inputs[i][j], _stack([c[pos + j] for c in cot], 1))
                        for j in range(calls))
                pos += calls
                out.append((None, Z))
                continue
            g = _stack([_cat([out_rows(m, c[pos + j]) for j in range(calls)], 1) for c in cot], 1)
            pos += calls
            if blk.kind == "embedding":
                tokens = _cat([t.reshape(t.shape[0], -1) for t in inputs[i]], 1)
                if m.padding_idx is not None:  # the padding row gets no gradient from its positions
                    g = g * (tokens != m.padding_idx)[:, None, :, None]
                out.append((tokens, g))
                continue
            a = _cat([patches(m, t) for t in inputs[i]], 1)
            if not ones:
                out.append((a, g))
                continue
            parts = [a] if blk.weight is not None else []
            if blk.bias is not None:
                parts.append(a.new_ones(a.shape[0], a.shape[1], 1))
            out.append((_cat(parts, 2), g))
        return out

    @staticmethod
    def per_example(a: Tensor, g: Tensor) -> Tensor:
        """Block gradients sum_t g_t a_t^T: a [B, T, cols], g [B, R, T, d_out] -> [B, R, d_out, cols]."""
        return torch.einsum("brto,btc->broc", g, a)

    def pseudo_gradients(self, x: Tensor, y: Tensor, fisher: str = "empirical") -> Tensor:
        """Per-example pseudo-gradients Z [B, R, p] of the parameters in scope, assembled from the
        layer captures: with ``fisher="ggn"``, (1/n) sum_b Z_b^T Z_b over the training data is the
        Gauss-Newton matrix of the data term; ``"empirical"`` has R = 1, Z[:, 0] = ``objective.grads``.
        A reference path for tests and checks (p columns per pseudo-gradient), not for the solvers."""
        caps = self.capture(x, y, fisher)
        B, R = x.shape[0], caps[0][1].shape[1]
        Z = torch.zeros(B * R, self.objective.p, dtype=self.dtype, device=self.objective.device)
        for blk, (a, g) in zip(self.blocks, caps):
            if blk.kind == "embedding":  # one-hot rows: fine for this reference path, not for the solvers
                a = F.one_hot(a, blk.d_in).to(g.dtype)
            M = g.unsqueeze(2) if a is None else self.per_example(a, g)  # [B, R, d_out, cols]
            blk.scatter(M.flatten(0, 1), Z)
        return Z.reshape(B, R, -1)

    def gradients(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-example gradients [B, p] assembled from the layer captures (empirical: at the
        observed labels); equals ``objective.grads(x, y)``. A reference path for tests."""
        return self.pseudo_gradients(x, y)[:, 0]


def _cat(ts: list[Tensor], dim: int) -> Tensor:
    """torch.cat, without the copy when there is one tensor (a layer called once, R = 1)."""
    return ts[0] if len(ts) == 1 else torch.cat(ts, dim)


def _stack(ts: list[Tensor], dim: int) -> Tensor:
    """torch.stack, as a view when there is one tensor."""
    return ts[0].unsqueeze(dim) if len(ts) == 1 else torch.stack(ts, dim)


def _module_gradients(m: nn.Module, blk: LayerBlock, params: dict[str, Tensor], args: tuple,
                      cots: Tensor) -> Tensor:
    """Per-example gradients [B, R, P] of <cots_br, m(args_b)> with respect to the generic block's
    parameters (in ``blk.params`` order), for cotangents cots [B, R, *out]: one forward and VJP of
    the module per example (vmap over b), its pullback applied to the R cotangents (vmap over r).
    ``params``: the objective's tensors by full name; the module's other entries stay constant."""
    prefix = f"{blk.name}." if blk.name else ""
    local = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    names = [pn for pn, _ in blk.params]
    B = cots.shape[0]
    batched = [isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == B for t in args]

    def one(c, *xs):
        xs = tuple(t.unsqueeze(0) if b else t for t, b in zip(xs, batched))

        def f(*ps):
            return functional_call(m, {**local, **dict(zip(names, ps))}, xs).squeeze(0)

        _, pullback = vjp(f, *[local[k] for k in names])
        return vmap(lambda cr: torch.cat([g.reshape(-1) for g in pullback(cr)]))(c)

    return vmap(one, in_dims=(0, *[0 if b else None for b in batched]))(cots, *args)


def patches(m: nn.Module, t: Tensor) -> Tensor:
    """Layer input -> [B, T, d_in]: im2col patches for a convolution (d_in = C_in*kh*kw, in the
    order of the flattened weight), rows for a linear layer."""
    if isinstance(m, nn.Conv2d):
        # strided views instead of F.unfold, whose CPU im2col kernel measured much slower here
        (kh, kw), (dh, dw), (sh, sw) = m.kernel_size, m.dilation, m.stride
        ph, pw = (0, 0) if m.padding == "valid" else m.padding
        if ph or pw:
            t = F.pad(t, (pw, pw, ph, ph))
        win = t.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
        B, C, Ho, Wo = win.shape[:4]  # win: [B, C, Ho, Wo, kh, kw]
        return win.permute(0, 2, 3, 1, 4, 5).reshape(B, Ho * Wo, C * kh * kw)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def out_rows(m: nn.Module, t: Tensor) -> Tensor:
    """Output gradient -> [B, T, d_out] (spatial locations of a conv output become rows)."""
    if isinstance(m, nn.Conv2d):
        return t.reshape(t.shape[0], t.shape[1], -1).transpose(1, 2)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _output_hessian_roots(loss, f: Tensor, y: Tensor) -> list[Tensor]:
    """Columns of H_out^{1/2}: r_1..r_O with sum_r r_r r_r^T = d^2 L_b / d f_b^2 for every example b.
    f: [B, ...] outputs; returns O tensors shaped like f. Negative eigenvalues (a loss that is
    not convex in the outputs) are clipped to 0, as the GGN does."""
    shape = f.shape[1:]
    flat = f.reshape(f.shape[0], -1)

    def single(fi: Tensor, yi: Tensor) -> Tensor:
        return loss(fi.reshape(1, *shape), yi.unsqueeze(0))[0]

    H = vmap(hessian(single))(flat, y)  # [B, O, O]
    lam, U = torch.linalg.eigh(H)
    R = U * lam.clamp_min(0).sqrt().unsqueeze(1)  # columns r = sqrt(lam) u
    return [R[:, :, j].reshape(f.shape) for j in range(R.shape[2])]
