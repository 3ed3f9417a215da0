"""The ``influencekit`` command line: one subcommand per experiment, listed in ``COMMANDS``.

A command module (``influencekit.cli.<name>``) defines ``help`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; it only parses, calls its experiment and
prints. Building the parser must stay cheap (``influencekit --help`` answers at once): a command
module imports only argparse and this package at its top, and imports torch and its experiment
inside ``run``. Choices that name solvers or problems are therefore literal lists here, kept equal
to ``solvers.SOLVERS`` and ``experiments.problems.PROBLEMS`` by a test.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..convention import SIGN_CONVENTION

#: subcommand -> the module that defines it (a missing module is an error, never skipped)
COMMANDS = {
    "validate": "influencekit.cli.validate",
    "explain": "influencekit.cli.explain",
    "mislabel": "influencekit.cli.mislabel",
    "mismatch": "influencekit.cli.mismatch",
    "attack": "influencekit.cli.attack",
    "topk": "influencekit.cli.topk",
    "tune": "influencekit.cli.tune",
    "report": "influencekit.cli.report",
}

#: the names of ``influencekit.solvers.SOLVERS``
SOLVERS = ["arnoldi", "cg", "datainf", "ekfac", "exact", "kfac", "lissa", "pcg"]
#: the names of ``influencekit.experiments.problems.PROBLEMS``
PROBLEMS = ["digits-logreg", "mnist-logreg", "mnist-cnn", "digits-cnn", "digits-svm", "mnist-svm", "digits-mlp",
            "mnist-cnn-full"]
#: the model ``topk`` and ``tune`` train for each ``--dataset``
DATASET_PROBLEMS = {"digits": "digits-mlp", "mnist": "mnist-cnn-full"}


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def correlation_count(text: str) -> int:
    """An argparse ``type`` for the points a correlation is taken over: an integer >= 2."""
    value = _int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a correlation needs two points), got {value}")
    return value


def index(text: str) -> int:
    """An argparse ``type`` for row indices: an integer >= 0 (never a Python slice from the end)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an index >= 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def add_problem_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose and train the model of ``topk`` and ``tune``."""
    p.add_argument("--dataset", default="auto", choices=("auto", *DATASET_PROBLEMS),
                   help="digits: an MLP on bundled digits (default); mnist: a CNN on MNIST (needs mnist.npz; the "
                        "default when --data-dir is given)")
    p.add_argument("--problem", default=None, choices=PROBLEMS, help="any named problem instead of --dataset's")
    p.add_argument("--n-train", type=positive_int, default=None, help="use the first N training points (default: all)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: digits 10, mnist 3)")
    p.add_argument("--test-index", type=index, nargs="+", default=[0, 1, 2], help="test points to explain")


def problem_from_args(args: argparse.Namespace):
    """Build (and train) the problem that ``add_problem_arguments``' flags name."""
    from ..experiments import problems

    dataset = args.dataset if args.dataset != "auto" else ("mnist" if args.data_dir else "digits")
    name = args.problem or DATASET_PROBLEMS[dataset]
    return problems.make(name, data_dir=args.data_dir, n_train=args.n_train, epochs=args.epochs, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="influencekit", description=(
        "Which training points are responsible for a prediction, and by how much (influence functions). "
        f"Convention: {SIGN_CONVENTION}"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=mod.help, description=mod.help)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
        p.add_argument("--out", default=None, help="folder for figures, report and saved results")
        p.add_argument("--data-dir", default=None, help="folder with the shared data files (mnist.npz, ...)")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


#: modules of the optional extras, and the extra that installs each
EXTRAS = {"matplotlib": "experiments", "pandas": "experiments", "sklearn": "experiments", "scipy": "experiments",
          "faiss": "fastif"}


def main(argv: list[str] | None = None) -> int:
    from ..errors import InfluenceError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InfluenceError as e:
        print(f"influencekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # the commands run experiments, an optional extra of the core install
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"influencekit {args.command}: error: needs {e.name}, which is not installed; "
              f"pip install 'influencekit[{extra}]' (or [all]).", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
