"""The paper's uses of influence and the problems influencekit is validated on (optional extra).

* ``explain``: most helpful / harmful training points for a test point, against nearest
  neighbours; influence vs distance for an RBF-kernel model and a learned-feature model.
* ``mislabel``: rank training points by |self-influence| to find flipped labels (Sec. 5.4).
* ``mismatch``: a training/test domain mismatch traced to the few training points behind it
  (Sec. 5.3, diabetes readmission).
* ``attack`` (``attack_mnist``: its MNIST problems): training-set attacks by input perturbation
  (Sec. 5.2).
* ``validate``: influence against leave-one-out retraining; ``topk``: the most helpful / harmful
  points, with FastIF's prefilters; ``tune``: the cheapest inverse-HVP setting that matches a
  reference; ``sharded``: the torchrun entry point.
* ``problems`` (one ``Problem`` type and the named ones), ``svm``, ``datasets``, ``models``,
  ``fit``: trained models with their data and training recipe.
* ``report``: the HTML report and its figures.

Each use is ``run(problem, ...) -> Result`` with ``Result.to_json()`` and ``Result.report(page)``.

Needs the ``[experiments]`` extra (matplotlib, pandas, scikit-learn, scipy). Signs:
``influencekit.convention``. This ring uses the core and ``scale``, never the command line.
"""
