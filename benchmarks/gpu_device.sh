#!/usr/bin/env bash
# The device check of the training-loop callback, in one go (about 5 minutes on an H100/H200):
# the CUDA test of tests/test_tracker.py, then the paired A/B of benchmarks/gpu_callback.py
# for the small and the medium model (tracker, item, wandb). Output goes to stdout and, when
# $OUT is set (the device tool), to $OUT/gpu_cuda_test.log and $OUT/gpu_ab.jsonl.
#
# wandb is not installed on the device image: carry it as wheels in .whl/ (gitignored), made
# on a machine with pip (see benchmarks/README.md, "GPU"):
#   benchmarks/gpu_device.sh --fetch-wheels
# then, through the device tool: command "bash benchmarks/gpu_device.sh", carry [".whl"].
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$tmp" wandb==0.31.0 || exit 1
    mkdir -p .whl && rm -f .whl/*.whl
    # only what the device image lacks (its package list: .library/device/KINDS.md)
    for f in annotated_types cwevals distro googleapis_common_protos opentelemetry \
             platformdirs protobuf pydantic typing_inspection sniffio wandb; do
        cp "$tmp"/"$f"*.whl .whl/
    done
    rm -rf "$tmp"
    du -sh .whl
    exit 0
fi

out=${OUT:-$(mktemp -d)}
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,utilization.gpu --format=csv || true
py=${PY:-python3}
"$py" -c "import torch, aipm_tracking; print('torch', torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" || exit 1

timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_tracker.py -k cuda -rA 2>&1 \
    | tee "$out/gpu_cuda_test.log" | tail -5

AB=1 PAIRS=${PAIRS:-40} BLOCK_SMALL=${BLOCK_SMALL:-200} BLOCK_MEDIUM=${BLOCK_MEDIUM:-100} \
    timeout "${AB_TIMEOUT:-360}" "$py" benchmarks/gpu_callback.py 2>&1 | tee "$out/gpu_ab.jsonl"
