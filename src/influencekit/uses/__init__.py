"""The paper's uses of influence (Koh & Liang 2017, Sec. 5), one module each.

* ``explain``: most helpful / harmful training points for a test point, against nearest
  neighbours; influence vs distance for an RBF-kernel model and a learned-feature model.
* ``mislabel``: rank training points by |self-influence| to find flipped labels (Sec. 5.4).
* ``mismatch``: a training/test domain mismatch traced to the few training points behind it
  (Sec. 5.3, diabetes readmission).

Every result follows ``influencekit.influence.SIGN_CONVENTION``: I_up,loss > 0 harmful,
< 0 helpful; loo = -(1/n) I_up,loss.
"""
