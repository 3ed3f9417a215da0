"""FastIF (Guo et al. 2020): influence over the k nearest training neighbours of each test point.

* ``index``: feature embeddings and a FAISS k-NN index, saved with a model/data fingerprint and
  rebuilt only when it changes;
* ``gradients``: the gradient prefilter: candidates by the largest last-layer term of I_up,loss of
  each sign (maximum inner product search), aimed at influence rather than similarity;
* ``prefilter``: scores on the candidates only, top-k helpful/harmful, recall against the full method;
* ``tune``: the cheapest inverse-HVP setting whose scores match a reference (Pearson >= target);

Signs: ``influencekit.convention``.
"""

from .gradients import gradient_candidates, gradient_embedding, gradient_index, head_block, head_params
from .index import KNNIndex, embed, fingerprint, load_or_build
from .prefilter import candidate_scores, recall_at_k, top_influential
from .tune import Trial, tune

__all__ = ["KNNIndex", "Trial", "candidate_scores", "embed", "fingerprint", "gradient_candidates",
           "gradient_embedding", "gradient_index", "head_block", "head_params", "load_or_build",
           "recall_at_k", "top_influential", "tune"]
