#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install the CUDA build of jax and the peers, run the tests whose
# numbers depend on the device (every optimizer's rule and convergence, torch's trajectories, the
# precision of dot products, donation and memory), then the benchmarks. Everything it measures
# is written under ${OUT:-gpu_results}/: the pytest log, bench_optimizers.py's JSON (GPU table and
# bandwidth, torch on CUDA), bench_memory.py at 537M parameters (device peak bytes).
#
#   bash benchmarks/gpu_check.sh            # about 10 minutes on one H200
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q -e ".[test,bench]" "jax[cuda12]" torch 2>&1 | tail -3
.venv-gpu/bin/python -c "import jax; print(jax.devices())" | tee "$OUT/devices.txt"
timeout 300 .venv-gpu/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_catalogue.py tests/test_torch_golden.py tests/test_precision.py tests/test_donation.py \
    tests/test_lbfgs.py tests/test_muon.py tests/test_sophia.py tests/test_packed.py \
    "tests/test_optimizer.py::test_every_dot_product_of_every_step_runs_at_full_float32_precision" \
    2>&1 | tail -40 > "$OUT/pytest.log"
timeout 240 .venv-gpu/bin/python benchmarks/bench_optimizers.py --steps 60 --rounds 3 --instances 1 \
    --json "$OUT/adamw_gpu.json" > "$OUT/bench_optimizers.log" 2>&1
timeout 120 .venv-gpu/bin/python benchmarks/bench_memory.py --shape 8x8192x8192 \
    --json "$OUT/memory_gpu.json" > "$OUT/bench_memory.log" 2>&1
tail -5 "$OUT"/*.log
