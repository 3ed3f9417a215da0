"""Linear SVM: smooth-hinge influence against exact hinge leave-one-out, across digit pairs and
L2 strengths (how much the single `digits-svm` figure depends on the problem).

    python benchmarks/validate/svm_sweep.py

For each (pair, l2): the k = 50 most influential training points for the highest-loss test
point, Pearson / Spearman of -(1/n) I_up,loss with SmoothHinge(0.001) against the exact dual-QP
retrain, and the Newton-step variant (``Influence.loo_newton``). One markdown row per case.
"""

from __future__ import annotations

import itertools
import warnings

import torch

from influencekit.workloads import make_workload, validate

PAIRS = [(3, 8), (1, 7), (4, 9)]
L2S = [1e-3, 1e-2, 1e-1]


def main() -> None:
    torch.set_num_threads(1)
    print("| pair | l2 | n | Pearson | Spearman | Newton-step Pearson | Newton-step Spearman |")
    print("|---|---|---|---|---|---|---|")
    for pair, l2 in itertools.product(PAIRS, L2S):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = validate(make_workload("digits-svm", classes=pair, l2=l2, t=1e-3), "exact", k=50)
        print(f"| {pair[0]} vs {pair[1]} | {l2:g} | {r['n']} | {r['pearson']:.3f} | {r['spearman']:.3f} | "
              f"{r['pearson_newton']:.3f} | {r['spearman_newton']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
