"""Mislabel detection on MNIST with the CNN recipe of ``influencekit mislabel --model cnn`` (seed 0):
self-influence with the exact Gauss-Newton matrix of all 11,978 parameters instead of EK-FAC, to
separate EK-FAC's approximation error from the method.

    OMP_NUM_THREADS=1 python benchmarks/uses/mislabel_cnn_ggn.py [--seed 0] [--n 3000]

GGN = (1/n) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i, built from per-example Jacobians J_i [10, p]
(torch.func) and the square root R_i^T = diag(sqrt p_i) - sqrt(p_i) p_i^T of the softmax
cross-entropy's output Hessian; then I_up,loss(z_i, z_i) = -g_i^T (GGN + (l2 + d) I)^-1 g_i by one
Cholesky factor, for d = 1e-4 and 1e-3. Prints the fraction of flipped labels found at 5 / 10 / 20%
checked for both and for training-loss ranking. Same subset, flips, initialisation and batch order as
``run_all.py --only mnist_cnn`` (seed 0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

from influencekit import Objective, datasets
from influencekit.commands.mislabel import CNN_RECIPE
from influencekit.uses import mislabel as ml

FRACTIONS = np.array([0.05, 0.1, 0.2])


def ggn(model: torch.nn.Module, X: torch.Tensor, chunk: int = 100) -> torch.Tensor:
    """The Gauss-Newton matrix [p, p] of the mean cross-entropy at the model's parameters, float64."""
    names = [k for k, _ in model.named_parameters()]
    params = {k: v.detach() for k, v in model.named_parameters()}
    p = sum(v.numel() for v in params.values())

    def logits(ps, x):
        return functional_call(model, ps, (x[None],))[0]

    out = torch.zeros(p, p, dtype=torch.float64)
    for s in range(0, len(X), chunk):
        xb = X[s:s + chunk]
        jac = vmap(jacrev(logits), in_dims=(None, 0))(params, xb)
        J = torch.cat([jac[k].reshape(len(xb), -1, jac[k][0, 0].numel()) for k in names], 2)  # [B, C, p]
        with torch.no_grad():
            prob = torch.softmax(model(xb), 1)
        root = prob.sqrt()
        RT = torch.diag_embed(root) - root[:, :, None] * prob[:, None, :]  # R^T, R R^T = diag(p) - p p^T
        Z = (RT @ J).reshape(-1, p)
        out += Z.T @ Z
    return out / len(X)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    Xtr, ytr, _, _ = datasets.mnist(None, flatten=True, dtype=torch.float32)
    idx = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(args.seed))[:args.n].sort().values
    Xtr, ytr = Xtr[idx], ytr[idx]
    noisy, flipped = ml.flip_labels(ytr, 0.1, args.seed)
    model = ml.fit_net(Xtr, noisy, 10, seed=args.seed, **CNN_RECIPE).double().eval()
    X = Xtr.double()
    H = ggn(model, X)
    obj = Objective(model, "cross_entropy", (X, noisy), l2=CNN_RECIPE["l2"])
    G = torch.cat([obj.grads(X[s:s + 500], noisy[s:s + 500]) for s in range(0, len(X), 500)])
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(model(X), noisy, reduction="none")
    out = {"loss": ml.detection_curve(losses.argsort(descending=True), flipped, FRACTIONS).tolist()}
    for d in (1e-4, 1e-3):
        L = torch.linalg.cholesky(H + (CNN_RECIPE["l2"] + d) * torch.eye(obj.p, dtype=torch.float64))
        B = torch.linalg.solve_triangular(L, G.T, upper=False)
        self_inf = -(B * B).sum(0)
        out[f"exact_ggn_d{d:g}"] = ml.detection_curve(self_inf.abs().argsort(descending=True), flipped,
                                                       FRACTIONS).tolist()
    print(json.dumps({"p": obj.p, "found_at_5_10_20pct": out, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
