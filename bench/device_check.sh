#!/usr/bin/env bash
# The GPU checks no CPU can make, as one prepared script for a lent device machine (15 minutes of
# device time a session, all tries together: this script is sized to ~9 of them, one run).
#
# Here, once (needs ../shared/gpu beside the checkout, and PyPI):
#     bash bench/device_check.sh pack      # .gpu/: Ray Tune, Optuna, SQLAlchemy, Plotly (~48 MiB)
#                                          # and a Fashion-MNIST subset (~11 MiB); git ignores it
# Then with the device tool: run(command="bash bench/device_check.sh run", carry=[".gpu"],
#                                timeout_s=580)
# and give the machine back. What it checks, each step under its own time limit so that one hang
# still leaves the others' logs in $OUT:
#   1. cuda_tests.log  the CUDA tests that skip on CPU: every mode x loss option x precision trains
#                      without mixing dtypes (tests/test_precision.py), and a step never syncs with
#                      the host under set_sync_debug_mode("error") (tests/test_fast_path.py)
#   2. bench.log       bench/trainer.py: img/s and MFU per mode, fp32 vs bf16, and the shared/vit
#                      ratios (issue #8's targets: ViT-S bf16 >= 35% MFU, shared >= 5.8k img/s);
#                      then packing: four processes on the one GPU vs one alone (target >= 3x)
#   3. study.log       a whole smoke study with --gpus-per-trial 0.25: Ray packs 4 trials per GPU,
#                      Optuna, ASHA and the SQL store as on a cluster node
set -uo pipefail
cd "$(dirname "$0")/.."

pack() {
    local shared=../shared/gpu
    [ -d "$shared" ] || { echo "no $shared beside the checkout: cannot pack" >&2; exit 2; }
    mkdir -p .gpu
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
    [ -f .gpu/site.tar.xz ] || "$shared/pack-site.sh" .gpu
    [ -d .gpu/data ] || "$shared/fmnist-subset.py" .gpu/data
    du -sh .gpu
}

step() {  # step NAME SECONDS COMMAND...: run it under a limit, log to $OUT/NAME.log, go on
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - start)) s; last lines:"
    tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'
}

run() {
    [ -n "${OUT:-}" ] || { echo "OUT is not set: run this on the device machine (the device tool sets it)" >&2; exit 2; }
    [ -f .gpu/site.tar.xz ] || { echo "no .gpu/site.tar.xz: run 'bench/device_check.sh pack' here first and carry .gpu" >&2; exit 2; }
    mkdir -p /tmp/site && tar -C /tmp/site -xJf .gpu/site.tar.xz
    export PYTHONPATH=/tmp/site:$PWD BOOTSTUDY_DATA=$PWD/.gpu/data BOOTSTUDY_HOME=/tmp/bootstudy \
        PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
    python3 -c 'import torch, ray, optuna, sqlalchemy; print("torch", torch.__version__, "ray", ray.__version__, "optuna", optuna.__version__, "sqlalchemy", sqlalchemy.__version__)' | tee -a "$OUT/device.txt"
    step cuda_tests 150 python3 -m pytest -q -p no:cacheprovider -o addopts="-ra" \
        tests/test_precision.py tests/test_fast_path.py -k cuda
    step bench 200 python3 bench/trainer.py --device cuda --quick --concurrent 4 --concurrent-seconds 20
    step study 150 python3 run_study.py --space data_fraction --preset smoke --gpus-per-trial 0.25 \
        --study device-check --storage "sqlite:////tmp/bootstudy/device.db" --results-dir /tmp/bootstudy
    cp /tmp/bootstudy/device.db "$OUT/" 2>/dev/null || true
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    *) echo "usage: bash bench/device_check.sh pack|run (see the top of this file)" >&2; exit 2 ;;
esac
