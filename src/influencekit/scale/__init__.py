"""Scale: influence over more than one process.

* ``distributed``: the training data sharded over torch.distributed ranks; every pass over it is
  a local sum followed by one all-reduce, so each rank holds the full-data answer;
* ``pool``: s_test and scoring shards in worker processes on one machine.

Results on disk and resumable runs are the core's (``influencekit.storage``, ``influencekit.runs``):
the face's ``Influence.run`` needs them in one process too. This ring builds on the core and
never imports the experiments or the command line.
"""
