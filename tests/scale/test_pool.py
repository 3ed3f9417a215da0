"""pool: worker processes over one ``Influence`` reproduce the serial s_test and scores."""

from __future__ import annotations

import warnings

import pytest
import torch

from influencekit import Influence
from influencekit.errors import InputError
from influencekit.experiments.models import MLP
from influencekit.scale.pool import parallel_s_test, parallel_scores


def _influence(**solver_options):
    """A small float64 MLP (8 -> 6 tanh -> 3, untrained) on 150 random points, in batches of 50
    (two scoring shards: [0, 100) and [100, 150)). Its Hessian has eigenvalues down to about
    -0.12, hence damping 0.2. Returns (influence, 4 test points)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(150, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (150,), generator=g)
    test = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g)
    inf = Influence(MLP(8, (6,), 3).double().eval(), "cross_entropy", (X, y), l2=0.1, batch_size=50,
                    solver="cg", damping=0.2, tol=1e-10, **solver_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untrained model is not stationary; irrelevant here
        inf.fit()
    return inf, test


def test_parallel_s_test_equals_the_serial_one():
    inf, test = _influence(block=False)  # columns independent: equal to round-off
    serial = inf.s_test(test)
    torch.testing.assert_close(parallel_s_test(inf, test, workers=2), serial, rtol=1e-10, atol=1e-13)
    # test gradients instead of test data: the same
    torch.testing.assert_close(parallel_s_test(inf, inf.test_gradients(test), workers=2), serial,
                               rtol=1e-10, atol=1e-13)
    block, _ = _influence()  # one Krylov space per shard: equal to the tolerance
    assert ((parallel_s_test(block, test, workers=2) - serial).norm() / serial.norm()).item() < 1e-8


def test_parallel_scores_equal_the_serial_ones():
    inf, test = _influence(block=False)
    S = inf.s_test(test)
    serial = inf.scores(S, method="grad")
    par = parallel_scores(inf, S, workers=2)
    assert par.shape == serial.shape == (4, 150)
    torch.testing.assert_close(par, serial, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(parallel_scores(inf, S[0], workers=1), serial[:1], rtol=1e-12, atol=1e-14)


def test_bad_workers_and_shapes_are_refused():
    inf, test = _influence()
    with pytest.raises(InputError, match="workers"):
        parallel_scores(inf, torch.zeros(1, inf.p, dtype=torch.float64), workers=0)
    with pytest.raises(InputError, match=r"\[m, p\]"):
        parallel_s_test(inf, torch.zeros(2, inf.p + 1, dtype=torch.float64))
