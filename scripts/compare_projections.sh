#!/usr/bin/env bash
# Thought projections side by side (the tables of docs/results.md, "Thought projections"): one stage-0 (chain of
# thought) model, then the latent stages trained from it once per projection (identity, linear,
# sparse_vocab with softmax k=4, sparse_vocab straight-through k=1), each evaluated at stage 1 and at
# its last stage, and scripts/compare.py over the evaluations.
#
#   scripts/compare_projections.sh OUT "STAGE0 OVERRIDES" "LATENT OVERRIDES" [OVERRIDES FOR BOTH...]
#
#   scripts/compare_projections.sh outputs/projections trainer.max_epochs=6 trainer.max_epochs=4   # the quickstart
#
# Every run writes its own folder under OUT. A stage-0 checkpoint given as STAGE0_CKPT=<.ckpt> is
# used instead of training one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 3 ]]; then
    echo "usage: $0 OUT \"STAGE0 OVERRIDES\" \"LATENT OVERRIDES\" [OVERRIDES FOR BOTH...]" >&2
    exit 2
fi
out=$1
read -r -a stage0_args <<<"${2:-}"
read -r -a latent_args <<<"${3:-}"
shift 3
bin=.venv/bin

stage0=${STAGE0_CKPT:-}
if [[ -z $stage0 ]]; then
    "$bin/coconut-train" "$@" "${stage0_args[@]}" test=false \
        "hydra.run.dir=$out/stage0"
    stage0=$out/stage0/checkpoints/stage0-best.ckpt
fi

declare -A projections=(
    [identity]="model/thought_projection=identity"
    [linear]="model/thought_projection=linear"
    [sparse_vocab_k4]="model/thought_projection=sparse_vocab"
    [sparse_vocab_st_k1]="model/thought_projection=sparse_vocab model.thought_projection.mode=straight_through model.thought_projection.k=1"
)
evaluations=()
for name in identity linear sparse_vocab_k4 sparse_vocab_st_k1; do
    read -r -a projection <<<"${projections[$name]}"
    "$bin/coconut-train" "$@" "${latent_args[@]}" "${projection[@]}" "init_from=$stage0" curriculum.start_stage=1 \
        "hydra.run.dir=$out/$name"
    for checkpoint in stage1-best last; do
        "$bin/coconut-eval" "ckpt_path=$out/$name/checkpoints/$checkpoint.ckpt" "hydra.run.dir=$out/eval/$name-$checkpoint"
        evaluations+=("$out/eval/$name-$checkpoint")
    done
done
"$bin/python" scripts/compare.py "${evaluations[@]}" --out "$out/compare"
