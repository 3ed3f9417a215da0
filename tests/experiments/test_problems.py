"""The one problem type: a registry of named, trained problems with their defaults."""

import pytest
import torch

import influencekit as ik
from influencekit.errors import InputError
from influencekit.experiments import problems


@pytest.fixture(scope="module")
def logreg():
    return problems.make("digits-logreg")


def test_logistic_problem_is_trained_to_a_stationary_point(logreg):
    _, g = logreg.objective().risk(with_grad=True)
    assert g.abs().max() < 1e-8


def test_unknown_problem_names_the_known_ones():
    with pytest.raises(InputError, match="digits-logreg") as e:
        problems.make("imagenet")
    assert all(name in str(e.value) for name in problems.PROBLEMS)


def test_influence_applies_the_problems_defaults_unless_overridden():
    p = problems.make("digits-cnn", n_train=60)
    assert p.influence().settings()["solver"]["damping"] == p.damping == 1e-3
    assert p.influence().settings()["solver"]["max_iter"] == 300  # the problem's CG options
    assert p.influence(damping=0.5).settings()["solver"]["damping"] == 0.5
    assert p.influence("exact").settings()["solver"]["solver"] == "exact"


def test_influence_of_a_problem_is_the_influence_of_its_parts(logreg):
    test = logreg.test_at([0, 3])
    direct = ik.Influence(logreg.model, "logistic", logreg.train, l2=logreg.l2, solver="exact")
    torch.testing.assert_close(logreg.influence("exact").up_loss(test), direct.up_loss(test))


def test_test_at_keeps_the_order_and_rejects_indices_out_of_range(logreg):
    X, y = logreg.test_at([4, 1])
    torch.testing.assert_close(X, logreg.test[0][[4, 1]])
    m = len(logreg.test[0])
    with pytest.raises(InputError, match=f"has {m} points"):
        logreg.test_at([m])
    with pytest.raises(InputError, match="out of range"):
        logreg.test_at(-1)


def test_test_losses_are_the_test_loss_at_the_trained_weights(logreg):
    X, y = logreg.test
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logreg.model(X), y.double(),
                                                                    reduction="none")
    torch.testing.assert_close(logreg.test_losses(), expected.detach())
