"""Linear SVM: smooth-hinge influence against exact hinge leave-one-out, over test points, L2
strengths and data sets (how much the single `mnist-svm` figure depends on the case).

    python benchmarks/validate/svm_sweep.py            # MNIST 1 vs 7 and digits
    python benchmarks/validate/svm_sweep.py digits     # digits only (bundled data)

For each case and each of the 5 highest-hinge-loss test points: the k = 50 most influential
training points, Pearson / Spearman of -(1/n) I_up,loss (SmoothHinge(0.001) at the SVM's
weights) against the exact active-set retrain, and the Newton-step variant
(``Influence.loo_newton``). One markdown row per (case, test point), then a summary line.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch

from influencekit.experiments.workloads import make_workload, validate

CASES = [("mnist-svm", {"l2": 1e-2}), ("mnist-svm", {"l2": 1e-3}), ("mnist-svm", {"l2": 1e-1}),
         ("mnist-svm", {"l2": 1e-2, "t": 0.0}),
         ("digits-svm", {"classes": (3, 8)}), ("digits-svm", {"classes": (1, 7)}),
         ("digits-svm", {"classes": (4, 9)})]
TEST_POINTS = 5


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    print("| workload | options | n | test point | Pearson | Spearman | Newton-step Pearson | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, opts in CASES:
        if argv and not any(a in name for a in argv):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = make_workload(name, **opts)
        worst = w.test_losses().argsort(descending=True)[:TEST_POINTS].tolist()
        rs = []
        for j in worst:
            t0 = time.perf_counter()
            r = validate(w, "exact", k=50, test_index=j)
            rs.append(r["pearson"])
            print(f"| {name} | {opts} | {r['n']} | {j} | {r['pearson']:.3f} | {r['spearman']:.3f} | "
                  f"{r['pearson_newton']:.3f} | {time.perf_counter() - t0:.1f} |", flush=True)
        print(f"| {name} | {opts} | summary | {len(rs)} points | min {min(rs):.3f}, median "
              f"{float(np.median(rs)):.3f} | | | |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
