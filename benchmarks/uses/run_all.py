"""The paper's uses on the shared data, end to end: mislabel curves and recovered accuracy on
Enron1 and MNIST, the diabetes domain-mismatch top-10 check, and the explain figures.

    python benchmarks/uses/run_all.py [--data-dir DIR] [--mnist-train 5000] [--repeats 10]
        [--only explain enron enron_validated mnist mnist_all mnist_mlp mnist_cnn mismatch]

Prints every figure and writes PNGs + results.json next to this file (``--only`` updates only
those entries). Mislabel entries are means over ``--repeats`` flip seeds (0, 1, ...; the networks:
``--net-repeats``) on one data split, with every seed's numbers in results.json. Settings are the
defaults of ``influencekit.cli.mislabel``: ``enron`` the paper's protocol (raw counts, words in
>= 5 emails, l2 = 1e-4), ``enron_validated`` the validated one (log1p counts, l2 = 1e-3; chosen by
``mislabel_sweep.py``), ``mnist`` 1 vs 7 logistic regression and ``mnist_all`` 10-class multinomial
regression (both ``--mnist-train`` points, l2 = 1e-2 by validation; ``mislabel_mnist10_sweep.py``
has the L2 grid); ``mnist_mlp``:
MNIST, 10 classes, 3000 points, tanh MLP 784-32-10 (``--model mlp``, recipe chosen by
``mislabel_net_sweep.py``); ``mnist_cnn``: the same with ``models.SmallCNN`` (``--model cnn``).
Sign convention:
I_up,loss > 0 harmful, < 0 helpful; loo = -(1/n) I_up,loss; self-influence <= 0, ranked by magnitude.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from influencekit import SIGN_CONVENTION
from influencekit.cli import explain, mislabel, mismatch
from influencekit.experiments import report

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
        res = explain.compute("digits", "logreg", None, 5, True, 1e-2, args.data_dir)
        report.save(report.influence_distance_figure(res["distance"]), HERE / "influence_vs_distance_digits.png")
        out["explain"] = explain.to_json(res) | {"seconds": time.perf_counter() - t}
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
        res = mislabel.compute(dataset, data_dir=args.data_dir, n_train=n_train, progress=False,
                               model=entry.split("_")[1] if net else "linear",
                               setup="validated" if entry.endswith("_validated") else "paper",
                               repeats=args.net_repeats if net else args.repeats,
                               classes="all" if entry == "mnist_all" else None)
        r = res["result"]
        report.save(report.mislabel_figure(r, res["desc"]), HERE / f"mislabel_{entry}.png")
        out[f"mislabel_{entry}"] = mislabel.to_json(res) | {"seconds": time.perf_counter() - t}
        print(f"mislabel {res['desc']}: n = {r.n}, p = {r.p}, l2 = {res['l2']}, flipped {r.n_flipped}, "
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
        m = mismatch.compute(data_dir=args.data_dir)
        out["mismatch"] = m.to_json() | {"seconds": time.perf_counter() - t}
        names, vals = zip(*m.top_present_features)
        report.save(report.bar_figure(list(names), list(vals), "kept children: x * I_pert,loss", "test-loss change"),
                    HERE / "mismatch_features.png")
        print(f"mismatch: test children accuracy {m.children_test_accuracy:.3f}; explained child label "
              f"{m.test_label}, P(readmitted) {m.test_probability:.3f}; kept children in top 10: "
              f"{m.children_in_top10}/{len(m.kept_children)} (ranks {m.children_ranks}); top feature "
              f"{m.top_present_features[0][0]}", flush=True)
    path = HERE / "results.json"  # a partial run (--only) keeps the other entries
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(old | out, indent=1, default=float))


if __name__ == "__main__":
    main()
