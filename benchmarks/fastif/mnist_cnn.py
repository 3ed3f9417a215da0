"""FastIF on MNIST (n = 60,000) with models.SmallCNN: speed-up of prefiltered influence over full
influence, recall of the full method's top-10 harmful/helpful, and ``tune`` against the LiSSA
defaults. Two prefilters: ``knn`` (FastIF: nearest neighbours in the penultimate feature space) and
``grad`` (the largest last-layer terms of I_up,loss of each sign, ``influencekit.fastif.gradients``).

    python benchmarks/fastif/mnist_cnn.py --stage train            # trains once, saves the weights
    python benchmarks/fastif/mnist_cnn.py --stage tune  --threads 1  # these two can run side by side
    python benchmarks/fastif/mnist_cnn.py --stage speed --threads 1
    python benchmarks/fastif/mnist_cnn.py --stage recall --threads 1  # recall at more k only

Prints every figure and records them in benchmarks/fastif/mnist_cnn.json under the stage's name
after each step (the other stages' entries are kept). The trained weights are cached as safetensors
(--model-cache).
Signs: ``influencekit.convention``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from influencekit.convention import SIGN_CONVENTION
from influencekit.curvature import spectrum
from influencekit.experiments.models import SmallCNN
from influencekit.experiments.problems import make
from influencekit.fastif import (
    KNNIndex,
    candidate_scores,
    embed,
    gradient_candidates,
    gradient_embedding,
    gradient_index,
    head_block,
    recall_at_k,
    tune,
)
from influencekit.fastif.tune import DEFAULT_LISSA
from influencekit.influence import scores
from influencekit.objective import Objective
from influencekit.solvers import make_solver

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402


def damping_and_scale(s, obj, R, factor: float) -> tuple[float, float]:
    """A 1-epoch CNN has negative curvature (LiSSA at the set-up's damping diverges): damp by twice the
    Lanczos suggestion on a 5,000-point sample; LiSSA's scale 1.5 (lambda_max + factor x damping)."""
    t = time.perf_counter()
    sample = torch.randperm(obj.n, generator=torch.Generator().manual_seed(0))[:5000].sort().values
    sp = spectrum(Objective(s.model, s.loss, obj.train.take(sample), l2=s.l2, batch_size=1000), steps=20)
    d = max(s.damping, 2 * sp.suggested_damping)
    scale = 1.5 * (sp.max_eigenvalue + factor * d)
    R["scale"] = {"value": scale, "damping": d, "lambda_min_sample": sp.min_eigenvalue,
                  "lambda_max_sample": sp.max_eigenvalue, "seconds": time.perf_counter() - t}
    print(R["scale"], flush=True)
    return d, scale


class Clock:
    """Wall-clock and this process's CPU seconds of a block. The machine is shared, so CPU seconds of a
    1-thread process are the comparable measure of work."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tune-tests", type=int, default=2)
    ap.add_argument("--ref-depth", type=int, default=2000)
    ap.add_argument("--stage", choices=("train", "tune", "speed", "recall", "queries"), required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model-cache", default="/tmp/fastif_mnist_cnn.safetensors")
    ap.add_argument("--stest", default="100,16", help="LiSSA depth,batch for the speed/recall s_test")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    R: dict = {"convention": SIGN_CONVENTION, "threads": torch.get_num_threads(), "stage": a.stage}

    def save(stage: str) -> None:
        record(__file__, a.stage, R)
        print(f"[{time.strftime('%H:%M:%S')}] {stage} done", flush=True)

    from safetensors.torch import load_file, save_file

    t = time.perf_counter()
    if a.stage == "train" or not Path(a.model_cache).exists():
        s = make("mnist-cnn-full", data_dir=a.data_dir, epochs=a.epochs)
        save_file(s.model.state_dict(), a.model_cache)
    else:  # the same setup, weights from the cache
        s = make("mnist-cnn-full", data_dir=a.data_dir, epochs=0)
        model = SmallCNN()
        model.load_state_dict(load_file(a.model_cache))
        s.model = model.eval()
        s.notes = s.notes.replace("Adam 0 epochs", f"Adam {a.epochs} epochs")
    with torch.no_grad():
        acc = (s.model(s.test[0]).argmax(1) == s.test[1]).double().mean().item()
    R["setup"] = {"notes": s.notes, "train_seconds": time.perf_counter() - t, "test_accuracy": acc}
    obj = Objective(s.model, s.loss, s.train, l2=s.l2, batch_size=1000)
    n, d = obj.n, s.damping
    R["setup"].update(n=n, p=obj.p)
    print(R["setup"], flush=True)
    save("train")
    if a.stage == "train":
        return
    if a.stage in ("speed", "recall", "queries"):
        return speed(a, s, obj, R, save, curve=a.stage == "recall", every_query=a.stage == "queries")
    # ---- tune: cheapest LiSSA setting with Pearson >= 0.95 against a deep LiSSA reference ------
    tt = (s.test[0][: a.tune_tests], s.test[1][: a.tune_tests])
    G3 = obj.grads(*tt)
    d, scale = damping_and_scale(s, obj, R, 10)
    ref = make_solver("lissa", damping=d, depth=a.ref_depth, batch_size=128, repeats=1, scale=scale, seed=1).fit(obj)
    t = time.perf_counter()
    S_ref = ref.solve(G3)
    R["tune_reference"] = {**ref.settings(), "seconds": time.perf_counter() - t,
                           "hvps_per_test": a.ref_depth * 128}
    print(R["tune_reference"], flush=True)
    grid = [("lissa", {"damping": dd, "depth": dp, "batch_size": b, "repeats": 1, "scale": scale})
            for dd in (d, 10 * d) for dp, b in ((100, 16), (200, 16), (100, 64), (500, 16), (200, 64),
                                                (1000, 16), (500, 64), (1000, 64))]
    best, trials = tune(obj, G3, S_ref, grid=grid, target=0.95, sample=2000)
    _, base = tune(obj, G3, S_ref, grid=[("lissa", {"damping": d, **DEFAULT_LISSA, "scale": scale})],
                   target=0.95, sample=2000)
    R["tune"] = {"trials": [t.row() for t in trials], "best": best.row() if best else None,
                 "default": base[0].row(), "cost_unit": "example-HVPs per test point",
                 "cheaper_than_default": (base[0].hvps / best.hvps) if best else None}
    for tr in [*trials, base[0]]:
        print(f"  tune {tr.options} hvps {tr.hvps:.0f} s {tr.seconds:.1f} pearson {tr.pearson:.4f} "
              f"{'PASS' if tr.passed else tr.error[:50]}", flush=True)
    save("tune")


def speed(a, s, obj, R, save, curve: bool = False, every_query: bool = False) -> None:
    """Recall and speed-ups of both prefilters; with ``curve`` only the recall, at more k; with
    ``every_query`` the one-query scoring speed-up at k = 1,000 for every one of the m test points.

    knn:  FastIF, the k nearest training points in the penultimate feature space (L2);
    grad: the k/2 + k/2 training points with the largest harmful / helpful last-layer term of
          I_up,loss (inner-product search over last-layer gradients, ``fastif.gradients``).
    """
    d, scale = damping_and_scale(s, obj, R, 1)
    depth, batch = (int(v) for v in a.stest.split(","))
    opts = {"damping": d, "depth": depth, "batch_size": batch, "repeats": 1, "scale": scale}
    m = a.tests
    test = (s.test[0][:m], s.test[1][:m])
    solver = make_solver("lissa", **opts).fit(obj)
    with Clock() as st:
        S = solver.solve(obj.grads(*test))
    R["s_test"] = {"settings": solver.settings(), "wall": st.wall, "cpu": st.cpu, "tests": m}
    save("s_test")

    # full scoring: all n training points for all m test points at once (gradients shared),
    # by the default method (per-layer factorised contractions)
    with Clock() as full:
        up_full = -scores(obj, S)
    R["full"] = {"batched": {"wall": full.wall, "cpu": full.cpu, "method": "layers"}}
    save("full scoring")

    # each prefilter: its index over all n (built once per model and data), then the search
    kmax = 30000 if curve else 10000
    R["index"], nbrs = {}, {}
    with Clock() as emb:
        F = embed(s.model, s.train)
    with Clock() as build:
        index = KNNIndex(F, kind="flat")
    with Clock() as search:
        _, nbrs["knn"] = index.search(embed(s.model, test), kmax)
    R["index"]["knn"] = {"d": F.shape[1], **{k: {"wall": c.wall, "cpu": c.cpu} for k, c in
                                              (("embed_n", emb), ("build", build), ("search", search))}}
    with Clock() as emb:
        E = gradient_embedding(obj)
    with Clock() as build:
        gindex = gradient_index(E)
    with Clock() as search:
        nbrs["grad"] = gradient_candidates(gindex, head_block(obj, S), kmax)
    R["index"]["grad"] = {"d": E.shape[1], **{k: {"wall": c.wall, "cpu": c.cpu} for k, c in
                                               (("embed_n", emb), ("build", build), ("search", search))}}
    print("index", R["index"], flush=True)
    ks = (100, 300, 1000, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000) if curve else (100, 1000, 10000)
    R["recall"] = {name: {str(k): {kk: v for kk, v in r.items() if not kk.startswith("per_test")}
                          for k, r in recall_at_k(up_full, nbr, ks, top=10).items()} for name, nbr in nbrs.items()}
    print("recall", json.dumps(R["recall"]), flush=True)
    save("recall")
    if curve:
        return
    if every_query:  # each test point explained on its own: full vs each prefilter, k = 1,000
        k, rows = 1000, []
        for j in range(m):
            with Clock() as c1:
                scores(obj, S[j:j + 1])
            row = {"test": j, "full_cpu": c1.cpu, "full_wall": c1.wall}
            for name, nbr in nbrs.items():
                with Clock() as c2:
                    candidate_scores(obj, S[j:j + 1], nbr[j:j + 1, :k])
                row.update({f"{name}_cpu": c2.cpu, f"{name}_wall": c2.wall})
            rows.append(row)
        summary = {}
        for name in nbrs:
            for unit in ("cpu", "wall"):
                per = torch.tensor([r[f"full_{unit}"] / r[f"{name}_{unit}"] for r in rows])
                total = sum(r[f"full_{unit}"] for r in rows) / sum(r[f"{name}_{unit}"] for r in rows)
                summary[f"{name}_{unit}"] = {"total_full_over_total_prefilter": total, "median": per.median().item(),
                                             "min": per.min().item(), "max": per.max().item()}
        R["every_query_k1000"] = {"queries": m, "summary": summary, "rows": rows}
        print(json.dumps(summary), flush=True)
        save("every query")
        return

    R["prefilter"] = {}
    q = 5  # per-query regime (one test point explained on its own, as in FastIF): q queries, interleaved
    for name, nbr in nbrs.items():
        for k in (100, 1000, 10000):
            cand = nbr[:, :k]
            with Clock() as pre:
                up_c = -candidate_scores(obj, S, cand)
            err = (up_c - up_full.gather(1, cand)).abs().max().item()
            one_full, one_pre = [], []
            for j in range(q if k <= 1000 else 2):
                with Clock() as c1:
                    scores(obj, S[j:j + 1])  # one vector: forward-mode (jvp) over all n
                with Clock() as c2:
                    candidate_scores(obj, S[j:j + 1], cand[j:j + 1])  # the same method over its k candidates
                one_full.append((c1.wall, c1.cpu))
                one_pre.append((c2.wall, c2.cpu))
            mean = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
            r = {"union": int(torch.unique(cand).numel()), "max_abs_diff_vs_full": err,
                 "max_abs_up_loss": up_full.abs().max().item()}
            ix = R["index"][name]
            for unit, i, a_, b_ in (("wall", 0, full.wall, pre.wall), ("cpu", 1, full.cpu, pre.cpu)):
                f1, p1 = mean(one_full, i), mean(one_pre, i)
                stq, srch = getattr(st, unit) / m, ix["search"][unit] / m
                built = ix["embed_n"][unit] + ix["build"][unit]
                r[unit] = {
                    "scoring_batched_full": a_, "scoring_batched_prefilter": b_, "speedup_scoring_batched": a_ / b_,
                    "scoring_one_query_full": f1, "scoring_one_query_prefilter": p1,
                    "speedup_scoring_one_query": f1 / p1,
                    # batched end to end: s_test + scoring, and for the prefilter also embedding n, index build, search
                    "speedup_end_to_end_batched": (m * stq + a_) / (m * stq + built + m * srch + b_),
                    # one query with the index already built (it is built once per model and data, then reused)
                    "speedup_end_to_end_one_query": (stq + f1) / (stq + srch + p1),
                }
            R["prefilter"][f"{name}:{k}"] = r
            print(name, k, r, flush=True)
            save(f"prefilter {name} k={k}")


if __name__ == "__main__":
    main()
