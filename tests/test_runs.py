"""runs: a scoring run killed with SIGKILL resumes, computes only what is missing, and ends
with exactly the matrix of an uninterrupted run; a folder from another run is refused."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch

from influencekit import Influence
from influencekit.errors import CacheError
from influencekit.experiments.models import MLP
from influencekit.runs import ScoringRun, load_solver, save_solver
from influencekit.solvers import make_solver

N, CHUNK = 240, 12  # 20 chunk files


def problem(l2: float = 0.1) -> tuple[Influence, tuple[torch.Tensor, torch.Tensor]]:
    """A small float64 MLP (exact solver) and 6 test points, the same in every process."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N + 6, 5, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).long()
    torch.manual_seed(0)
    model = MLP(5, (4,), 2).double().eval()
    with warnings.catch_warnings():  # the untrained model is not stationary; irrelevant here
        warnings.simplefilter("ignore")
        inf = Influence(model, "cross_entropy", (X[:N], y[:N]), l2=l2, solver="exact", damping=1.0)
        inf.fit()
    return inf, (X[N:], y[N:])


def _child(folder: str) -> None:
    """The run that gets killed: slowed down (0.1 s per chunk) so the kill lands mid-run."""
    inf, test = problem()
    ScoringRun(inf, test, folder, chunk_size=CHUNK).run(callback=lambda i, total: time.sleep(0.1))


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in folder.iterdir()}


def test_sigkill_at_random_point_then_resume_equals_uninterrupted_run(tmp_path):
    folder = tmp_path / "killed"
    inf, test = problem()  # also loads torch.func's lazy imports before the fork
    child = multiprocessing.get_context("fork").Process(target=_child, args=(str(folder),))
    child.start()
    target = random.Random().randint(1, 15)  # kill once this many chunks (of 20) are stored
    deadline = time.time() + 120
    try:
        while len(list(folder.glob("chunk_*.json"))) < target:
            assert child.is_alive(), "the child run ended before it could be killed"
            assert time.time() < deadline, "the child run made no progress"
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.1))  # anywhere in the next chunk: computing, writing or renaming
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join()
    assert child.exitcode == -signal.SIGKILL

    run = ScoringRun(inf, test, folder, chunk_size=CHUNK)
    missing = run.missing()
    assert 0 < len(missing) < 20, missing
    before = _files(folder)
    resumed = run.run().assemble()
    assert run.computed == missing  # only the missing chunks were computed ...
    after = _files(folder)
    assert all(after[name] == before[name] for name in before if not name.startswith("."))  # ... nothing rewritten
    assert not any(name.startswith(".") for name in after)  # stray temporaries of the killed write are gone

    reference = ScoringRun(inf, test, tmp_path / "whole", chunk_size=CHUNK).run().assemble()
    assert torch.equal(resumed, reference)
    torch.testing.assert_close(resumed, inf.up_loss(test, method="grad"), rtol=1e-10, atol=1e-12)


def test_complete_run_computes_nothing_and_partial_assemble_is_refused(tmp_path):
    inf, test = problem()
    run = ScoringRun(inf, test, tmp_path, chunk_size=CHUNK)
    with pytest.raises(CacheError, match="missing"):
        run.assemble()
    first = run.run().assemble()
    again = ScoringRun(inf, test, tmp_path, chunk_size=CHUNK).run()
    assert again.computed == [] and torch.equal(again.assemble(), first)


def test_folder_of_another_run_is_refused(tmp_path):
    inf, test = problem()
    ScoringRun(inf, test, tmp_path, chunk_size=CHUNK).run()
    with pytest.raises(CacheError, match="other settings.*chunk_size"):
        ScoringRun(inf, test, tmp_path, chunk_size=CHUNK * 2).run()
    with pytest.raises(CacheError, match="another model"):
        ScoringRun(problem(l2=0.2)[0], test, tmp_path, chunk_size=CHUNK).run()
    X, y = inf.objective.train.x, inf.objective.train.y.clone()
    y[100] = 1 - y[100]  # one flipped training label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = Influence(inf.objective.model, "cross_entropy", (X, y), l2=0.1, solver="exact", damping=1.0)
    with pytest.raises(CacheError, match="other data"):
        ScoringRun(other, test, tmp_path, chunk_size=CHUNK).run()
    with pytest.raises(CacheError, match="other test data"):
        ScoringRun(inf, (test[0][:3], test[1][:3]), tmp_path, chunk_size=CHUNK).run()


def test_tampered_chunk_is_refused_not_silently_used(tmp_path):
    inf, test = problem()
    run = ScoringRun(inf, test, tmp_path, chunk_size=CHUNK).run()
    f = tmp_path / "chunk_00003.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x40
    f.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="chunk_00003.*SHA-256"):
        run.assemble()
    with pytest.raises(CacheError, match="SHA-256"):
        ScoringRun(inf, test, tmp_path, chunk_size=CHUNK).run()


def test_exact_solver_state_round_trips_and_is_refused_for_another_model(tmp_path):
    inf, test = problem()
    save_solver(tmp_path / "solver", inf.solver)
    fresh = make_solver("exact", damping=1.0)
    load_solver(tmp_path / "solver", fresh, inf.objective)
    G = inf.test_gradients(test)
    for k in ("hessian", "eigenvalues", "eigenvectors"):
        assert torch.equal(getattr(fresh, k), getattr(inf.solver, k))
    # same numbers; eigh's eigenvectors come column-major and load row-major, so round-off may differ
    torch.testing.assert_close(fresh.solve(G), inf.solver.solve(G), rtol=1e-12, atol=1e-15)
    with pytest.raises(CacheError, match="another model"):
        load_solver(tmp_path / "solver", make_solver("exact", damping=1.0), problem(l2=0.2)[0].objective)
    with pytest.raises(CacheError, match="other settings"):
        load_solver(tmp_path / "solver", make_solver("exact", damping=2.0), inf.objective)
