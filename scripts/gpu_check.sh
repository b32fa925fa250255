#!/usr/bin/env bash
# The GPU path, checked on a machine with CUDA (CI has none, so this is run by hand):
#   1. a tiny end-to-end run (debug=fast) with trainer=gpu (bf16-mixed), every stage, then its
#      evaluation on the GPU; the same with the legibility objective and the sparse_readout projection;
#   2. the training-step benchmark (scripts/bench_train_step.py) in fp32 and in bf16;
#   3. the CPU quickstart's whole curriculum with trainer=gpu (bf16-mixed), then its evaluation, to
#      compare with the CPU's fp32 numbers in the README.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default outputs/gpu_check; logs land there)
#
# PYTHON picks the interpreter (default .venv/bin/python); QUICKSTART_TIMEOUT bounds step 3 (seconds);
# BENCH=0 skips step 2.
set -uo pipefail
out=${1:-outputs/gpu_check}
python=${PYTHON:-.venv/bin/python}
runs=$out/runs
mkdir -p "$out"
export PYTHONUNBUFFERED=1

"$python" - <<'EOF' 2>&1 | tee "$out/versions.log"
import torch, transformers, lightning
print("torch", torch.__version__, "| transformers", transformers.__version__, "| lightning", lightning.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF

step() {  # name, command...: runs it, logs to $out/<name>.log, prints its wall time and exit status
    local name=$1 start=$SECONDS
    shift
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc, $((SECONDS - start)) s" | tee -a "$out/steps.log"
    return $rc
}

step fast_train "$python" -m coconut.cli.train debug=fast trainer=gpu "hydra.run.dir=$runs/fast" &&
    step fast_eval "$python" -m coconut.cli.evaluate "ckpt_path=$runs/fast/checkpoints/last.ckpt" \
        "hydra.run.dir=$runs/fast_eval"
step fast_legibility "$python" -m coconut.cli.train debug=fast trainer=gpu legibility.weight=1 \
    model/thought_projection=sparse_readout "hydra.run.dir=$runs/fast_legibility"
if [ "${BENCH:-1}" = 1 ]; then
    step bench_fp32 "$python" scripts/bench_train_step.py --precision 32
    step bench_bf16 "$python" scripts/bench_train_step.py --precision bf16
fi
step quickstart_train timeout "${QUICKSTART_TIMEOUT:-600}" "$python" -m coconut.cli.train trainer=gpu \
    "hydra.run.dir=$runs/quickstart" &&
    step quickstart_eval "$python" -m coconut.cli.evaluate "ckpt_path=$runs/quickstart/checkpoints/last.ckpt" \
        "hydra.run.dir=$runs/quickstart_eval"
cat "$out/steps.log"
