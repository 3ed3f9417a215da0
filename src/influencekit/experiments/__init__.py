"""The paper's uses of influence and the problems influencekit is validated on (optional extra).

* ``explain``: most helpful / harmful training points for a test point, against nearest
  neighbours; influence vs distance for an RBF-kernel model and a learned-feature model.
* ``mislabel``: rank training points by |self-influence| to find flipped labels (Sec. 5.4).
* ``mismatch``: a training/test domain mismatch traced to the few training points behind it
  (Sec. 5.3, diabetes readmission).
* ``attack``: training-set attacks by input perturbation (Sec. 5.2).
* ``workloads``, ``datasets``, ``models``, ``fit``: the problems (model, data, training recipe).
* ``report``: the HTML report and its figures.

Needs the ``[experiments]`` extra (matplotlib, pandas, scikit-learn). Signs:
``influencekit.convention``. This ring uses the core and ``scale``, never the command line.
"""
