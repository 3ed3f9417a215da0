"""The command table and its parser: every command answers ``--help`` at once (building the
parser imports neither torch nor numpy nor an experiment), literal choices match the library's
registries, and counts and indices below their range are refused by the parser."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from influencekit import cli


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_building_the_parser_imports_no_torch_numpy_or_experiment():
    out = python("import sys, json; from influencekit.cli import build_parser; build_parser(); "
                 "print(json.dumps(sorted(sys.modules)))")
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    heavy = [m for m in loaded if m.split(".")[0] in ("torch", "numpy") or m.startswith("influencekit.experiments")]
    assert not heavy, heavy[:10]
    assert {f"influencekit.cli.{name}" for name in cli.COMMANDS} <= set(loaded)  # every command was built


@pytest.mark.parametrize("command", [[], *([name] for name in cli.COMMANDS)], ids=lambda c: " ".join(c) or "-")
def test_help_answers_for_every_command(command):
    out = subprocess.run([sys.executable, "-m", "influencekit", *command, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: influencekit" in out.stdout


def test_every_command_module_defines_help_arguments_and_run():
    import importlib

    for name, module in cli.COMMANDS.items():
        mod = importlib.import_module(module)
        assert isinstance(mod.help, str) and callable(mod.add_arguments) and callable(mod.run), name


def test_a_missing_command_module_is_an_error_not_a_missing_command(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "nonesuch", "influencekit.cli.nonesuch")
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_literal_choices_equal_the_registries_they_name():
    from influencekit.cli import topk
    from influencekit.experiments.problems import PROBLEMS
    from influencekit.fastif.index import KINDS
    from influencekit.solvers import SOLVERS

    assert sorted(cli.SOLVERS) == sorted(SOLVERS)
    assert cli.PROBLEMS == list(PROBLEMS)
    assert set(cli.DATASET_PROBLEMS.values()) <= set(PROBLEMS)
    assert topk.INDEX_KINDS == list(KINDS)


@pytest.mark.parametrize("argv", [
    ["validate", "--k", "-1"], ["validate", "--k", "1"], ["report", "--k", "0"], ["validate", "--test-index", "-3"],
    ["topk", "--top", "0"], ["topk", "--k", "-5"], ["topk", "--test-index", "0", "-3"], ["topk", "--workers", "0"],
    ["tune", "--sample", "0"], ["topk", "--n-train", "x"],
])
def test_counts_below_one_and_negative_indices_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert any(why in err for why in ("must be a positive integer", "must be an index >= 0", "must be an integer",
                                      "must be at least 2 (a correlation needs two points)"))


def test_workload_is_an_alias_of_problem():
    args = cli.build_parser().parse_args(["validate", "--workload", "digits-svm"])
    assert args.problem == "digits-svm"
    assert cli.build_parser().parse_args(["validate", "--problem", "mnist-cnn"]).problem == "mnist-cnn"
