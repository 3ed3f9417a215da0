"""Kill -9 a disk-backed scoring run half-way, resume it, compare with an uninterrupted run.

Problem: MLP 64-16-10 (1,210 parameters, float64) trained on scikit-learn digits (n = 1,257),
exact solver, 20 test points, chunks of 64 training points (20 chunk files).
Prints: uninterrupted time, time to the kill, resume time and chunks recomputed, max |resumed -
uninterrupted|, and the in-memory Influence.up_loss time (the cost of writing to disk); records them
in benchmarks/scaleout/resume.json (key ``mlp-digits``).
The matrix is I_up,loss (signs: ``influencekit.convention``).

    python benchmarks/scaleout/resume.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from influencekit import Influence
from influencekit.experiments.datasets import digits
from influencekit.experiments.models import MLP, train
from influencekit.runs import ScoringRun

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

CHUNK, TESTS = 64, 20


def problem() -> tuple[Influence, tuple[torch.Tensor, torch.Tensor]]:
    Xtr, ytr, Xte, yte = digits(classes=None, seed=0)
    torch.manual_seed(0)
    model = train(MLP(64, (16,), 10), "cross_entropy", Xtr.float(), ytr, l2=1e-2, epochs=20, lr=1e-2).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Adam does not reach a stationary point; irrelevant to resuming
        inf = Influence(model.eval(), "cross_entropy", (Xtr, ytr), l2=1e-2, solver="exact", damping=1e-2)
        inf.fit()
    return inf, (Xte[:TESTS], yte[:TESTS])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", help="(internal) run into this folder")
    args = p.parse_args()
    if args.worker:
        inf, test = problem()
        ScoringRun(inf, test, args.worker, chunk_size=CHUNK).run()
        return
    root = Path(tempfile.mkdtemp(prefix="ik-resume-"))
    try:
        inf, test = problem()
        t = time.perf_counter()
        whole = ScoringRun(inf, test, root / "whole", chunk_size=CHUNK).run().assemble()
        t_whole = time.perf_counter() - t
        t = time.perf_counter()
        mem = inf.up_loss(test, method="grad")
        t_mem = time.perf_counter() - t

        folder = root / "killed"
        child = subprocess.Popen([sys.executable, __file__, "--worker", str(folder)])
        t = time.perf_counter()
        while len(list(folder.glob("chunk_*.json"))) < 10:
            if child.poll() is not None:
                raise SystemExit("worker finished before it was killed")
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        t_kill = time.perf_counter() - t
        run = ScoringRun(inf, test, folder, chunk_size=CHUNK)
        done_before = 20 - len(run.missing())
        t = time.perf_counter()
        resumed = run.run().assemble()
        t_resume = time.perf_counter() - t
        print(f"n={inf.n} p={inf.p} m={TESTS} chunks={len(run.bounds)} of {CHUNK}")
        print(f"uninterrupted run (s_test + 20 chunks, fsync'd): {t_whole:.2f} s; in memory (up_loss): {t_mem:.2f} s")
        print(f"killed (SIGKILL) after {done_before} chunks stored, {t_kill:.2f} s after start (incl. start-up)")
        print(f"resume: computed {len(run.computed)} chunks (ids {run.computed[0]}..{run.computed[-1]}) "
              f"in {t_resume:.2f} s")
        print(f"max |resumed - uninterrupted| = {(resumed - whole).abs().max().item():.1e} "
              f"(identical: {torch.equal(resumed, whole)})")
        print(f"max |run - in-memory up_loss| / max|up_loss| = "
              f"{((resumed - mem).abs().max() / mem.abs().max()).item():.1e}")
        record(__file__, "mlp-digits", {
            "n": inf.n, "p": inf.p, "m": TESTS, "chunks": len(run.bounds), "chunk_size": CHUNK,
            "chunks_stored_when_killed": done_before, "chunks_computed_on_resume": len(run.computed),
            "max_abs_resumed_minus_uninterrupted": (resumed - whole).abs().max().item(),
            "identical": torch.equal(resumed, whole),
            "rel_diff_vs_in_memory": ((resumed - mem).abs().max() / mem.abs().max()).item(),
            "seconds_uninterrupted": t_whole, "seconds_in_memory": t_mem, "seconds_resume": t_resume})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
