"""The sign and scaling convention of every quantity influencekit returns, stated once.

Every function, output file and report refers here instead of restating it.

* ``up_params[i]  = I_up,params(z_i) = -H^{-1} grad L(z_i)``  [p]: d theta_hat / d eps when z_i
  is up-weighted by eps in R(theta) + eps L(z_i, theta).
* ``up_loss[j, i] = I_up,loss(z_i, z_test_j) = -grad L(z_test_j)^T H^{-1} grad L(z_i)``.
  **Positive: z_i is harmful** to z_test_j (up-weighting it raises the test loss);
  **negative: z_i is helpful**. Units: test loss per unit of up-weighting eps.
* ``loo[j, i] = -(1/n) up_loss[j, i]``: the predicted change of the test loss,
  L(z_test, theta_hat_{-i}) - L(z_test, theta_hat), when z_i is removed (eps = -1/n). Positive:
  removing z_i raises the test loss (z_i was helpful). This is what leave-one-out retraining
  measures (``retrain.loo_retrain``).
* ``self_influence[i] = I_up,loss(z_i, z_i) = -grad L(z_i)^T H^{-1} grad L(z_i)`` (<= 0 for a
  positive-definite H). Large magnitude: the point props up its own fit; check its label.
* ``pert_loss[j, i] = I_pert,loss(z_i, z_test_j) = -grad_x [s_test_j^T grad_theta L(z_i)]``, shaped
  like x_i, with s_test = H^{-1} grad L(z_test): moving x_i by delta changes the retrained test
  loss by about (1/n) I_pert,loss . delta (positive: the step makes z_i more harmful). The same
  with ``wrt="y"`` for a continuous label.

H is the Hessian of R(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2 at theta_hat,
plus the solver's damping.
"""

#: one line of the convention, stored in every result file and printed by every command
SIGN_CONVENTION = ("up_loss = I_up,loss = -grad L(z_test)^T H^-1 grad L(z_train): positive = harmful "
                   "(up-weighting raises test loss), negative = helpful; loo = -(1/n) up_loss = predicted "
                   "change of test loss when the training point is removed.")

#: the same for input (or continuous label) perturbation
PERT_CONVENTION = ("I_pert,loss = -grad_x (s_test . grad_theta L(z_train)), s_test = H^-1 grad L(z_test); moving "
                   "training input x by delta changes the retrained test loss by about (1/n) I_pert,loss . delta "
                   "(positive = raises the test loss, i.e. makes the training point more harmful).")
