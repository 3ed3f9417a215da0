#!/usr/bin/env bash
# One process vs two torchrun processes (gloo, loopback) on a named workload: the I_up,loss
# matrix [m, n] must agree to max|A-B| / max|B| < 1e-5 (the 2-process run exits 1 otherwise).
# Usage: bash benchmarks/scaleout/distributed.sh [problem] [solver]   (default: digits-logreg cg)
# Records the comparison in benchmarks/scaleout/distributed.json (key "problem solver").
set -euo pipefail
problem=${1:-digits-logreg}
solver=${2:-cg}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s.%N)
python -m influencekit.experiments.sharded --problem "$problem" --solver "$solver" --weights "$out/w" \
    --out "$out/single"
mid=$(date +%s.%N)
torchrun --standalone --nproc_per_node=2 -m influencekit.experiments.sharded --problem "$problem" --solver "$solver" \
    --weights "$out/w" --out "$out/two" --check "$out/single" | tee "$out/log"
end=$(date +%s.%N)
one=$(echo "$mid - $start" | bc | awk '{printf "%.2f", $1}')
two=$(echo "$end - $mid" | bc | awk '{printf "%.2f", $1}')
echo "wall: 1 process $one s, 2 processes $two s (incl. start-up)"
rel=$(grep -o 'max|A-B| / max|B| = [0-9.e+-]*' "$out/log" | awk '{print $NF}')
here=$(dirname "$0")
python "$here/../record.py" "$here/distributed.sh" "$problem $solver" \
    "{\"rel_max_diff\": $rel, \"processes\": 2, \"wall_1_process_s\": $one, \"wall_2_processes_s\": $two}" \
    "bash benchmarks/scaleout/distributed.sh $problem $solver"
