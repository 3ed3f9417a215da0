"""``influencekit report --out DIR``: the main job. One self-contained HTML report (DIR/report.html,
figures also as PNG, figures in DIR/summary.json) on bundled data: explanations of a few test
digits, the leave-one-out check, influence vs distance, and mislabel detection; with ``--full``
also MNIST and Enron mislabel detection and the diabetes domain mismatch (shared data).
The report: ``influencekit.experiments.report.build``."""

from __future__ import annotations

import argparse

from . import correlation_count

help = "build the full HTML report (explain, LOO check, mislabel; --full adds MNIST/Enron/diabetes) into --out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="add MNIST and Enron mislabel detection and the diabetes mismatch (needs the shared data)")
    p.add_argument("--k", type=correlation_count, default=30,
                   help="LOO check: retrain leave-one-out on the k most influential")
    p.add_argument("--mnist-train", type=int, default=5000, help="--full: MNIST 1 vs 7 training subset size")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..convention import SIGN_CONVENTION
    from ..errors import InputError

    if not args.out:
        raise InputError("report needs --out DIR (the folder to write report.html and the figures into).")
    from ..experiments import report

    path, summary = report.build(args.out, full=args.full, k=args.k, mnist_train=args.mnist_train,
                                 data_dir=args.data_dir, seed=args.seed, progress=not args.json)
    if args.json:
        print(json.dumps({"report": str(path), **summary}, default=float))
        return 0
    print(f"convention: {SIGN_CONVENTION}")
    e = summary["explain"]["influence_vs_distance"]
    print(f"influence vs distance: Spearman(|I|, dist) RBF {e['rbf']['spearman']:.3f}, MLP {e['mlp']['spearman']:.3f}")
    print(f"LOO check (digits 1 vs 7, k = {summary['loo']['k']}): Pearson R = {summary['loo']['pearson']:.4f}, "
          f"Spearman = {summary['loo']['spearman']:.4f}")
    for key in [s for s in summary if s.startswith("mislabel")]:
        at = summary[key]["found_at_10pct"]
        print(f"{key}: flipped labels found at 10% checked: self-influence {at['self_influence']:.1%}, "
              f"loss {at['loss']:.1%}, random {at['random']:.1%}")
    if "mismatch" in summary:
        m = summary["mismatch"]
        print(f"mismatch: {m['children_in_top10']} of {len(m['kept_children'])} kept children in the top 10 "
              f"(ranks {m['children_ranks']})")
    print(f"report written to {path} in {summary['seconds']:.0f} s", file=sys.stderr)
    return 0
