"""The ``influencekit`` command line: one subcommand per use, each a module of this package.

A subcommand module defines ``help`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Shared flags (``--json``, ``--out``, ``--data-dir``, ``--seed``) are
added here so every subcommand spells them the same way.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand name -> module under influencekit.commands
COMMANDS = {
    "validate": "validate",
    "explain": "explain",
    "mislabel": "mislabel",
    "mismatch": "mismatch",
    "attack": "attack",
    "topk": "topk",
    "tune": "tune",
    "report": "report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="influencekit", description=(
        "Which training points are responsible for a prediction, and by how much (influence functions). "
        "Sign convention: I_up,loss > 0 = harmful, < 0 = helpful; LOO change = -(1/n) I_up,loss."))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"influencekit.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"influencekit.cli.{module}":
                continue  # not built yet
            raise
        p = sub.add_parser(name, help=mod.help, description=mod.help)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
        p.add_argument("--out", default=None, help="folder for figures, report and saved results")
        p.add_argument("--data-dir", default=None, help="folder with the shared data files (mnist.npz, ...)")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import InfluenceError

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InfluenceError as e:
        print(f"influencekit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
