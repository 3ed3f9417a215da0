"""How close can a Gauss-Newton approximation get to exact influence on the peers' MLP?

    python benchmarks/peers/curvature_ceiling.py [--model mlp]

Needs a finished `run.py --model mlp` (its trained model and float64 exact reference). Prints
Pearson / Spearman / top-10 overlap against the reference for: the explicit full GGN, the GGN
kept block-diagonal per Linear layer (weight + bias), the Hessian kept block-diagonal, then
influencekit's K-FAC and EK-FAC (Kronecker factors of those blocks: as published, and with the
library's two refinements, exact blocks for layers of at most 1,024 parameters and EK-FAC's
per-row input bases), and EK-FAC-preconditioned
CG stopped after 1-5 iterations (EK-FAC refined with exact HVPs). All float64, the same damping
as the harness. Signs: ``influencekit.convention``. Recorded in benchmarks/peers/curvature_ceiling.json
(key: the model).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.func import jacrev, vmap

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run as peers  # noqa: E402
from record import record  # noqa: E402

from influencekit import Influence, Objective  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp", choices=["mlp", "mlp-small"])
    ap.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/ik_peers")
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    work = Path(a.work) / a.model
    model, Xtr, ytr, Xte, yte = peers.load(a.model, work)
    ref = load_file(work / "scores_ik_exact.safetensors")["M"]
    obj = Objective(model, "cross_entropy", (Xtr, ytr), l2=peers.L2, dtype=torch.float64)
    X, y = obj.cast(Xtr, ytr)
    # GGN = (1/n) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i, J_i = d logits / d theta [C, p]
    J = vmap(jacrev(lambda t, x: obj.outputs(t, x[None])[0]), in_dims=(None, 0))(obj.theta, X)
    with torch.no_grad():
        P = torch.softmax(obj.outputs(obj.theta, X), 1)
    Lam = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
    ggn = torch.einsum("ncp,ncd,ndq->pq", J, Lam, J) / len(X) + peers.L2 * torch.eye(obj.p, dtype=torch.float64)
    H = obj.hessian()
    G_train, G_test = obj.grads(X, y), obj.grads(*obj.cast(Xte, yte))
    damped = lambda A: A + peers.DAMPING * torch.eye(obj.p, dtype=A.dtype)  # noqa: E731

    def up_loss(A: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.solve(damped(A), G_test.T).T @ G_train.T

    def block_diagonal(A: torch.Tensor) -> torch.Tensor:  # one block per layer: weight and bias together
        out, start = torch.zeros_like(A), 0
        for w, b in zip(obj.numels[0::2], obj.numels[1::2]):
            out[start:start + w + b, start:start + w + b] = A[start:start + w + b, start:start + w + b]
            start += w + b
        return out

    print(f"# {a.model}: p = {obj.p}, n = {len(X)}, m = {len(Xte)}; damping {peers.DAMPING}, l2 {peers.L2}")
    print("| curvature | Pearson | Spearman | top-10 | seconds |\n|---|---|---|---|---|")
    rows = [("exact Hessian (check)", lambda: up_loss(H)), ("full GGN", lambda: up_loss(ggn)),
            ("block-diagonal GGN", lambda: up_loss(block_diagonal(ggn))),
            ("block-diagonal Hessian", lambda: up_loss(block_diagonal(H)))]
    variants = [("kfac", "textbook: every layer factorised", {"exact_block": 0}),
                ("kfac", "layers <= 1,024 params exact (default)", {}),
                ("ekfac", "textbook: every layer factorised, diagonal correction", {"exact_block": 0, "row_bases": 0}),
                ("ekfac", "layers <= 1,024 params exact, diagonal correction", {"row_bases": 0}),
                ("ekfac", "every layer factorised, per-row input bases", {"exact_block": 0}),
                ("ekfac", "layers <= 1,024 params exact, per-row input bases (default)", {})]
    for name, what, opts in variants:
        rows.append((f"influencekit {name}, {what}", lambda name=name, opts=opts: Influence(
            model, "cross_entropy", (Xtr, ytr), l2=peers.L2, solver=name, damping=peers.DAMPING,
            dtype=torch.float64, **opts).up_loss((Xte, yte))))
    for it in range(1, 6):
        rows.append((f"EK-FAC-preconditioned CG, {it} iteration(s)", lambda it=it: Influence(
            model, "cross_entropy", (Xtr, ytr), l2=peers.L2, solver="pcg", damping=peers.DAMPING, max_iter=it,
            batch_size=2048, dtype=torch.float64).up_loss((Xte, yte))))
    results = []
    for name, compute in rows:
        t = time.perf_counter()
        M = compute()
        r, secs = peers.agreement(M, ref), time.perf_counter() - t
        print(f"| {name} | {r['pearson']:.4f} | {r['spearman']:.4f} | {r['top10']:.2f} | {secs:.2f} |", flush=True)
        results.append({"curvature": name, **r, "seconds": secs})
    record(__file__, a.model, {"p": obj.p, "n": len(X), "damping": peers.DAMPING, "l2": peers.L2, "rows": results})


if __name__ == "__main__":
    main()
