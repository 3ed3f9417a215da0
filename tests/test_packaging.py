"""What a plain ``pip install influencekit`` promises: the core runs the README's first snippet
without the extras, and importing the package (or the command line's parser) does not load torch.

A fresh virtual environment per CI run would be too slow, so each check runs in a subprocess
that simulates one: the ``sys.meta_path`` finder of installed packages is wrapped so that it no
longer finds the extras' modules; importing one raises ModuleNotFoundError, and probing for one
(``importlib.util.find_spec``, as torch does) finds nothing, exactly as when it is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the modules of the extras ([fastif], [experiments]), which the core must do without
EXTRAS = ("faiss", "matplotlib", "pandas", "sklearn", "scipy")

BLOCK = f"""
import importlib.abc, importlib.machinery, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS!r}:
            return None
        return self.finder.find_spec(name, path, target)

    def invalidate_caches(self):
        self.finder.invalidate_caches()

sys.meta_path[:] = [NotInstalled(f) if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
for blocked in {EXTRAS!r}:
    try:
        __import__(blocked)
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(blocked + " is still importable: the simulation is broken")
"""


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    src = str(ROOT / "src")
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})


def test_the_readme_snippet_runs_without_the_extras(tmp_path):
    code = f"""
    import re, torch
    import influencekit as ik

    # a tiny logistic regression (3 classes) on random data, trained to a stationary point by the core
    g = torch.Generator().manual_seed(0)
    X_train = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y_train = X_train[:, :3].argmax(1)
    X_test, y_test = X_train[:4] + 0.1, y_train[:4]
    model = torch.nn.Linear(4, 3).double().eval()
    obj = ik.Objective(model, "cross_entropy", (X_train, y_train), l2=1e-3)
    model = obj.to_model(ik.minimize(obj, newton_steps=2)).eval()

    readme = open({str(ROOT / "README.md")!r}).read()
    exec(re.findall(r"```python\\n(.*?)```", readme, flags=re.S)[0])

    assert scores.shape == (4, 30) and actual.shape == (4, 2) and ipert.shape == X_train.shape
    assert torch.equal(top.harmful_index[:, 0], scores.argmax(1))
    try:
        inf.top_k(test, prefilter="grad")
    except ik.InputError as e:
        assert "pip install influencekit[fastif]" in str(e), e
    else:
        raise AssertionError("the FAISS prefilter ran without faiss")
    blocked = sorted(m for m in sys.modules if m.split(".")[0] in {EXTRAS!r})
    assert not blocked, blocked
    print("ok")
    """
    done = run_python(code, tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_importing_the_package_and_the_command_line_parser_loads_no_torch(tmp_path):
    done = run_python("""
    import influencekit, influencekit.cli
    heavy = sorted(m for m in ("torch", "numpy", "influencekit.influence") if m in sys.modules)
    assert not heavy, heavy
    assert "Influence" in dir(influencekit) and "Influence" in influencekit.__all__
    print("ok")
    """, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("name", ["Influence", "TopK", "loo_retrain", "InputError", "SIGN_CONVENTION"])
def test_every_public_name_resolves_on_first_use(name):
    import influencekit

    assert name in influencekit.__all__
    assert getattr(influencekit, name) is not None


def test_the_public_names_and_the_lazy_table_agree():
    import influencekit

    assert sorted(influencekit.__all__) == sorted(influencekit._PUBLIC)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        influencekit.nonexistent  # noqa: B018


def test_a_command_without_the_experiments_extra_says_which_extra_to_install(tmp_path):
    code = """
    from influencekit.cli import main
    raise SystemExit(main(["validate", "--problem", "digits-logreg", "--k", "5"]))
    """
    done = run_python(code, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "pip install 'influencekit[experiments]'" in done.stderr and "Traceback" not in done.stderr
