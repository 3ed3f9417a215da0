"""Convex models fitted to a stationary point, the setting influence linearises around."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import ConvergenceWarning, InputError
from ..losses import get_loss
from ..retrain import lbfgs
from .models import LogisticRegression


def linear_model(d: int, classes: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """Logistic regression (one logit, loss ``logistic``) for 2 classes, else multinomial
    (``nn.Linear(d, classes)``, loss ``cross_entropy``). Zero-initialised: the fit is convex."""
    model = LogisticRegression(d) if classes == 2 else nn.Linear(d, classes)
    for p in model.parameters():
        nn.init.zeros_(p)
    return model.to(dtype).eval()


def loss_name(classes: int) -> str:
    """The training loss matching ``linear_model(d, classes)``."""
    return "logistic" if classes == 2 else "cross_entropy"


#: below this share of nonzero entries ``fit_linear`` multiplies by a sparse (CSR) copy of X: a bag of
#: words (Enron) is mostly zeros, and a product then costs its nonzeros instead of n d.
SPARSE_BELOW = 0.05


def _csr(X: Tensor) -> Tensor:
    """X as a sparse CSR tensor (torch warns that CSR support is beta; the two products used here are not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return X.to_sparse_csr()


def fit_input(X: Tensor) -> Tensor:
    """X [n, ...] as ``fit_linear`` multiplies by it: flattened to [n, d], and a sparse CSR copy when
    under ``SPARSE_BELOW`` of it is nonzero. Convert once and pass the result to repeated fits."""
    if X.layout == torch.sparse_csr:
        return X
    Xf = X.reshape(len(X), -1)
    return _csr(Xf) if Xf.count_nonzero() < SPARSE_BELOW * Xf.numel() else Xf


def linear_risk(X: Tensor, y: Tensor, l2: float, classes: int) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2 of ``linear_model(d, classes)`` and its
    gradient, as a function theta [p] -> (value, gradient [p]), theta in ``Objective``'s order (weight
    [K, d] row by row, then bias [K]; K = 1 logit for 2 classes, else K = classes).

    The losses are the library's (``loss_name(classes)``); the gradient is in closed form, one product
    with X and one with X^T per call: the gradient of the loss in the logits is r_i = sigma(f_i) - y_i
    (logistic) or softmax(f_i) - e_{y_i} (cross-entropy), so grad_W = R^T X / n and
    grad_b = sum_i r_i / n. X [n, d] is dense or sparse CSR (then products cost its nonzeros, not n d).
    """
    n, d = X.shape
    XT = _csr(X.t()) if X.layout == torch.sparse_csr else X.T
    binary = classes == 2
    K = 1 if binary else classes
    loss_fn = get_loss(loss_name(classes))
    target = (y > 0).to(X.dtype)[:, None] if binary else F.one_hot(y.long(), classes).to(X.dtype)

    def risk(theta: Tensor) -> tuple[Tensor, Tensor]:
        W, b = theta[:-K].reshape(K, d), theta[-K:]
        f = X @ W.T + b                                                # logits [n, K]
        r = (torch.sigmoid(f) if binary else torch.softmax(f, 1)) - target
        g = torch.cat([(XT @ r).T.reshape(-1), r.sum(0)]) / n + l2 * theta
        return loss_fn(f, y).sum() / n + 0.5 * l2 * theta.dot(theta), g

    return risk


def fit_linear(X: Tensor, y: Tensor, l2: float, classes: int | None = None, *, init: nn.Module | None = None,
               max_iter: int = 1000) -> nn.Module:
    """argmin (1/n) sum L + (l2/2)||theta||^2 of a linear model on (X [n, d], y [n]).

    L-BFGS on ``linear_risk`` (through ``fit_input(X)``: a sparse copy of X when under
    ``SPARSE_BELOW`` of it is nonzero; X may already be that copy) from ``init``'s parameters (a
    model of the same shape, not modified; default zeros), then, for p <= 300, Newton steps with the
    explicit Hessian until max|grad| < 1e-10 (weakly regularised fits stall in L-BFGS long before that).
    """
    classes = max(int(y.max()) + 1 if classes is None else classes, 2)
    Xf = fit_input(X)
    model = linear_model(Xf.shape[1], classes, X.dtype) if init is None else copy.deepcopy(init)
    theta = parameters_to_vector(model.parameters()).detach()
    risk = linear_risk(Xf, y, l2, classes)
    small = theta.numel() <= 300
    theta = lbfgs(risk, theta, grad_tol=1e-8, max_iter=200 if small else max_iter)
    _, g = risk(theta)
    hessian = logistic_hessian if classes == 2 else multinomial_hessian
    dense = Xf.to_dense() if small and Xf.layout == torch.sparse_csr else Xf  # the Newton steps' Hessians
    for _ in range(5 if small else 0):
        if g.abs().max() < 1e-10:
            break
        vector_to_parameters(theta, model.parameters())
        theta = theta - torch.linalg.solve(hessian(model, dense, y, l2).to(theta.dtype), g)
        _, g = risk(theta)
    if g.abs().max() > 1e-6:
        warnings.warn(ConvergenceWarning(f"linear fit stopped with max|grad| = {g.abs().max():.1e}; influence "
                                         "assumes a stationary point: raise max_iter or l2."), stacklevel=2)
    vector_to_parameters(theta, model.parameters())
    return model.eval()


def predict(model: nn.Module, X: Tensor) -> Tensor:
    """Class predictions [n] of a model from ``linear_model`` (or any logits model)."""
    with torch.no_grad():
        out = model(X)
    return (out > 0).long() if out.dim() == 1 else out.argmax(1)


def accuracy(model: nn.Module, X: Tensor, y: Tensor) -> float:
    """Fraction of (X, y) the model classifies correctly."""
    return float((predict(model, X) == y).double().mean())


# ---- closed forms for binary logistic regression -------------------------------------------
# For f(x) = w^T x + b (``linear_model(d, 2)``, parameters in the order weight, bias) with the
# objective (1/n) sum softplus(-s_i f(x_i)) + (l2/2)||theta||^2, write x~ = [x, 1] and
# sigma_i = sigmoid(f(x_i)). Then grad L(z_i) = (sigma_i - y_i) x~_i and
#     H = X~^T diag(d) X~ + l2 I,   d_i = sigma_i (1 - sigma_i) / n,
# so I_up,loss(z_i, z_i) = -(sigma_i - y_i)^2 x~_i^T H^-1 x~_i: no HVPs, no p x p matrix when p > n.

def _augmented_outputs(model: nn.Module, X: Tensor) -> tuple[Tensor, Tensor]:
    """(X~ [n, d + 1] with the bias column, the model's outputs on X), float64."""
    X = X.to(torch.float64).reshape(X.shape[0], -1)
    params = {k: v.detach().to(torch.float64) for k, v in model.named_parameters()}
    with torch.no_grad():  # float64 copies of the parameters: the user's model is never cast
        out = functional_call(model, params, (X,))
    return torch.cat([X, X.new_ones(X.shape[0], 1)], 1), out


def _logistic_parts(model: nn.Module, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(X~ [n, d + 1] with the bias column, sigma [n], y [n] in {0, 1}), float64."""
    Xt, out = _augmented_outputs(model, X)
    sig = torch.sigmoid(out.reshape(-1))
    y = y.to(torch.float64)
    return Xt, sig, (y + 1) / 2 if bool((y < 0).any()) else y


def logistic_hessian(model: nn.Module, X: Tensor, y: Tensor, l2: float) -> Tensor:
    """The explicit Hessian [d + 1, d + 1] of the L2-regularised logistic objective of a model from
    ``linear_model(d, 2)`` at its parameters, in ``Objective``'s order (weight, then bias), float64:
    X~^T diag(sigma (1 - sigma) / n) X~ + l2 I. Equals ``Objective(...).hessian()`` without p HVPs."""
    Xt, sig, _ = _logistic_parts(model, X, y)
    d = sig * (1 - sig) / len(Xt)
    return Xt.T @ (d[:, None] * Xt) + l2 * torch.eye(Xt.shape[1], dtype=torch.float64)


def logistic_self_influence(model: nn.Module, X: Tensor, y: Tensor, l2: float) -> Tensor:
    """I_up,loss(z_i, z_i) = -(sigma_i - y_i)^2 x~_i^T H^-1 x~_i for every training point [n] (<= 0),
    exactly (float64) for a model from ``linear_model(d, 2)`` trained with L2 ``l2`` > 0.

    The leverage x~_i^T H^-1 x~_i comes from a Cholesky factor of the p x p Hessian when p <= n,
    else from the n x n dual (Woodbury): with S = diag(sqrt(d)) and K = X~ X~^T,
    H^-1 = (1/l2) (I - X~^T S (l2 I + S K S)^-1 S X~), so memory and time are min(n, p)^2 and
    min(n, p)^2 max(n, p).
    """
    if not l2 > 0:
        raise InputError(f"logistic_self_influence needs l2 > 0 (a positive-definite Hessian), got {l2}.")
    Xt, sig, y01 = _logistic_parts(model, X, y)
    n, p = Xt.shape
    d = sig * (1 - sig) / n
    if p <= n:
        L = torch.linalg.cholesky(Xt.T @ (d[:, None] * Xt) + l2 * torch.eye(p, dtype=torch.float64))
        B = torch.linalg.solve_triangular(L, Xt.T, upper=False)  # L^-1 X~^T: [p, n]
        lev = (B * B).sum(0)
    else:
        K = fit_input(Xt) @ Xt.T  # the Gram matrix [n, n]: through a sparse copy when X is sparse
        s = d.sqrt()
        L = torch.linalg.cholesky(l2 * torch.eye(n, dtype=torch.float64) + s[:, None] * K * s[None, :])
        B = torch.linalg.solve_triangular(L, s[:, None] * K, upper=False)  # L^-1 S K: [n, n]
        lev = (K.diagonal() - (B * B).sum(0)) / l2
    return -((sig - y01) ** 2) * lev


# ---- closed forms for multinomial logistic regression --------------------------------------
# For logits f(x) = W x + b (``linear_model(d, C)``, C > 2: ``nn.Linear``, parameters weight [C, d]
# then bias [C]) with the objective (1/n) sum CE(f(x_i), y_i) + (l2/2)||theta||^2, write x~ = [x, 1],
# p_i = softmax(f(x_i)) and r_i = p_i - e_{y_i}. In the class-major order theta~ = [W | b] [C, d + 1],
#     grad L(z_i) = r_i (x) x~_i,   H = (1/n) sum_i D_i (x) x~_i x~_i^T + l2 I,   D_i = diag(p_i) - p_i p_i^T,
# so the C x C blocks of H are X~^T diag(D_ab / n) X~: C(C+1)/2 weighted Gram matrices instead of p HVPs.

def _multinomial_parts(model: nn.Module, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(X~ [n, d + 1] with the bias column, p [n, C] softmax probabilities, y [n]), float64."""
    Xt, out = _augmented_outputs(model, X)
    return Xt, torch.softmax(out, 1), y.long()


def _multinomial_hessian_classmajor(Xt: Tensor, prob: Tensor, l2: float) -> Tensor:
    """H [C (d + 1), C (d + 1)] in the class-major order (class c's weights, then its bias)."""
    n, q = Xt.shape
    C = prob.shape[1]
    H = Xt.new_zeros(C * q, C * q)
    for a in range(C):
        for b in range(a, C):
            w = prob[:, a] * (float(a == b) - prob[:, b]) / n  # D_i[a, b] / n
            block = Xt.T @ (w[:, None] * Xt)
            H[a * q:(a + 1) * q, b * q:(b + 1) * q] = block
            if b != a:
                H[b * q:(b + 1) * q, a * q:(a + 1) * q] = block.T
    return H + l2 * torch.eye(C * q, dtype=H.dtype)


def multinomial_hessian(model: nn.Module, X: Tensor, y: Tensor, l2: float) -> Tensor:
    """The explicit Hessian [C (d + 1), C (d + 1)] of the L2-regularised cross-entropy objective of a
    model from ``linear_model(d, C)`` (C > 2) at its parameters, in ``Objective``'s order (weight [C, d]
    row by row, then bias [C]), float64. Equals ``Objective(...).hessian()`` without p HVPs."""
    Xt, prob, _ = _multinomial_parts(model, X, y)
    q, C = Xt.shape[1], prob.shape[1]
    d = q - 1
    # Objective index of weight (c, j) is c d + j, of bias c is C d + c; class-major index is c q + j.
    cls = torch.arange(C)
    order = torch.cat([(cls[:, None] * q + torch.arange(d)[None, :]).reshape(-1), cls * q + d])
    H = _multinomial_hessian_classmajor(Xt, prob, l2)
    return H[order][:, order]


def multinomial_self_influence(model: nn.Module, X: Tensor, y: Tensor, l2: float,
                               chunk: int = 2048) -> Tensor:
    """I_up,loss(z_i, z_i) = -(r_i (x) x~_i)^T H^-1 (r_i (x) x~_i) for every training point [n] (<= 0),
    exactly (float64), for a model from ``linear_model(d, C)`` (C > 2) trained with L2 ``l2`` > 0.

    One Cholesky factor L of the p x p Hessian (p = C (d + 1)), then ||L^-1 g_i||^2 for the
    per-point gradients in chunks of ``chunk`` points: time p^3 / 3 + n p^2, memory p^2 + chunk p
    (MNIST, 10 classes: p = 7,850).
    """
    if not l2 > 0:
        raise InputError(f"multinomial_self_influence needs l2 > 0 (a positive-definite Hessian), got {l2}.")
    Xt, prob, y = _multinomial_parts(model, X, y)
    L = torch.linalg.cholesky(_multinomial_hessian_classmajor(Xt, prob, l2))
    out = []
    for s in range(0, len(Xt), chunk):
        r = prob[s:s + chunk].clone()
        r[torch.arange(len(r)), y[s:s + chunk]] -= 1
        G = (r[:, :, None] * Xt[s:s + chunk, None, :]).reshape(len(r), -1)  # class-major gradients [m, p]
        B = torch.linalg.solve_triangular(L, G.T, upper=False)
        out.append(-(B * B).sum(0))
    return torch.cat(out)
