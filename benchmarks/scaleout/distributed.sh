#!/usr/bin/env bash
# One process vs two torchrun processes (gloo, loopback) on a named workload: the I_up,loss
# matrix [m, n] must agree to max|A-B| / max|B| < 1e-5 (the 2-process run exits 1 otherwise).
# Usage: bash benchmarks/scaleout/distributed.sh [problem] [solver]   (default: digits-logreg cg)
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
    --weights "$out/w" --out "$out/two" --check "$out/single"
end=$(date +%s.%N)
echo "wall: 1 process $(echo "$mid - $start" | bc) s, 2 processes $(echo "$end - $mid" | bc) s (incl. start-up)"
