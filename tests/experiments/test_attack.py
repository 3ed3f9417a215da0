"""Training-set attacks are judged by retraining: a step along sign(I_pert,loss) must raise the
retrained model's loss on the target, stay inside the L-inf ball and the pixel range, and the
reported prediction must be the one a model trained from scratch on the perturbed data makes."""

import json

import pytest
import torch
from torch import nn

import influencekit as ik
from influencekit.experiments import datasets
from influencekit.experiments.attack import AttackConfig, NetworkVictim, TopLayerVictim, attack
from influencekit.experiments.models import LogisticRegression


def _top_layer_problem(n=120, l2=1e-2):
    """Digits 1 vs 7 (8x8 pixels in [0, 1]); frozen random tanh features (16); logistic head."""
    Xtr, ytr, Xte, yte = datasets.digits((1, 7))
    Xtr, ytr = Xtr[:n], ytr[:n].double()
    torch.manual_seed(0)
    features = nn.Sequential(nn.Linear(64, 16), nn.Tanh()).double()
    head = LogisticRegression(16).double()
    with torch.no_grad():
        F = features(Xtr)
    obj = ik.Objective(head, "logistic", (F, ytr), l2=l2)
    head = obj.to_model(ik.minimize(obj, newton_steps=2))
    victim = TopLayerVictim(features, head, "logistic", Xtr, ytr, l2=l2)
    return victim, features, Xte, yte.double()


def _hardest_correct(victim, Xte, yte):
    """The correctly classified test point with the highest loss: [1, ...], [1]."""
    tobj, F, y = victim.target(Xte, yte)
    losses = tobj.losses(victim.theta, F, y)
    losses[victim.predict(victim.theta, Xte) != yte.long()] = -1
    j = int(losses.argmax())
    return Xte[j:j + 1], yte[j:j + 1]


def test_one_step_raises_the_retrained_target_loss_as_predicted():
    victim, _, Xte, yte = _top_layer_problem()
    x, y = _hardest_correct(victim, Xte, yte)
    r = attack(victim, x, y, AttackConfig(k=3, step=0.01, bound=0.01, max_steps=1))
    assert r.steps == 1
    assert r.actual_rise > 0
    # first-order prediction (1/n) I_pert . delta within 30 % of the retrained change for a small step
    assert abs(r.actual_rise - r.predicted_rise) < 0.3 * r.actual_rise


def test_perturbations_respect_the_bound_and_range_and_the_flip_is_real():
    victim, features, Xte, yte = _top_layer_problem()
    x, y = _hardest_correct(victim, Xte, yte)
    cfg = AttackConfig(k=5, step=0.05, bound=0.25, max_steps=10)
    r = attack(victim, x, y, cfg)
    assert r.delta.abs().max() <= cfg.bound + 1e-12
    assert r.x_after.min() >= 0 and r.x_after.max() <= 1
    assert r.loss_after > r.loss_before
    # retrain the head from zero (cold start) on the perturbed training set: same model, same prediction
    X = victim.X0.clone()
    X[r.index] = r.x_after
    with torch.no_grad():
        F = features(X)
    head = LogisticRegression(16).double()
    nn.init.zeros_(head.linear.weight)
    nn.init.zeros_(head.linear.bias)
    obj = ik.Objective(head, "logistic", (F, victim.Y), l2=victim.l2)
    theta = ik.minimize(obj, newton_steps=2)
    torch.testing.assert_close(theta, r.theta, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        pred = int(obj.outputs(theta, features(x))[0] > 0)
    assert pred == r.prediction_after
    assert r.summary()["flipped"] == (r.prediction_after != r.prediction_before)
    assert torch.equal(victim.X0[r.index], r.x_before)  # the victim's data are left untouched


def test_network_victim_step_raises_the_retrained_target_loss():
    Xtr, ytr, Xte, yte = datasets.digits((1, 7))
    Xtr, ytr = Xtr[:60], ytr[:60]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    obj = ik.Objective(net, "cross_entropy", (Xtr, ytr), l2=1e-2)
    net = obj.to_model(ik.minimize(obj, max_iter=500)).eval()
    victim = NetworkVictim(net, "cross_entropy", Xtr, ytr, l2=1e-2)
    tobj = victim.target(Xte, yte)[0]
    j = int(tobj.losses(victim.theta, *tobj.cast(Xte, yte)).argmax())
    r = attack(victim, Xte[j:j + 1], yte[j:j + 1], AttackConfig(k=3, step=0.01, bound=0.01, max_steps=1,
                                                                 solver="cg", damping=1e-3))
    assert r.actual_rise > 0


def test_bad_settings_say_what_to_change():
    victim, _, Xte, yte = _top_layer_problem(n=40)
    with pytest.raises(ik.InputError, match="step <= bound"):
        attack(victim, Xte[:1], yte[:1], AttackConfig(step=0.1, bound=0.01))
    with pytest.raises(ik.InputError, match="one target at a time"):
        attack(victim, Xte[:2], yte[:2])


def test_victims_never_move_the_parameters_of_the_objectives_they_keep():
    victim, _, Xte, yte = _top_layer_problem(n=60)
    kept = {"head": victim.head_objective.theta.clone(), "pixel": victim.pixel_objective.theta.clone()}
    x, y = _hardest_correct(victim, Xte, yte)
    attack(victim, x, y, AttackConfig(k=2, step=0.05, bound=0.1, max_steps=2))
    moved = victim.theta + 1.0
    assert torch.equal(victim.training_objective(victim.X0, moved).theta, moved)
    assert torch.equal(victim.head_objective.theta, kept["head"])
    assert torch.equal(victim.pixel_objective.theta, kept["pixel"])


def test_run_attacks_the_problems_test_points_and_reports_each_retrained_outcome(tmp_path):
    from safetensors.torch import load_file

    from influencekit.experiments import report
    from influencekit.experiments.attack import run
    from influencekit.experiments.problems import Problem

    victim, features, Xte, yte = _top_layer_problem(n=60)
    problem = Problem("digits-attack", nn.Sequential(features, victim.head).eval(), "logistic", (victim.X0, victim.Y),
                      (Xte, yte), victim.l2, solver="exact", notes="digits 1 vs 7", extra={"victim": victim})
    r = run(problem, AttackConfig(k=2, step=0.05, bound=0.1, max_steps=2), test_index=[0, 3], out=tmp_path)
    assert [row["test_index"] for row in r.rows] == [0, 3]
    assert r.success_rate == sum(row["flipped"] for row in r.rows) / 2
    assert r.clean_accuracy == victim.accuracy(victim.theta, Xte, yte)
    js = json.loads((tmp_path / "attack.json").read_text())
    assert js["attacks"][1]["index"] == r.attacks[1].index.tolist() and js["config"]["solver"] == "exact"
    saved = load_file(str(tmp_path / "attack_test3.safetensors"))
    torch.testing.assert_close(saved["x_after"], r.attacks[1].x_after.float())
    page = report.Page("t")
    r.report(page)
    assert page.render().count("data:image/png") == 2
    with pytest.raises(ik.InputError, match="out of range"):
        run(problem, test_index=[10_000])
