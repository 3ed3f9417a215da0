"""SmallCNN on full MNIST (n = 60,000), 100 test points: time and peak memory of each stage.

    python benchmarks/scoring/cnn_mnist.py                 # everything below, one subprocess per stage
    python benchmarks/scoring/cnn_mnist.py --memory-only   # only the peak-RSS-vs-n figure

Stages (each in its own subprocess, so ``ru_maxrss`` is that stage's peak):
  epoch    one plain training epoch: forward + backward (no optimiser step) over the 60k points
           with the scoring batch size; the yardstick for scoring (target: scoring <= 3x epoch)
  s_test   curvature + s_test = (H + dI)^-1 grad L(z_test) for 100 test points with the fastest
           registered solver (ekfac if present, else lissa; printed)
  score:M  the full [100 x 60000] I_up,loss = -s_test^T grad L(z_i) matrix by scoring method M
           (layers: per-layer factorised, grad: vmap per-example gradients, jvp: forward mode;
           jvp is timed on the first --jvp-n points and extrapolated linearly, as it is ~k x slower)
  memory   peak RSS of layer scoring for n = 10k, 30k, 60k (a subprocess per n): baseline after
           loading, peak, and the [100 x n] float32 output matrix; the rest must stay flat in n.

Signs: ``influencekit.convention``. The trained model, test gradients and s_test go to --work
(safetensors), never pickled. Every stage process records its figures in
benchmarks/scoring/cnn_mnist.json (key: the stage, ``score:METHOD:n=N``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from influencekit import SOLVERS, Objective, make_solver
from influencekit.experiments.datasets import _file
from influencekit.experiments.models import SmallCNN, train
from influencekit.influence import scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

BATCH = 512
M_TEST = 100
L2 = 1e-4
DAMPING = 0.01


class MnistU8(Dataset):
    """MNIST from the shared ``mnist.npz`` (first n points), pixels scaled to [0, 1]."""

    def __init__(self, n: int | None = None, split: str = "train"):
        with np.load(_file("mnist.npz", None), allow_pickle=False) as f:
            self.x = torch.from_numpy(f[f"x_{split}"][:n].copy())
            self.y = torch.from_numpy(f[f"y_{split}"][:n].astype(np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i][None].float() / 255.0, self.y[i]

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[:n, None].float() / 255.0, self.y[:n]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def model_from(work: Path) -> SmallCNN:
    m = SmallCNN()
    m.load_state_dict(load_file(work / "model.safetensors"))
    return m.eval()


def stage_prepare(work: Path, epochs: int) -> dict:
    torch.manual_seed(0)
    X, Y = MnistU8().tensors()
    t = time.perf_counter()
    model = train(SmallCNN(), "cross_entropy", X, Y, l2=L2, epochs=epochs, batch_size=128, lr=3e-3, seed=0)
    secs = time.perf_counter() - t
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, work / "model.safetensors")
    Xt, Yt = MnistU8(M_TEST, "test").tensors()
    acc = (model(MnistU8(10000, "test").tensors()[0]).argmax(1) == MnistU8(10000, "test").y).float().mean().item()
    obj = Objective(model, "cross_entropy", (Xt, Yt), l2=L2)
    save_file({"G": obj.grads(Xt, Yt)}, work / "test_grads.safetensors")
    return {"train_seconds": secs, "epochs": epochs, "test_accuracy": acc}


def stage_epoch(work: Path) -> dict:
    data = MnistU8()
    X, Y = data.tensors()
    model = model_from(work).train()
    base = rss_mb()
    t = time.perf_counter()
    for i in range(0, len(Y), BATCH):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(X[i:i + BATCH]), Y[i:i + BATCH]).backward()
    return {"seconds": time.perf_counter() - t, "rss_base_mb": base, "rss_peak_mb": rss_mb()}


def top_eigenvalue(obj: Objective, batch: int = 1024, steps: int = 20) -> float:
    """Largest Hessian eigenvalue of the mean loss on one mini-batch, by power iteration; sets
    LiSSA's scale without the solver's full-data Lanczos estimate (20 passes over 60k points)."""
    x, y = obj.sample_batch(batch, torch.Generator().manual_seed(0))
    v = torch.randn(1, obj.p, generator=torch.Generator().manual_seed(1))
    lam = 0.0
    for _ in range(steps):
        v = obj.hvp_batch(v, x, y, 1.0 / x.shape[0])
        lam = v.norm().item()
        v = v / lam
    return lam


def stage_s_test(work: Path) -> dict:
    obj = Objective(model_from(work), "cross_entropy", MnistU8().tensors(), l2=L2, batch_size=BATCH)
    G = load_file(work / "test_grads.safetensors")["G"]
    base = rss_mb()
    if "ekfac" in SOLVERS:
        name, opts = "ekfac", {"damping": DAMPING}
    else:  # no K-FAC family yet: a short mini-batch LiSSA (CG would cost 100 x 60k HVPs per iteration)
        name, opts = "lissa", {"damping": DAMPING, "depth": 10, "batch_size": 64}
    t = time.perf_counter()
    if name != "ekfac":
        opts["scale"] = 2.0 * (top_eigenvalue(obj) + L2 + DAMPING)
    solver = make_solver(name, **opts).fit(obj)
    t_fit = time.perf_counter() - t
    s = solver.solve(G)
    secs = time.perf_counter() - t
    save_file({"S": s.contiguous()}, work / "s_test.safetensors")
    return {"solver": solver.settings(), "seconds": secs, "fit_seconds": t_fit,
            "s_test_norm": s.norm(dim=1).mean().item(), "rss_base_mb": base, "rss_peak_mb": rss_mb()}


def stage_score(work: Path, method: str, n: int | None) -> dict:
    data = MnistU8(n).tensors()  # float32 in memory: 3 KB per example, counted in the baseline
    obj = Objective(model_from(work), "cross_entropy", data, l2=L2, batch_size=BATCH)
    S = load_file(work / "s_test.safetensors")["S"]
    base = rss_mb()
    t = time.perf_counter()
    up_loss = -scores(obj, S, method=method)  # I_up,loss [100, n]: > 0 harmful
    secs = time.perf_counter() - t
    out = {"method": method, "n": obj.n, "seconds": secs, "rss_base_mb": base, "rss_peak_mb": rss_mb(),
           "output_mb": up_loss.numel() * up_loss.element_size() / 2**20}
    save_file({"up_loss": up_loss[:, :2000].contiguous()}, work / f"up_loss_{method}_{obj.n}.safetensors")
    return out


def child(args: list[str], env_threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads)}
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"stage {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage")
    ap.add_argument("--method", default="layers")
    ap.add_argument("--n", type=int)
    ap.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/ik_cnn_mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--jvp-n", type=int, default=6000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated stages to skip (e.g. jvp)")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    if a.stage:
        fn = {"prepare": lambda: stage_prepare(work, a.epochs), "epoch": lambda: stage_epoch(work),
              "s_test": lambda: stage_s_test(work), "score": lambda: stage_score(work, a.method, a.n)}[a.stage]
        r = fn()
        print(json.dumps(r))
        record(__file__, a.stage + (f":{a.method}:n={a.n or 60000}" if a.stage == "score" else ""), r)
        return
    skip = set(a.skip.split(","))
    common = ["--work", str(work), "--threads", str(a.threads)]
    print("# SmallCNN / MNIST n=60000, 100 test points; sign: I_up,loss > 0 harmful, loo = -(1/n) I_up,loss")
    if not (work / "test_grads.safetensors").exists():  # training takes minutes: reuse a finished one
        print("prepare", json.dumps(child(["--stage", "prepare", "--epochs", str(a.epochs), *common], a.threads)))
    if not (work / "s_test.safetensors").exists():
        print("s_test", json.dumps(child(["--stage", "s_test", *common], a.threads)))
    if not a.memory_only:
        ep = child(["--stage", "epoch", *common], a.threads)
        print("epoch", json.dumps(ep))
        for method in ("layers", "grad", "jvp"):
            if method in skip:
                continue
            n = a.jvp_n if method == "jvp" else None
            r = child(["--stage", "score", "--method", method, *(["--n", str(n)] if n else []), *common], a.threads)
            r["seconds_60k"] = r["seconds"] * 60000 / r["n"]
            r["ratio_to_epoch"] = r["seconds_60k"] / ep["seconds"]
            print("score", json.dumps(r))
        ref = load_file(work / "up_loss_grad_60000.safetensors")["up_loss"] if "grad" not in skip else None
        if ref is not None:
            for method in ("layers", "jvp"):
                f = work / f"up_loss_{method}_{60000 if method == 'layers' else a.jvp_n}.safetensors"
                if f.exists():
                    d = (load_file(f)["up_loss"] - ref).abs().max().item()
                    print(f"max |{method} - grad| on first 2000 columns: {d:.2e} (max |I| {ref.abs().max():.2e})")
    for n in (10000, 30000, 60000):
        r = child(["--stage", "score", "--method", "layers", "--n", str(n), *common], a.threads)
        r["peak_minus_base_minus_output_mb"] = r["rss_peak_mb"] - r["rss_base_mb"] - r["output_mb"]
        print("memory", json.dumps(r))


if __name__ == "__main__":
    main()
