"""``influencekit explain``: the most helpful and harmful training points for a few test points,
against their nearest neighbours, and influence vs distance for an RBF-kernel and a learned-feature model.
The experiment: ``influencekit.experiments.explain``."""

from __future__ import annotations

import argparse

help = "most helpful/harmful training points for test points, vs nearest neighbours; influence vs distance (Fig. 1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist"],
                   help="digits: bundled 8x8 digits 1 vs 7; mnist: MNIST 1 vs 7 (needs mnist.npz)")
    p.add_argument("--model", default="logreg", choices=["logreg", "mlp"],
                   help="logistic regression (all parameters) or a tanh MLP (influence over its last layer)")
    p.add_argument("--test-index", type=int, nargs="*", default=None,
                   help="test points to explain (default: the two highest-loss ones and one typical one)")
    p.add_argument("--k", type=int, default=5, help="how many helpful and harmful points to show")
    p.add_argument("--no-distance", action="store_true", help="skip the RBF vs MLP influence-vs-distance figure")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 coefficient of the model")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from ..convention import SIGN_CONVENTION
    from ..experiments import explain, report

    problem = explain.problem(args.dataset, args.model, l2=args.l2, data_dir=args.data_dir, seed=args.seed)
    r = explain.run(problem, test_index=args.test_index, k=args.k, distance=not args.no_distance)
    if args.out:
        page = report.Page("influencekit explain")
        r.report(page)
        path = page.write(args.out)
        if r.distance is not None:
            report.save(r.distance_figure(), Path(args.out) / "influence_vs_distance.png")
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(r.to_json()))
        return 0
    print(f"{r.dataset} 1 vs 7, {r.model}: n = {r.n}, p = {r.p}")
    print(f"convention: {SIGN_CONVENTION}")
    for item in r.explanations:
        e = item.explanation
        print(f"test point {item.test_index} (label {item.label}, loss {item.loss:.3g}):")
        for role, idx in (("helpful", e.helpful), ("harmful", e.harmful)):
            print(f"  most {role}: " + ", ".join(f"{i} ({float(e.up_loss[i]):+.3g})" for i in idx))
        print(f"  overlap of top-k |influence| with k nearest: input {e.overlap_input:.0%}"
              + ("" if e.overlap_feature is None else f", feature space {e.overlap_feature:.0%}"))
    if r.distance is not None:
        s = r.to_json()["influence_vs_distance"]
        for m in ("rbf", "mlp"):
            print(f"influence vs distance, {m}: Spearman(|I_up,loss|, distance) = {s[m]['spearman']:.3f}, "
                  f"top-10 overlap with 10-NN = {s[m]['overlap']:.0%}")
    return 0
