#!/usr/bin/env bash
# The device check, one command on a GPU machine (no network, its own python3 with CUDA torch):
#   bash benchmarks/gpu/run.sh DATA_DIR OUT_DIR
# DATA_DIR holds mnist.npz. Writes OUT_DIR/gpu_check.json and the logs; records the figures in
# benchmarks/gpu/check.json (copy it back from the device machine).
set -uo pipefail
data=${1:?data dir with mnist.npz}; out=${2:?output dir}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 benchmarks/gpu/check.py --data-dir "$data" --out "$out/gpu_check.json" 2>&1 | grep -v Warning | tee "$out/check.log"
# torch.distributed on NCCL (one GPU: one rank) against one plain process on the CPU, same weights
python3 -m influencekit.experiments.sharded --problem digits-logreg --solver cg --weights /tmp/w --out /tmp/single \
    2>&1 | tee "$out/distributed.log"
torchrun --standalone --nproc_per_node=1 -m influencekit.experiments.sharded --problem digits-logreg --solver cg \
    --backend nccl --weights /tmp/w --out /tmp/nccl --check /tmp/single 2>&1 | tee -a "$out/distributed.log"
status=${PIPESTATUS[0]}
echo "nccl check exit: $status" | tee -a "$out/distributed.log"
rel=$(grep -o 'max|A-B| / max|B| = [0-9.e+-]*' "$out/distributed.log" | awk '{print $NF}')
python3 benchmarks/record.py benchmarks/gpu/check.py nccl "{\"rel_max_diff\": ${rel:-null}, \"exit\": $status}" \
    "bash benchmarks/gpu/run.sh DATA_DIR OUT_DIR"
