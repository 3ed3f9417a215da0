"""Scale: what influencekit needs beyond one process and one sitting.

* ``storage``: trusted files (atomic writes, safetensors + checksummed JSON, never pickle);
* ``runs``: a resumable scoring run, chunk by chunk, that a killed process picks up;
* ``distributed``: the training data sharded over torch.distributed ranks;
* ``pool``: s_test and scoring shards in worker processes on one machine.

This ring builds on the core and never imports the experiments or the command line.
"""
