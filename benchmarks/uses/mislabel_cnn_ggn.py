"""Mislabel detection on MNIST with the CNN recipe of ``influencekit mislabel --model cnn`` (seed 0):
self-influence with the exact Gauss-Newton matrix of all 11,978 parameters instead of EK-FAC, to
separate EK-FAC's approximation error from the method.

    OMP_NUM_THREADS=1 python benchmarks/uses/mislabel_cnn_ggn.py [--seed 0]

GGN = (1/n) sum_b Z_b^T Z_b from the per-example pseudo-gradients Z_b [10, p] of
``LayerCapture.pseudo_gradients(..., "ggn")`` (the curvature EK-FAC approximates, formed exactly);
then I_up,loss(z_i, z_i) = -g_i^T (GGN + (l2 + d) I)^-1 g_i by one Cholesky factor, for d = 1e-4 and
1e-3. Prints the fraction of flipped labels found at 5 / 10 / 20% checked for both and for
training-loss ranking. Same subset (``experiments.mislabel.load``), flips, initialisation and batch order
as ``run_all.py --only mnist_cnn`` (seed 0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from influencekit import Objective
from influencekit.capture import LayerCapture
from influencekit.experiments import mislabel as ml
from influencekit.experiments.mislabel import CNN_RECIPE, load

FRACTIONS = np.array([0.05, 0.1, 0.2])


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    Xtr, ytr = load("mnist", None, args.seed, model="cnn").train
    noisy, flipped = ml.flip_labels(ytr, 0.1, args.seed)
    model = ml.fit_net(Xtr, noisy, 10, seed=args.seed, **CNN_RECIPE).double().eval()
    X = Xtr.double()
    obj = Objective(model, "cross_entropy", (X, noisy), l2=CNN_RECIPE["l2"], batch_size=100)
    capture = LayerCapture(obj)
    ggn = torch.zeros(obj.p, obj.p, dtype=torch.float64)
    G, losses = [], []
    for _, x, y in obj.train.batches(obj.batch_size):  # one pass: curvature, gradients and losses
        Z = capture.pseudo_gradients(x, y, "ggn").flatten(0, 1)
        ggn += Z.T @ Z / obj.n
        G.append(obj.grads(x, y))
        losses.append(obj.losses(obj.theta, x, y).detach())
    G, losses = torch.cat(G), torch.cat(losses)
    out = {"loss": ml.detection_curve(losses.argsort(descending=True), flipped, FRACTIONS).tolist()}
    for d in (1e-4, 1e-3):
        L = torch.linalg.cholesky(ggn + (obj.l2 + d) * torch.eye(obj.p, dtype=torch.float64))
        B = torch.linalg.solve_triangular(L, G.T, upper=False)
        self_inf = -(B * B).sum(0)
        out[f"exact_ggn_d{d:g}"] = ml.detection_curve(self_inf.abs().argsort(descending=True), flipped,
                                                       FRACTIONS).tolist()
    print(json.dumps({"p": obj.p, "found_at_5_10_20pct": out, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
