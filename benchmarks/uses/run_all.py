"""The paper's uses on the shared data, end to end: mislabel curves and recovered accuracy on
Enron1 and MNIST, the diabetes domain-mismatch top-10 check, and the explain figures.

    python benchmarks/uses/run_all.py [--data-dir DIR] [--mnist-train 5000] [--repeats 10]
        [--only explain enron enron_validated mnist mnist_all mnist_mlp mnist_cnn mismatch]

Prints every figure and writes PNGs next to this file; records each entry in run_all.json (``--only``
updates only those entries). Mislabel entries are means over ``--repeats`` flip seeds (0, 1, ...; the
networks: ``--net-repeats``) on one data split, with every seed's numbers in run_all.json. Settings are
the defaults of ``influencekit.experiments.mislabel.problem`` (those of ``influencekit mislabel``):
``enron`` the paper's protocol (raw counts, words in >= 5 emails, l2 = 1e-4), ``enron_validated`` the
validated one (log1p counts, l2 = 1e-3; chosen by ``mislabel_sweep.py``), ``mnist`` 1 vs 7 logistic
regression and ``mnist_all`` 10-class multinomial regression (both ``--mnist-train`` points, l2 = 1e-2
by validation; ``mislabel_mnist10_sweep.py`` has the L2 grid); ``mnist_mlp``: MNIST, 10 classes, 3000
points, tanh MLP 784-32-10 (``--model mlp``, recipe chosen by ``mislabel_net_sweep.py``); ``mnist_cnn``:
the same with ``models.SmallCNN`` (``--model cnn``). Signs: ``influencekit.convention``; self-influence
is <= 0 and ranked by magnitude.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from influencekit.convention import SIGN_CONVENTION
from influencekit.experiments import explain, mislabel, mismatch, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--mnist-train", type=int, default=5000, help="MNIST training subset of mnist and mnist_all")
    ap.add_argument("--repeats", type=int, default=10, help="flip seeds per linear mislabel entry")
    ap.add_argument("--net-repeats", type=int, default=3, help="flip seeds for mnist_mlp and mnist_cnn")
    ap.add_argument("--only", nargs="*",
                    default=["explain", "enron", "enron_validated", "mnist", "mnist_all", "mnist_mlp", "mnist_cnn",
                             "mismatch"])
    args = ap.parse_args()
    out: dict = {"convention": SIGN_CONVENTION}
    print(f"convention: {SIGN_CONVENTION}")
    if "explain" in args.only:
        t = time.perf_counter()
        res = explain.run(explain.problem("digits", "logreg", l2=1e-2, data_dir=args.data_dir), k=5, distance=True)
        report.save(res.distance_figure(), HERE / "influence_vs_distance_digits.png")
        out["explain"] = res.to_json() | {"seconds": time.perf_counter() - t}
        d = out["explain"]["influence_vs_distance"]
        print(f"explain digits 1v7: Spearman(|I_up,loss|, distance) RBF {d['rbf']['spearman']:.3f} "
              f"(top-10/10-NN overlap {d['rbf']['overlap']:.0%}), MLP {d['mlp']['spearman']:.3f} "
              f"(overlap {d['mlp']['overlap']:.0%})", flush=True)
    for entry in ("enron", "enron_validated", "mnist", "mnist_all", "mnist_mlp", "mnist_cnn"):
        if entry not in args.only:
            continue
        t = time.perf_counter()
        dataset = entry.split("_")[0]
        n_train = {"mnist": args.mnist_train, "mnist_all": args.mnist_train, "mnist_mlp": 3000,
                   "mnist_cnn": 3000}.get(entry)
        net = entry.endswith(("_mlp", "_cnn"))
        problem = mislabel.problem(dataset, data_dir=args.data_dir, n_train=n_train,
                                   model=entry.split("_")[1] if net else "linear",
                                   setup="validated" if entry.endswith("_validated") else "paper",
                                   classes="all" if entry == "mnist_all" else None)
        r = mislabel.run(problem, repeats=args.net_repeats if net else args.repeats)
        report.save(r.figure(), HERE / f"mislabel_{entry}.png")
        out[f"mislabel_{entry}"] = r.to_json() | {"seconds": time.perf_counter() - t}
        print(f"mislabel {r.description}: n = {r.n}, p = {r.p}, l2 = {r.l2}, flipped {r.n_flipped}, "
              f"{len(r.repeats or [0])} flip seed(s); test accuracy clean {r.clean_accuracy:.4f}, flipped "
              f"{r.noisy_accuracy:.4f}; flips fitted {r.flips_fitted:.2f}", flush=True)
        sd = r.at(0.1, r.found_std) if r.repeats else {k: 0.0 for k in r.found}
        for k in r.found:
            print(f"  {k:>15}: found at 5/10/20% checked {r.at(0.05)[k]:.3f} / {r.at(0.1)[k]:.3f} "
                  f"(s.d. {sd[k]:.3f}) / {r.at(0.2)[k]:.3f}; accuracy after fixing "
                  f"{[float(x) for x in r.retrain_at]}: " + " / ".join(f"{a:.4f}" for a in r.accuracy[k]), flush=True)
        if r.repeats:
            print("  per seed, found at 10% (self-influence / loss / random): " + "; ".join(
                "/".join(f"{x['found_at_10pct'][k]:.3f}" for k in r.found) for x in r.repeats), flush=True)
    if "mismatch" in args.only:
        t = time.perf_counter()
        m = mismatch.run(mismatch.problem(data_dir=args.data_dir))
        out["mismatch"] = m.to_json() | {"seconds": time.perf_counter() - t}
        report.save(m.figure(), HERE / "mismatch_features.png")
        print(f"mismatch: test children accuracy {m.children_test_accuracy:.3f}; explained child label "
              f"{m.test_label}, P(readmitted) {m.test_probability:.3f}; kept children in top 10: "
              f"{m.children_in_top10}/{len(m.kept_children)} (ranks {m.children_ranks}); top feature "
              f"{m.top_present_features[0][0]}", flush=True)
    for key, entry in out.items():  # a partial run (--only) keeps the other entries
        if key != "convention":
            record(__file__, key, entry)


if __name__ == "__main__":
    main()
