"""Influence vs leave-one-out retraining on the validation problems (issue 2's acceptance).

    python benchmarks/validate/run.py                       # all cases below
    python benchmarks/validate/run.py mnist-logreg:exact     # one case
    python benchmarks/validate/run.py mnist-cnn:cg:seed=1    # one case, a problem option changed
    VALIDATE_SAVE=DIR python benchmarks/validate/run.py ...  # also DIR/<case>.json: every predicted/actual pair

Prints one JSON line per case (the CLI's `validate --json` fields plus train seconds) and a
markdown table row, and records each case in benchmarks/validate/run.json (key
``problem:solver[:option=value...]``). Each case is also reproducible with
`influencekit validate --problem P --solver S` (problems: ``influencekit.experiments.problems``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

from influencekit.experiments import validate
from influencekit.experiments.problems import make

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import record  # noqa: E402

CASES = [
    ("digits-logreg", "exact", {}), ("digits-logreg", "cg", {}), ("digits-logreg", "lissa", {}),
    ("mnist-logreg", "exact", {}), ("mnist-logreg", "cg", {}), ("mnist-logreg", "lissa", {}),
    ("digits-svm", "exact", {"t": 1e-3}), ("digits-svm", "exact", {"t": 0.0}),
    ("mnist-svm", "exact", {"t": 1e-3}), ("mnist-svm", "exact", {"t": 0.0}),
    ("mnist-cnn", "cg", {}),
]


def _option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


def main(argv: list[str]) -> None:
    # "problem:solver:key=value,key=value" overrides a case's problem options (values as JSON).
    overrides = {":".join(a.split(":")[:2]): dict(map(_option, a.split(":")[2].split(",")))
                 for a in argv if a.count(":") >= 2}
    wanted = {":".join(a.split(":")[:2]) for a in argv}
    built: dict = {}
    for name, solver, opts in CASES:
        if wanted and f"{name}:{solver}" not in wanted and name not in wanted:
            continue
        opts = {**opts, **overrides.get(f"{name}:{solver}", {})}
        key = (name, tuple(sorted(opts.items())))
        if key not in built:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[key] = (make(name, **opts), time.perf_counter() - t0)
        problem, train_s = built[key]
        r = validate.run(problem, solver, k=50).to_json()
        if os.environ.get("VALIDATE_SAVE"):  # the full result, for looking at the points behind a correlation
            out = Path(os.environ["VALIDATE_SAVE"])
            out.mkdir(parents=True, exist_ok=True)
            tag = "_".join([name, solver] + [f"{k}={v}" for k, v in sorted(opts.items())])
            (out / f"{tag}.json").write_text(json.dumps({**r, "options": opts}, default=str))
        row = {k: r[k] for k in ("problem", "solver", "n", "p", "k", "pearson", "spearman", "seconds",
                                 "retrain_seconds", "pearson_newton", "spearman_newton", "settings") if k in r}
        row.update(train_seconds=train_s, options=opts)
        print(json.dumps(row), flush=True)
        record(__file__, ":".join([name, solver] + [f"{k}={v}" for k, v in sorted(opts.items())]), row)
        newton = f" (Newton-step LOO: {r['pearson_newton']:.3f})" if "pearson_newton" in r else ""
        print(f"| {name} {opts or ''} | {solver} | {r['n']} | {r['p']} | {r['pearson']:.4f}{newton} | "
              f"{r['spearman']:.4f} | {r['seconds']:.2f} | {r['retrain_seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
