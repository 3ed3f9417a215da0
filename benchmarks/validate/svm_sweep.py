"""Linear SVM: smooth-hinge influence against exact hinge leave-one-out, over test points, L2
strengths and data sets (how much the single `mnist-svm` figure depends on the case).

    python benchmarks/validate/svm_sweep.py            # MNIST 1 vs 7 and digits
    python benchmarks/validate/svm_sweep.py digits     # digits only (bundled data)

For each case and each of the 5 highest-hinge-loss test points: the k = 50 most influential
training points, Pearson / Spearman of -(1/n) I_up,loss (SmoothHinge(0.001) at the SVM's
weights) against the exact active-set retrain, and the Newton-step variant
(``Influence.loo_newton``). One markdown row per (case, test point), then a summary line; each case
is recorded in benchmarks/validate/svm_sweep.json (key ``problem:option=value,...``).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from influencekit.experiments import validate
from influencekit.experiments.problems import make

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

CASES = [("mnist-svm", {"l2": 1e-2}), ("mnist-svm", {"l2": 1e-3}), ("mnist-svm", {"l2": 1e-1}),
         ("mnist-svm", {"l2": 1e-2, "t": 0.0}),
         ("digits-svm", {"classes": (3, 8)}), ("digits-svm", {"classes": (1, 7)}),
         ("digits-svm", {"classes": (4, 9)})]
TEST_POINTS = 5


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    print("| problem | options | n | test point | Pearson | Spearman | Newton-step Pearson | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, opts in CASES:
        if argv and not any(a in name for a in argv):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem = make(name, **opts)
        worst = problem.test_losses().argsort(descending=True)[:TEST_POINTS].tolist()
        rs, rows = [], []
        for j in worst:
            t0 = time.perf_counter()
            r = validate.run(problem, "exact", k=50, test_index=j).to_json()
            rs.append(r["pearson"])
            rows.append({k: r[k] for k in ("n", "pearson", "spearman", "pearson_newton")} | {"test_index": j})
            print(f"| {name} | {opts} | {r['n']} | {j} | {r['pearson']:.3f} | {r['spearman']:.3f} | "
                  f"{r['pearson_newton']:.3f} | {time.perf_counter() - t0:.1f} |", flush=True)
        print(f"| {name} | {opts} | summary | {len(rs)} points | min {min(rs):.3f}, median "
              f"{float(np.median(rs)):.3f} | | | |", flush=True)
        key = f"{name}:" + ",".join(f"{k}={v}" for k, v in opts.items())
        record(__file__, key, {"options": opts, "test_points": rows, "min_pearson": min(rs),
                               "median_pearson": float(np.median(rs))})


if __name__ == "__main__":
    main(sys.argv[1:])
