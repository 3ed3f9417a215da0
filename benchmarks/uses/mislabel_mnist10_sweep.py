"""Mislabel detection on MNIST with all 10 classes and multinomial logistic regression: L2 grid.

    OMP_NUM_THREADS=1 python benchmarks/uses/mislabel_mnist10_sweep.py [--data-dir DIR] [--n-train 5000]
        [--seeds 0 1 2] [--l2 1e-2 1e-3 1e-4 1e-5 1e-6] [--tag ""]

For each flip seed and L2: the data of ``influencekit mislabel --dataset mnist --classes all``
(``experiments.mislabel.load``: a seeded random ``--n-train`` of the 60,000 training images; all of
them with 0), 10% of its labels flipped to a random other class, ``uses.mislabel.run`` (exact
closed-form multinomial self-influence, ``uses.fit.multinomial_self_influence``; refits after fixing
0% and 10%) with ``validate=True`` (the rule's validation accuracy, ``uses.mislabel.validation_accuracy``).
Appends rows to ``mislabel_mnist10_sweep.json`` under ``rows<tag>``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

import torch

from influencekit.errors import ConvergenceWarning
from influencekit.experiments import mislabel as ml

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-train", type=int, default=5000, help="0 = all 60,000")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="flip seeds (random order: seed + 1)")
    ap.add_argument("--l2", nargs="*", type=float, default=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    data = ml.load("mnist", args.data_dir, 0, n_train=args.n_train, classes="all")
    n = len(data.train[1])
    path = HERE / "mislabel_mnist10_sweep.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    rows = out.setdefault("rows" + args.tag, [])
    for seed, l2 in itertools.product(args.seeds, args.l2):
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            r = ml.run(ml.build(data, ml.Linear(l2), seed=seed), retrain_at=(0.0, 0.1), validate=True)
        val = r.val_accuracy
        row = {"n": n, "seed": seed, "l2": l2, "val_accuracy": val, "clean_accuracy": r.clean_accuracy,
               "noisy_accuracy": r.noisy_accuracy, "flips_fitted": r.flips_fitted, "found_at_10pct": r.at(0.1),
               "accuracy_after_fixing_10pct": {k: float(v[1]) for k, v in r.accuracy.items()},
               "convergence_warnings": len([w for w in caught if issubclass(w.category, ConvergenceWarning)]),
               "seconds": time.perf_counter() - t}
        rows.append(row)
        path.write_text(json.dumps(out, indent=1))
        f = row["found_at_10pct"]
        print(f"n {n} seed {seed} l2 {l2:.0e}: val {val:.4f} test clean/noisy {r.clean_accuracy:.4f}/"
              f"{r.noisy_accuracy:.4f} flips fitted {r.flips_fitted:.2f} | self-inf {f['self_influence']:.3f} loss "
              f"{f['loss']:.3f} random {f['random']:.3f} | acc. after fixing 10%: "
              + " / ".join(f"{v:.4f}" for v in row["accuracy_after_fixing_10pct"].values())
              + f" | {row['convergence_warnings']} warnings, {row['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
