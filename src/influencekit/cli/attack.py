"""``influencekit attack``: training-set attack on MNIST test images, verified by retraining."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..convention import PERT_CONVENTION, SIGN_CONVENTION
from ..errors import InputError
from ..experiments.attack import AttackConfig, attack

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
    from ..experiments import attack_mnist

    if args.k < 1 or args.targets < 1:
        raise InputError("--k and --targets must be >= 1.")
    t0 = time.perf_counter()
    classes = tuple(args.classes)
    if args.setting == "top-layer":
        s = attack_mnist.top_layer_setting(args.data_dir, classes, n_train=args.n_train or 1000, l2=args.l2,
                                           cnn_train=args.cnn_train, seed=args.seed)
    else:
        s = attack_mnist.network_setting(args.data_dir, classes, n_train=args.n_train or 200, l2=args.l2,
                                         seed=args.seed)
    v = s.victim
    if args.test_index:
        bad = [i for i in args.test_index if not 0 <= i < len(s.x_test)]
        if bad:
            raise InputError(f"--test-index {bad} out of range [0, {len(s.x_test)}).")
        targets = args.test_index
    else:
        targets = attack_mnist.correct_targets(s, args.targets, args.seed).tolist()
    cfg = AttackConfig(k=args.k, bound=args.bound / 255, step=args.step / 255, max_steps=args.max_steps,
                       select=args.select, solver=s.solver, damping=s.damping)
    cfg.check()
    out = Path(args.out) if args.out else None
    rows = []
    for j in targets:
        x, y = s.x_test[j:j + 1], s.y_test[j:j + 1]
        r = attack(v, x, y, cfg)
        rest = [i for i in range(len(s.x_test)) if i != j]
        row = {"test_index": j, **r.summary(), "retrained_accuracy_rest": v.accuracy(r.theta, s.x_test[rest],
                                                                                     s.y_test[rest])}
        if out:
            row["figure"] = str(attack_mnist.save_figure(r, x, out / f"attack_test{j}.png",
                                                         f"test #{j}, k={cfg.k}, L-inf <= {args.bound:g}/255"))
            from safetensors.torch import save_file

            save_file({"index": r.index, "x_before": r.x_before.float().contiguous(),
                       "x_after": r.x_after.float().contiguous()}, str(out / f"attack_test{j}.safetensors"))
        rows.append(row)
    summary = {"setting": args.setting, "notes": s.notes, "clean_accuracy": v.accuracy(v.theta, s.x_test, s.y_test),
               "success_rate": sum(r["flipped"] for r in rows) / len(rows), "config": cfg.__dict__,
               "seconds": time.perf_counter() - t0, "convention": SIGN_CONVENTION,
               "perturbation_convention": PERT_CONVENTION, "attacks": rows}
    if out:
        (out / "attack.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(s.notes)
    print(f"clean test accuracy {summary['clean_accuracy']:.4f}; k = {cfg.k} training images, L-inf <= "
          f"{args.bound:g}/255, step {args.step:g}/255, <= {cfg.max_steps} steps, select {cfg.select}")
    print(f"convention: {PERT_CONVENTION}")
    print(f"{'test':>6} {'label':>5} {'pred before':>11} {'after':>5} {'flipped':>7} {'steps':>5} "
          f"{'loss before':>11} {'after':>8} {'predicted rise':>14} {'acc rest':>8}")
    for r in rows:
        print(f"{r['test_index']:>6} {r['label']:>5} {r['prediction_before']:>11} {r['prediction_after']:>5} "
              f"{str(r['flipped']):>7} {r['steps']:>5} {r['loss_before']:>11.4f} {r['loss_after']:>8.4f} "
              f"{r['predicted_rise']:>14.4f} {r['retrained_accuracy_rest']:>8.4f}")
    print(f"success rate (after retraining) {summary['success_rate']:.2f} over {len(rows)} targets; "
          f"{summary['seconds']:.1f} s" + (f"; figures under {out}" if out else ""))
    return 0
