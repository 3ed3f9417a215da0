"""Bad input and non-finite numbers: each gets a typed error (influencekit.errors) whose message
says what to change, before any NaN can reach a score."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import influencekit as ik
from influencekit.experiments.models import MLP, LogisticRegression
from influencekit.influence import scores


def _data(n=20, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    return X, (X[:, 0] > 0).long(), torch.randint(0, 3, (n,), generator=g)


def _logreg(d=4):
    return LogisticRegression(d).double().eval()


def _mlp(d=4, classes=3):
    return MLP(d, (3,), classes).double().eval()


def _influence(model, loss, train, test=None, **kw):
    """I_up,loss of the first two training points (or ``test``) with the exact solver (damped:
    the untrained MLPs here are not convex)."""
    inf = ik.Influence(model, loss, train, l2=0.1, solver="exact", damping=1.0, **kw)
    return inf.up_loss(test if test is not None else (train[0][:2], train[1][:2]))


# ---- NaN / inf in the data ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_training_inputs_are_refused_naming_the_rows(bad):
    X, y, _ = _data()
    X[3, 1] = X[11, 0] = bad
    with pytest.raises(ik.NonFiniteError, match=r"training data inputs .* rows \[3, 11\]; remove or impute"):
        _influence(_logreg(), "logistic", (X, y))


def test_non_finite_regression_labels_and_test_inputs_are_refused():
    X, _, _ = _data()
    t = X.sum(1, keepdim=True)
    t[5] = float("nan")
    with pytest.raises(ik.NonFiniteError, match=r"training data labels .* rows \[5\]"):
        ik.Objective(_mlp(classes=1), "mse", (X, t))
    X, y, _ = _data()
    Xt = X[:3].clone()
    Xt[2, 0] = float("inf")
    with pytest.raises(ik.NonFiniteError, match=r"test data inputs .* rows \[2\]"):
        _influence(_logreg(), "logistic", (X, y), (Xt, y[:3]))


# ---- labels out of range --------------------------------------------------------------------

@pytest.mark.parametrize("label", [3, 7, -1])
def test_class_index_outside_the_logits_is_refused(label):
    X, _, yc = _data()
    yc[[4, 9]] = label
    with pytest.raises(ik.InputError, match=r"class indices in \[0, 2\] for a model with 3 logits; rows \[4, 9\]"):
        _influence(_mlp(), "cross_entropy", (X, yc))


def test_cross_entropy_refuses_fractional_and_one_hot_labels():
    X, _, yc = _data()
    with pytest.raises(ik.InputError, match="integer class indices"):
        _influence(_mlp(), "cross_entropy", (X, yc.double() + 0.5))
    with pytest.raises(ik.InputError, match="not one-hot rows"):
        _influence(_mlp(), "cross_entropy", (X, nn.functional.one_hot(yc, 3)))


def test_a_test_label_out_of_range_is_refused_like_a_training_label():
    X, _, yc = _data()
    with pytest.raises(ik.InputError, match=r"test data: labels must be class indices in \[0, 2\]"):
        _influence(_mlp(), "cross_entropy", (X, yc), (X[:2], torch.tensor([0, 5])))


@pytest.mark.parametrize("loss", ["logistic", "hinge", "smooth_hinge"])
@pytest.mark.parametrize("labels", [(0, 2), (0, 0.5), (-1, 0, 1)])
def test_binary_losses_need_labels_in_0_1_or_minus_1_plus_1(loss, labels):
    X, _, _ = _data()
    y = torch.tensor(labels, dtype=torch.float64).repeat(20)[:20]
    with pytest.raises(ik.InputError, match=r"must all be in \{0, 1\} or all in \{-1, \+1\}"):
        ik.Objective(_logreg(), loss, (X, y))


def test_a_dataset_label_out_of_range_beyond_the_first_batch_is_found_before_curvature_is_fitted():
    X, _, yc = _data()
    yc[15] = 5
    inf = ik.Influence(_mlp(), "cross_entropy", TensorDataset(X, yc), solver="exact", damping=1.0, batch_size=8)
    with pytest.raises(ik.InputError, match=r"class indices in \[0, 2\] for a model with 3 logits; rows \[15\]"):
        inf.fit()


@pytest.mark.parametrize("labels", [(0, 1), (-1, 1)])
def test_both_binary_label_codings_are_accepted_and_give_the_same_influence(labels):
    X, y, _ = _data()
    model = _logreg()
    a = _influence(model, "logistic", (X, y))
    coded = torch.where(y > 0, labels[1], labels[0])
    torch.testing.assert_close(_influence(model, "logistic", (X, coded)), a)


# ---- shapes: model vs loss vs data ----------------------------------------------------------

def test_data_with_the_wrong_number_of_features_names_both_shapes():
    X, y, _ = _data(d=5)
    with pytest.raises(ik.InputError, match=r"cannot take examples shaped \[5\].*4x5 and 4x1"):
        ik.Objective(_logreg(d=4), "logistic", (X, y))


def test_a_test_point_of_the_wrong_shape_names_the_training_shape():
    X, y, _ = _data()
    with pytest.raises(ik.InputError, match=r"test data: .*shaped \[5\].*training examples are \[4\]"):
        _influence(_logreg(), "logistic", (X, y), (torch.randn(1, 5, dtype=torch.float64), y[:1]))
    with pytest.raises(ik.InputError, match=r"leading example dimension.*X\[i:i\+1\]"):
        _influence(_logreg(), "logistic", (X, y), (X[0], y[0]))
    with pytest.raises(ik.InputError, match="X has 2 rows but Y has 3"):
        _influence(_logreg(), "logistic", (X, y), (X[:2], y[:3]))


def test_scored_data_of_the_wrong_shape_is_refused():
    X, y, _ = _data()
    obj = ik.Objective(_logreg(), "logistic", (X, y))
    with pytest.raises(ik.InputError, match=r"scored data: .*training examples are \[4\]"):
        scores(obj, torch.ones(obj.p, dtype=torch.float64), (torch.randn(3, 6, dtype=torch.float64), y[:3]))


def test_integer_inputs_to_a_float_model_are_refused_with_the_dtype():
    X, y, _ = _data()
    with pytest.raises(ik.InputError, match="torch.int64"):
        ik.Objective(_logreg(), "logistic", (X.long(), y))


def test_a_loss_that_does_not_fit_the_model_outputs_is_refused():
    X, y, yc = _data()
    with pytest.raises(ik.InputError, match="need one logit per example, got 3"):
        ik.Objective(_mlp(), "logistic", (X, y))
    with pytest.raises(ik.InputError, match=r"gives \(3,\) per example, the labels are \(2,\)"):
        ik.Objective(_mlp(), "mse", (X, torch.randn(20, 2, dtype=torch.float64)))
    with pytest.raises(ik.InputError, match="logits"):
        ik.Objective(_logreg(), "cross_entropy", (X, yc))


def test_a_custom_loss_that_reduces_the_batch_is_refused():
    X, y, _ = _data()
    with pytest.raises(ik.InputError, match="one value per example"):
        ik.Objective(_logreg(), lambda o, t: (o - t).pow(2).mean(), (X, y.double()))


# ---- dataset size ---------------------------------------------------------------------------

def test_an_empty_training_or_test_set_is_refused():
    X, y, _ = _data()
    with pytest.raises(ik.InputError, match="training data is empty"):
        ik.Objective(_logreg(), "logistic", (X[:0], y[:0]))
    with pytest.raises(ik.InputError, match="test data is empty"):
        _influence(_logreg(), "logistic", (X, y), (X[:0], y[:0]))


def test_one_training_point_has_a_defined_influence_but_no_leave_one_out_retraining():
    """With n = 1, H = grad^2 L(z_1) + l2 I is invertible (l2 > 0), so I_up,loss(z_1, z_1) =
    -g^T H^-1 g is defined. Removing the point leaves nothing to fit: loo_retrain refuses."""
    X, y, _ = _data(n=1)
    model = _logreg()
    inf = ik.Influence(model, "logistic", (X, y), l2=0.1, solver="exact")
    obj = inf.objective
    theta = obj.theta.clone().requires_grad_(True)

    def loss(t):
        return nn.functional.softplus(-(2.0 * y[0] - 1) * obj.outputs(t, X)[0])

    (g,) = torch.autograd.grad(loss(theta), theta)
    H = torch.autograd.functional.hessian(loss, obj.theta) + 0.1 * torch.eye(obj.p, dtype=torch.float64)
    expected = -g @ torch.linalg.solve(H, g)
    torch.testing.assert_close(inf.self_influence(), expected.reshape(1))
    torch.testing.assert_close(inf.up_loss((X, y)), expected.reshape(1, 1))
    with pytest.raises(ik.InputError, match="at least 2 training points"):
        ik.loo_retrain(obj, [0], (X, y))


# ---- model state ----------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [nn.Dropout(0.5), nn.BatchNorm1d(3)])
def test_a_model_in_training_mode_is_refused(layer):
    X, _, yc = _data()
    model = _mlp()
    model.features.append(layer)
    model.train()
    with pytest.raises(ik.ModelStateError, match=r"training mode \(features.3\); call model.eval\(\)"):
        _influence(model, "cross_entropy", (X, yc))
    model.eval()
    assert torch.isfinite(_influence(model, "cross_entropy", (X, yc))).all()


def test_parameters_in_scope_must_require_grad():
    X, _, yc = _data()
    model = _mlp()
    model.head.weight.requires_grad_(False)
    with pytest.raises(ik.ModelStateError, match=r"\['head.weight'\] do not require grad; call requires_grad_"):
        ik.Objective(model, "cross_entropy", (X, yc), params=["head.weight", "head.bias"])
    # default scope: the frozen weight is simply out of scope
    assert ik.Objective(model, "cross_entropy", (X, yc)).p == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ik.ModelStateError, match="no parameter of the model requires grad"):
        ik.Objective(model, "cross_entropy", (X, yc))


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_a_curvature_method_refuses_a_layer_it_cannot_factorise(name):
    if name not in ik.SOLVERS:
        pytest.skip(f"no {name!r} solver registered yet (solvers/kfac.py)")

    class Bilinear(nn.Module):  # x^T W x: no Kronecker-factored curvature for this layer
        def __init__(self):
            super().__init__()
            self.bil = nn.Bilinear(4, 4, 3)

        def forward(self, x):
            return self.bil(x, x)

    X, _, yc = _data()
    # 51 parameters: kept as an exact block by default; factorising every layer (exact_block=0) refuses it
    inf = ik.Influence(Bilinear().double().eval(), "cross_entropy", (X, yc), solver=name, exact_block=0)
    with pytest.raises(ik.UnsupportedLayerError, match=r"bil \(Bilinear\).*exact_block"):
        inf.up_loss((X[:2], yc[:2]))


def test_unknown_parameter_names_list_the_real_ones():
    X, _, yc = _data()
    with pytest.raises(ik.InputError, match="unknown parameter names.*head.weight"):
        ik.Objective(_mlp(), "cross_entropy", (X, yc), params=["fc.weight"])


# ---- non-finite parameters, losses, gradients -----------------------------------------------

def test_a_nan_parameter_or_buffer_is_refused_naming_it():
    X, _, yc = _data()
    model = _mlp()
    with torch.no_grad():
        model.head.bias[1] = float("nan")
    with pytest.raises(ik.NonFiniteError, match=r"\['head.bias'\] contain NaN"):
        ik.Objective(model, "cross_entropy", (X, yc))
    # out of scope too: a NaN anywhere in the forward pass poisons every score
    with pytest.raises(ik.NonFiniteError, match=r"\['head.bias'\] contain NaN"):
        ik.Objective(model, "cross_entropy", (X, yc), params=["head.weight"])
    model = _mlp()
    model.features.append(nn.BatchNorm1d(3))
    model.eval()
    model.features[3].running_var[0] = float("inf")
    with pytest.raises(ik.NonFiniteError, match="running_var"):
        ik.Objective(model, "cross_entropy", (X, yc))


def test_a_nan_inside_a_dataset_is_caught_by_the_fit_and_by_scoring():
    """A Dataset is streamed, not checked up front: the NaN surfaces as a non-finite objective,
    and scoring it by either method raises instead of returning NaN."""
    X, _, yc = _data()
    X[7, 1] = float("nan")
    inf = ik.Influence(_mlp(), "cross_entropy", TensorDataset(X, yc), solver="exact", damping=1.0, batch_size=8)
    with pytest.raises(ik.NonFiniteError, match="training objective is nan"):
        inf.fit()
    s = torch.ones(2, inf.objective.p, dtype=torch.float64)
    with pytest.raises(ik.NonFiniteError, match=r"examples \[7\]"):
        scores(inf.objective, s, method="jvp")
    with pytest.raises(ik.NonFiniteError, match=r"examples \[7\]"):
        scores(inf.objective, s, method="grad")


def test_a_non_finite_loss_at_the_trained_parameters_is_refused():
    X, y, _ = _data()

    def log_loss_without_clamp(o, t):  # sigmoid(-1e4) underflows to 0, and -log(0) = inf
        return -torch.log(torch.sigmoid(torch.where(t > 0, o, -o)))

    model = _logreg()
    with torch.no_grad():
        model.linear.weight.fill_(1e4)
    inf = ik.Influence(model, log_loss_without_clamp, (X, y), solver="exact")
    with pytest.raises(ik.NonFiniteError, match="training objective is inf at the trained parameters"):
        inf.fit()
    with pytest.raises(ik.NonFiniteError):  # and no score comes out
        inf.up_loss((X[:2], y[:2]))


def test_nan_gradients_with_a_finite_loss_are_refused_not_scored():
    """sqrt(f^2) at f = 0: the loss is 0 but its gradient is 0/0."""
    X, y, _ = _data()
    model = _logreg()
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()

    def abs_by_sqrt(o, t):
        return torch.sqrt(o**2)

    for solver in ("exact", "cg", "lissa"):
        inf = ik.Influence(model, abs_by_sqrt, (X, y), solver=solver)
        with pytest.raises(ik.NonFiniteError, match="gradient of the training objective is NaN"):
            inf.fit()
        with pytest.raises(ik.NonFiniteError, match="non-finite gradient for examples"):
            inf.up_loss((X[:1], y[:1]))
    obj = ik.Objective(model, abs_by_sqrt, (X, y))
    s = torch.ones(1, obj.p, dtype=torch.float64)
    with pytest.raises(ik.NonFiniteError, match="non-finite influence scores for examples"):
        scores(obj, s, method="jvp")
    with pytest.raises(ik.NonFiniteError, match="non-finite gradient for examples"):
        scores(obj, s, method="grad")


def test_a_nan_right_hand_side_never_reaches_a_solver():
    X, y, _ = _data()
    obj = ik.Objective(_logreg(), "logistic", (X, y), l2=0.1)
    v = torch.ones(obj.p, dtype=torch.float64)
    v[2] = float("nan")
    for solver in ("exact", "cg", "lissa"):
        with pytest.raises(ik.NonFiniteError, match="right-hand side contains NaN"):
            ik.make_solver(solver).fit(obj).solve(v)


def test_a_nan_hessian_vector_product_stops_cg_at_once():
    X, y, _ = _data()
    obj = ik.Objective(_logreg(), "logistic", (X, y), l2=0.1)
    cg = ik.make_solver("cg", max_iter=500).fit(obj)
    calls = []

    def poisoned(V):  # the third HVP returns NaN, as an overflowing model would
        calls.append(1)
        out = ik.Objective.hvp(obj, V)
        return out * float("nan") if len(calls) == 3 else out

    obj.hvp = poisoned
    with pytest.raises(ik.NonFiniteError, match="NaN/inf Hessian-vector product at iteration 2"):
        cg.solve(obj.grads(X[:2], y[:2]))
    assert len(calls) == 3


def test_every_error_is_an_influence_error_for_one_except_clause():
    for cls in (ik.InputError, ik.NonFiniteError, ik.ModelStateError, ik.NegativeCurvatureError,
                ik.DivergenceError, ik.UnsupportedLayerError):
        assert issubclass(cls, ik.InfluenceError)


def test_a_nan_hessian_vector_product_stops_lissa_at_that_step_not_as_divergence():
    X, y, _ = _data()
    obj = ik.Objective(_logreg(), "logistic", (X, y), l2=0.1)
    lissa = ik.make_solver("lissa", depth=1000, batch_size=8).fit(obj)
    calls = []

    def poisoned(V, x, y, scale, weights=None):
        calls.append(1)
        out = ik.Objective.hvp_batch(obj, V, x, y, scale, weights)
        return out * float("nan") if len(calls) == 15 else out

    obj.hvp_batch = poisoned
    with pytest.raises(ik.NonFiniteError, match="NaN/inf Hessian-vector product at step 15 of repeat 0"):
        lissa.solve(obj.grads(X[:2], y[:2]))
