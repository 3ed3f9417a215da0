"""``influencekit mislabel``: flip 10% of the training labels, rank by |self-influence|, training loss
and at random, and report how many flips each finds and the test accuracy after fixing them (paper Sec. 5.4).
The experiment, its recipes and data: ``influencekit.experiments.mislabel``."""

from __future__ import annotations

import argparse

help = "find flipped labels by self-influence vs training loss vs random; test accuracy after fixing (Sec. 5.4)"

# The parser imports argparse only; these mirror experiments.mislabel's ENRON, NETS and NET_N_TRAIN
# (tests/cli/test_uses.py checks that they agree).
SETUPS = ("paper", "validated")
NETS = ("mlp", "cnn")
NET_N_TRAIN = 3000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "enron", "mnist"],
                   help="digits: bundled, 10-class multinomial regression; enron: Enron1 bag of words (needs "
                        "enron1.tar.gz); mnist: MNIST 1 vs 7 logistic regression (needs mnist.npz)")
    p.add_argument("--fraction", type=float, default=0.1, help="fraction of training labels to flip")
    p.add_argument("--l2", type=float, default=None, help="L2 coefficient (default per data set)")
    p.add_argument("--setup", default="paper", choices=list(SETUPS),
                   help="enron: paper (default; raw counts, words in >= 5 emails, l2 1e-4, as the paper's code) or "
                        "validated (log1p counts, words in >= 2 emails, l2 1e-3 by validation)")
    p.add_argument("--vocabulary", type=int, default=0,
                   help="enron: vocabulary size (= p - 1); 0 (default): every word the set-up's min_df admits")
    p.add_argument("--repeats", type=int, default=1,
                   help="repeat with this many flip seeds (seed, seed + 1, ...) and report means +- s.d. "
                        "(the paper averages 40)")
    p.add_argument("--classes", default=None, choices=["1v7", "all"],
                   help="mnist: digits 1 vs 7 (default for the linear model: logistic regression) or all 10 "
                        "(default for --model mlp; linear: multinomial regression, p = 7,850)")
    p.add_argument("--n-train", type=int, default=None,
                   help=f"mnist: random training subset size (default: all for the linear model, {NET_N_TRAIN} for "
                        "mlp / cnn, the size their recipes were chosen at; 0: all)")
    p.add_argument("--model", default="linear", choices=["linear", *NETS],
                   help="linear (default): logistic / multinomial regression, exact self-influence; mlp: a tanh "
                        "MLP (784-32-10 on MNIST, all 10 classes) trained with Adam, EK-FAC self-influence; cnn "
                        "(MNIST only): a small tanh CNN (conv 8-16, 32 hidden), the same way")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from ..convention import SIGN_CONVENTION
    from ..errors import InputError
    from ..experiments import mislabel, report

    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1 (the number of flip seeds), got {args.repeats}.")
    problem = mislabel.problem(args.dataset, data_dir=args.data_dir, seed=args.seed, model=args.model, l2=args.l2,
                               setup=args.setup, vocabulary=args.vocabulary, classes=args.classes,
                               n_train=args.n_train)
    r = mislabel.run(problem, fraction=args.fraction, repeats=args.repeats, progress=not args.json,
                     cache=Path(args.out) / "mislabel_runs" if args.out else None)
    if args.out:
        page = report.Page("influencekit mislabel")
        r.report(page)
        path = page.write(args.out)
        report.save(r.figure(), Path(args.out) / f"mislabel_{args.dataset}.png")
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(r.to_json()))
        return 0
    print(f"{r.description}: n = {r.n}, p = {r.p}, {r.n_flipped} labels flipped, l2 = {r.l2}"
          + (f", set-up {r.setup}" if r.setup else ""))
    if r.repeats:
        print(f"means over {len(r.repeats)} flip seeds; found at 10% checked, mean +- s.d.: " + ", ".join(
            f"{k} {v:.1%} +- {r.at(0.1, r.found_std)[k]:.1%}" for k, v in r.at(0.1).items()))
    print(f"convention: {SIGN_CONVENTION}")
    print("self-influence is <= 0; ranked by its magnitude, largest first")
    print(f"{'ranking':>15} {'found@5%':>9} {'found@10%':>10} {'found@20%':>10}   test accuracy after fixing "
          + " / ".join(f"{f:.0%}" for f in r.retrain_at))
    for k in r.found:
        print(f"{k:>15} {r.at(0.05)[k]:>9.1%} {r.at(0.1)[k]:>10.1%} {r.at(0.2)[k]:>10.1%}   "
              + " / ".join(f"{a:.3f}" for a in r.accuracy[k]))
    print(f"test accuracy: clean labels {r.clean_accuracy:.3f}, flipped {r.noisy_accuracy:.3f}")
    return 0
