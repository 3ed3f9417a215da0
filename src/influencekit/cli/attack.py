"""``influencekit attack``: training-set attack on MNIST test images, verified by retraining.
The experiment: ``influencekit.experiments.attack`` (the method and ``run``) on the problems of
``influencekit.experiments.attack_mnist``."""

from __future__ import annotations

import argparse

help = ("perturb a few training images along I_pert,loss (L-inf bounded) so the retrained model flips a test "
        "prediction; saves before/after/difference PNGs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setting", choices=("top-layer", "network"), default="top-layer",
                   help="frozen SmallCNN features + logistic regression (retrained to a stationary point), or the "
                        "whole SmallCNN (retrained from warm start)")
    p.add_argument("--classes", type=int, nargs=2, default=(3, 8), help="the two MNIST digits")
    p.add_argument("--n-train", type=int, default=None,
                   help="training images of the two classes (default 1000 top-layer, 200 network)")
    p.add_argument("--cnn-train", type=int, default=8000,
                   help="MNIST images (all digits) the frozen feature extractor is trained on (top-layer)")
    p.add_argument("--l2", type=float, default=1e-2, help="L2 coefficient of the trained model")
    p.add_argument("--targets", type=int, default=3, help="number of random correctly classified test images")
    p.add_argument("--test-index", type=int, nargs="*", default=None, help="attack these test indices instead")
    p.add_argument("--k", type=int, default=5, help="training images perturbed per target")
    p.add_argument("--bound", type=float, default=8.0, help="L-inf bound, in grey levels (x/255)")
    p.add_argument("--step", type=float, default=1.0, help="step size, in grey levels (x/255)")
    p.add_argument("--max-steps", type=int, default=16, help="steps before giving up")
    p.add_argument("--select", choices=("up_loss", "pert_l1"), default="up_loss",
                   help="choose the k points by largest |I_up,loss| (paper) or largest ||I_pert,loss||_1")


def run(args: argparse.Namespace) -> int:
    import json

    from ..convention import PERT_CONVENTION
    from ..errors import InputError

    if args.k < 1 or args.targets < 1:
        raise InputError("--k and --targets must be >= 1.")
    from ..experiments import attack, attack_mnist

    classes = tuple(args.classes)
    if args.setting == "top-layer":
        problem = attack_mnist.top_layer(args.data_dir, classes, n_train=args.n_train or 1000, l2=args.l2,
                                         cnn_train=args.cnn_train, seed=args.seed)
    else:
        problem = attack_mnist.network(args.data_dir, classes, n_train=args.n_train or 200, l2=args.l2,
                                       seed=args.seed)
    config = attack.AttackConfig(k=args.k, bound=args.bound / 255, step=args.step / 255, max_steps=args.max_steps,
                                 select=args.select)
    r = attack.run(problem, config, test_index=args.test_index, targets=args.targets, seed=args.seed, out=args.out)
    if args.json:
        print(json.dumps(r.to_json()))
        return 0
    cfg = r.config
    print(r.notes)
    print(f"clean test accuracy {r.clean_accuracy:.4f}; k = {cfg.k} training images, L-inf <= "
          f"{args.bound:g}/255, step {args.step:g}/255, <= {cfg.max_steps} steps, select {cfg.select}")
    print(f"convention: {PERT_CONVENTION}")
    print(f"{'test':>6} {'label':>5} {'pred before':>11} {'after':>5} {'flipped':>7} {'steps':>5} "
          f"{'loss before':>11} {'after':>8} {'predicted rise':>14} {'acc rest':>8}")
    for row in r.rows:
        print(f"{row['test_index']:>6} {row['label']:>5} {row['prediction_before']:>11} {row['prediction_after']:>5} "
              f"{str(row['flipped']):>7} {row['steps']:>5} {row['loss_before']:>11.4f} {row['loss_after']:>8.4f} "
              f"{row['predicted_rise']:>14.4f} {row['retrained_accuracy_rest']:>8.4f}")
    print(f"success rate (after retraining) {r.success_rate:.2f} over {len(r.rows)} targets; "
          f"{r.seconds:.1f} s" + (f"; figures under {args.out}" if args.out else ""))
    return 0
