"""A resumable scoring run: the [m, n] matrix I_up,loss written to disk chunk by chunk.

Folder layout (every record written atomically by ``storage``; see there):

* ``run.json``: settings and fingerprints of model, training data and test data.
* ``s_test.safetensors`` + ``.json``: s_test = (H + dI)^-1 grad L(z_test) [m, p], computed once.
* ``chunk_00000.safetensors`` + ``.json``, ...: ``up_loss`` [m, c] for training rows
  [i c, min((i + 1) c, n)).

Signs: ``influencekit.convention`` (its one-line ``SIGN_CONVENTION`` is stored in ``run.json``).
The face's ``Influence.run`` is this run in one call.

Killed at any point (even SIGKILL), ``run()`` again finds the chunks whose JSON exists,
verifies them and computes only the missing ones. Every chunk is computed by the same
operations on the same rows whether or not the run was interrupted, so the assembled matrix
equals that of an uninterrupted run exactly. A folder made with another model, other data or
other settings is refused (``CacheError``).

``save_solver`` / ``load_solver`` store a fitted solver's state where that is cheap (the exact
solver's eigendecomposition), so a later run on the same model and data skips the fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import fingerprint, storage
from .convention import SIGN_CONVENTION
from .data import DataLike, Examples
from .errors import CacheError, InputError
from .influence import Influence
from .objective import Objective
from .solvers import Solver


class ScoringRun:
    """Score every training point of ``influence`` against ``test``, one chunk file at a time.

    Args:
        influence: the ``Influence`` (model, loss, training data, solver, damping).
        test: test data (m points).
        folder: output folder; created if missing, resumed if it holds a run of the same
            model, data and settings.
        chunk_size: training points per chunk file (memory: m x chunk_size scores plus one
            batch of gradients).
        method: scoring method of ``Influence.scores`` (``grad``, ``jvp``, ``layers``); fixed
            (not ``auto``) so a resumed run uses the same arithmetic.
        data_sample: rows hashed for a Dataset's fingerprint (``fingerprint.fingerprint_data``).

    After ``run()``, ``computed`` lists the chunk indices this call computed.
    """

    def __init__(self, influence: Influence, test: DataLike, folder: str | Path, *, chunk_size: int = 1024,
                 method: str = "grad", data_sample: int | None = 256):
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}.")
        if method not in ("grad", "jvp", "layers"):
            raise InputError(f"method must be 'grad', 'jvp' or 'layers' (fixed, so a resumed run computes the "
                             f"same way), got {method!r}.")
        self.influence = influence
        self.objective = influence.objective
        self.test = Examples(test, name="test data")
        self.folder = Path(folder)
        self.chunk_size = int(chunk_size)
        self.method = method
        n = self.objective.n
        self.bounds = [(lo, min(lo + self.chunk_size, n)) for lo in range(0, n, self.chunk_size)]
        self.computed: list[int] = []
        obj = self.objective
        self.identity = {
            "model": fingerprint.fingerprint_objective(obj),
            "data": fingerprint.fingerprint_data(obj.train, data_sample),
            "test": fingerprint.fingerprint_data(self.test, data_sample),
        }
        # the face's settings: solver (name, damping, options), n, p, l2, dtype, scope, test loss
        self.settings = {**influence.settings(), "m": len(self.test), "chunk_size": self.chunk_size,
                         "method": method, "batch_size": obj.batch_size}

    @property
    def expected(self) -> dict[str, Any]:
        return {**self.identity, **self.settings}  # identity first: the clearer message

    def _chunk_path(self, i: int) -> Path:
        return self.folder / f"chunk_{i:05d}"

    def _open(self) -> None:
        """Create the folder and ``run.json``, or check an existing one matches this run."""
        self.folder.mkdir(parents=True, exist_ok=True)
        storage.remove_stale_temporaries(self.folder)
        manifest = self.folder / "run.json"
        if manifest.exists():
            try:
                found = json.loads(manifest.read_text())
            except ValueError as e:
                raise CacheError(f"{manifest} is not valid JSON ({e}); delete the folder to start again.") from None
            storage.check_meta(found, self.expected, str(self.folder))
        else:
            record = {**fingerprint.jsonable(self.expected), "sign_convention": SIGN_CONVENTION,
                      "chunks": len(self.bounds)}
            storage.atomic_write(manifest, json.dumps(record, indent=1, sort_keys=True).encode())

    def missing(self) -> list[int]:
        """Indices of chunks without a complete record (their JSON is written last)."""
        return [i for i in range(len(self.bounds)) if not storage.exists(self._chunk_path(i))]

    def s_test(self) -> Tensor:
        """s_test [m, p]: loaded (verified) if stored, else computed and stored."""
        path = self.folder / "s_test"
        if storage.exists(path):
            return storage.load(path, self.expected, self.objective.device)[0]["s_test"]
        S = self.influence.s_test(self.test)
        storage.save(path, {"s_test": S}, self.expected)
        return S

    def run(self, callback: Callable[[int, int], None] | None = None) -> ScoringRun:
        """Compute and store every missing chunk. ``callback(i, total)`` is called after chunk i
        is stored. Existing chunks are verified first, so a damaged one fails before any work."""
        self._open()
        self.computed = []
        todo = self.missing()
        for i in set(range(len(self.bounds))) - set(todo):
            storage.load(self._chunk_path(i), {**self.expected, "chunk": i})
        if not todo:
            return self
        S = self.s_test()
        for i in todo:
            lo, hi = self.bounds[i]
            block = -self.influence.scores(S, index=range(lo, hi), method=self.method)
            storage.save(self._chunk_path(i), {"up_loss": block}, {**self.expected, "chunk": i, "rows": [lo, hi]})
            self.computed.append(i)
            if callback is not None:
                callback(i, len(self.bounds))
        return self

    def assemble(self) -> Tensor:
        """The full matrix up_loss = I_up,loss [m, n] from the verified chunk files. Raises
        ``CacheError`` if a chunk is missing, damaged or from another run."""
        missing = self.missing()
        if missing:
            raise CacheError(f"{len(missing)} of {len(self.bounds)} chunks are missing in {self.folder} "
                             f"(first: {missing[:5]}); call run() to compute them.")
        out = torch.empty(len(self.test), self.objective.n, dtype=self.objective.dtype)
        for i, (lo, hi) in enumerate(self.bounds):
            out[:, lo:hi] = storage.load(self._chunk_path(i), {**self.expected, "chunk": i})[0]["up_loss"]
        return out


#: fitted state worth storing, per solver name: attributes that ``fit`` sets and ``solve`` reads
SOLVER_STATE: dict[str, tuple[str, ...]] = {"exact": ("hessian", "eigenvalues", "eigenvectors")}


def _solver_meta(solver: Solver, objective: Objective, data_sample: int | None) -> dict[str, Any]:
    return {"model": fingerprint.fingerprint_objective(objective),
            "data": fingerprint.fingerprint_data(objective.train, data_sample), "solver": solver.settings()}


def save_solver(path: str | Path, solver: Solver, *, data_sample: int | None = 256) -> None:
    """Store a fitted solver's state (``SOLVER_STATE``; the exact solver's float64 Hessian and its
    eigendecomposition) with the fingerprints of its objective's model and data."""
    if solver.name not in SOLVER_STATE:
        raise InputError(f"storing a fitted {solver.name!r} solver is not supported (only {sorted(SOLVER_STATE)}); "
                         "refit it instead.")
    if solver.objective is None:
        raise InputError("the solver is not fitted; call fit(objective) before saving it.")
    state = {k: getattr(solver, k) for k in SOLVER_STATE[solver.name]}
    storage.save(path, state, _solver_meta(solver, solver.objective, data_sample))


def load_solver(path: str | Path, solver: Solver, objective: Objective, *, data_sample: int | None = 256) -> Solver:
    """Restore into ``solver`` the state ``save_solver`` stored, after checking that it was fitted
    on this objective's model and data with these settings (``CacheError`` otherwise)."""
    if solver.name not in SOLVER_STATE:
        raise InputError(f"loading a fitted {solver.name!r} solver is not supported (only {sorted(SOLVER_STATE)}).")
    state, _ = storage.load(path, _solver_meta(solver, objective, data_sample), objective.device)
    for k, v in state.items():
        setattr(solver, k, v)
    solver.objective = objective
    return solver
