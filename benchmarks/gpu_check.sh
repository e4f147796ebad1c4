#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and no network: run the tests whose numbers depend on the device
# (every optimizer's rule and convergence, torch's trajectories, the precision of dot products,
# donation and memory), then the benchmarks. Everything it measures is written under
# ${OUT:-gpu_results}/: the pytest log, bench_optimizers.py's JSON (GPU table and bandwidth, torch
# on CUDA), bench_memory.py at 537M parameters (device peak bytes).
#
# It uses that machine's python3, which must have jax with CUDA, optax, flax, msgpack, numpy,
# pytest, hypothesis, scikit-learn and torch (with CUDA, for the torch peers). What it lacks
# (brainstate and its dependencies, braintools) comes as wheels in .whl/, made here first:
#
#   bash benchmarks/gpu_check.sh --wheels   # here, with the package registry: fills .whl/
#   bash benchmarks/gpu_check.sh tests      # there, with .whl/ beside it: at most 5 minutes
#   bash benchmarks/gpu_check.sh bench      # then: at most 6 minutes (no argument: both)
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(brainstate==0.6.0 brainevent==0.3.0 brainunit==0.6.0 saiunit==0.6.0 array_api_compat==1.16.0
        braintools==0.3.0)
if [ "${1:-}" = --wheels ]; then
    mkdir -p .whl
    exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
fi
OUT=${OUT:-gpu_results}
PY=${PY:-python3}
mkdir -p "$OUT"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import jax, brainstate, stateopt; print(jax.__version__, jax.devices(), brainstate.__version__)" \
    | tee "$OUT/devices.txt"
PART=${1:-all}
if [ "$PART" != bench ]; then
    timeout 300 "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_catalogue.py tests/test_torch_golden.py tests/test_precision.py tests/test_donation.py \
        tests/test_lbfgs.py tests/test_muon.py tests/test_sophia.py tests/test_packed.py \
        "tests/test_optimizer.py::test_every_dot_product_of_every_step_runs_at_full_float32_precision" \
        > "$OUT/pytest.log" 2>&1
fi
if [ "$PART" != tests ]; then
    timeout 240 "$PY" benchmarks/bench_optimizers.py --steps 60 --rounds 3 --instances 1 \
        --json "$OUT/adamw_gpu.json" > "$OUT/bench_optimizers.log" 2>&1
    timeout 110 "$PY" benchmarks/bench_memory.py --shape 8x8192x8192 \
        --json "$OUT/memory_gpu.json" > "$OUT/bench_memory.log" 2>&1
fi
tail -n 5 "$OUT"/*.log
