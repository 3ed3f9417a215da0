"""Training-set attack on MNIST (two classes), success measured after retraining.

    python benchmarks/attack/mnist.py --setting top-layer --targets 100
    python benchmarks/attack/mnist.py --setting network --targets 10

Prints, per (k, bound): success rate (prediction flipped after retraining the model on the
perturbed training set), mean steps, mean actual and predicted rise of the target loss, and
the mean retrained accuracy on the rest of the test set. Saves the perturbed images
(safetensors) and a figure (original / perturbed / difference) for a few examples under
benchmarks/attack/results/ (every attack's steps in its summary.json); the run's figures are recorded
in benchmarks/attack/mnist.json (key: setting + tag). Signs: ``influencekit.convention``; a step
along +I_pert,loss raises the target's loss.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from influencekit.errors import ConvergenceWarning
from influencekit.experiments import attack_mnist
from influencekit.experiments.attack import AttackConfig, attack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

HERE = Path(__file__).resolve().parent


def _margin(loss: float) -> float:
    """Signed margin m of a binary logistic loss log(1 + e^-m) (or of the cross-entropy of two
    logits); the prediction flips when m < 0, i.e. loss > log 2."""
    return -math.log(max(math.expm1(loss), 1e-300))  # loss 0.0 (margin > ~745) would be log(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", choices=("top-layer", "network"), default="top-layer")
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--bounds", type=float, nargs="+", default=[8.0], help="L-inf bounds in grey levels (/255)")
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--select", default="up_loss")
    ap.add_argument("--figures", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=32, help="width of the frozen feature layer (top-layer)")
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--tag", default="", help="suffix of the output folder (out/<setting><tag>)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    t0 = time.perf_counter()
    if a.setting == "top-layer":
        s = attack_mnist.top_layer_setting(n_train=a.n_train or 500, seed=a.seed, hidden=a.hidden, l2=a.l2)
    else:
        s = attack_mnist.network_setting(n_train=a.n_train or 200, seed=a.seed)
    v = s.victim
    clean = v.accuracy(v.theta, s.x_test, s.y_test)
    targets = attack_mnist.correct_targets(s, a.targets, a.seed).tolist()
    print(s.notes)
    print(f"setup {time.perf_counter() - t0:.1f} s; clean test accuracy {clean:.4f} on {len(s.x_test)} test images; "
          f"{len(targets)} correctly classified targets (random)")
    out = HERE / "results" / f"{a.setting}{a.tag}"
    summary = {"setting": a.setting, "notes": s.notes, "clean_accuracy": clean, "runs": []}
    for bound in a.bounds:
        for k in a.ks:
            cfg = AttackConfig(k=k, bound=bound / 255, step=1 / 255, max_steps=a.max_steps, select=a.select,
                               solver=s.solver, damping=s.damping)
            t1 = time.perf_counter()
            rows = []
            for count, j in enumerate(targets):
                x, y = s.x_test[j:j + 1], s.y_test[j:j + 1]
                r = attack(v, x, y, cfg)
                # accuracy of the retrained model on every test image but the target
                hits = v.predict(r.theta, s.x_test) == s.y_test.long()
                rows.append({"test_index": j, **r.summary(),
                             "accuracy_rest": (int(hits.sum()) - int(hits[j])) / (len(hits) - 1)})
                if (count + 1) % 10 == 0:
                    print(f"  k={k} bound={bound:g}: {count + 1} targets, {sum(q['flipped'] for q in rows)} flipped, "
                          f"{time.perf_counter() - t1:.0f} s", flush=True)
                if count < a.figures or (r.flipped and sum(q["flipped"] for q in rows) <= a.figures):
                    name = f"k{k}_b{bound:g}_test{j}"
                    attack_mnist.save_figure(r, x, out / f"{name}.png",
                                             f"{a.setting}: test #{j}, k={k}, L-inf <= {bound:g}/255")
                    save_file({"index": r.index, "x_before": r.x_before.float().contiguous(),
                               "x_after": r.x_after.float().contiguous()}, str(out / f"{name}.safetensors"))
            m = len(rows)
            margins = [(_margin(q["loss_before"]), _margin(q["loss_after"])) for q in rows]
            run = {"k": k, "bound_255": bound, "targets": m, "success_rate": sum(q["flipped"] for q in rows) / m,
                   "mean_steps": sum(q["steps"] for q in rows) / m,
                   "mean_actual_rise": sum(q["actual_rise"] for q in rows) / m,
                   "mean_predicted_rise": sum(q["predicted_rise"] for q in rows) / m,
                   "mean_accuracy_rest": sum(q["accuracy_rest"] for q in rows) / m,
                   "median_margin_before": statistics.median(b for b, _ in margins),
                   "median_margin_shift": statistics.median(b - a for b, a in margins),
                   "seconds": time.perf_counter() - t1, "attacks": rows}
            summary["runs"].append(run)
            print(f"k = {k}, L-inf <= {bound:g}/255: success {run['success_rate']:.2f} "
                  f"({sum(q['flipped'] for q in rows)}/{m}), mean steps {run['mean_steps']:.1f}, target loss rise "
                  f"actual {run['mean_actual_rise']:.4f} / predicted {run['mean_predicted_rise']:.4f}, "
                  f"retrained accuracy on the rest {run['mean_accuracy_rest']:.4f} (clean {clean:.4f}), "
                  f"median target margin {run['median_margin_before']:.2f}, "
                  f"median shift {run['median_margin_shift']:.2f}, "
                  f"{run['seconds']:.0f} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    record(__file__, f"{a.setting}{a.tag}", {**{k: v for k, v in summary.items() if k != "runs"},
                                             "runs": [{k: v for k, v in r.items() if k != "attacks"}
                                                      for r in summary["runs"]]})
    print(f"total {time.perf_counter() - t0:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
