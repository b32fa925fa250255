#!/usr/bin/env bash
# Methods side by side over seeds, all at the same number of updates (the graph and quickstart
# tables of docs/results.md): each experiment preset trained once per seed, its last checkpoint
# evaluated (accuracy, tokens, legibility, the frontier on graph questions, ablations), then
# scripts/aggregate.py over the training runs (per-stage val/acc, mean ± std over seeds) and
# scripts/compare.py over the evaluations.
#
#   scripts/compare_methods.sh OUT "EXPERIMENTS" "SEEDS" [OVERRIDES FOR EVERY RUN...]
#
#   scripts/compare_methods.sh outputs/quickstart "cpu_quickstart" "0 1 2" method=no_cot   # a baseline of the quickstart
#
# {seed} in an override is the run's seed, for runs that continue one of the same seed: the graph
# methods continue graph_stage0 (conf/experiment/graph_stage0.yaml),
#
#   scripts/compare_methods.sh outputs/graph "graph_stage0" "0 1 2"
#   scripts/compare_methods.sh outputs/graph "graph_coconut graph_cot graph_no_cot graph_pause_as_thought" "0 1 2" \
#       'init_from=outputs/graph/runs/graph_stage0/seed{seed}/checkpoints/last.ckpt'
#
# The evaluations read the run's own test split; EVAL_OVERRIDES (space-separated coconut-eval overrides)
# evaluates elsewhere, into OUT/$EVAL_NAME/ (default eval), e.g. the ProsQA presets on the published files:
#
#   EVAL_NAME=eval_valid EVAL_OVERRIDES="split=val" scripts/compare_methods.sh outputs/prosqa "prosqa_cpu_coconut" "0 1 2" ...
#
# Every run writes its own folder, OUT/runs/<experiment>/seed<k> and OUT/eval/<experiment>-seed<k>;
# run again, the script skips what is already there (a finished training, a written report) and
# resumes an interrupted training from its last checkpoint, so a comparison continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 3 ]]; then
    echo "usage: $0 OUT \"EXPERIMENTS\" \"SEEDS\" [OVERRIDES...]" >&2
    exit 2
fi
out=$1
read -r -a experiments <<<"$2"
read -r -a seeds <<<"$3"
shift 3
bin=${BIN:-.venv/bin}  # the folder of coconut-train, coconut-eval and python
read -r -a eval_overrides <<<"${EVAL_OVERRIDES:-}"
eval_name=${EVAL_NAME:-eval}

evaluations=()
for experiment in "${experiments[@]}"; do
    for seed in "${seeds[@]}"; do
        run=$out/runs/$experiment/seed$seed
        if [[ ! -f $run/metrics.json ]]; then
            if [[ -d $run ]]; then
                # An interrupted training: kept beside, and resumed from its last.ckpt (resume=auto finds it).
                mv "$run" "$run.interrupted-$(date +%s)"
            fi
            overrides=("${@//\{seed\}/$seed}")
            "$bin/coconut-train" "experiment=$experiment" "seed=$seed" ${overrides[@]+"${overrides[@]}"} test=false \
                "hydra.run.dir=$run"
        fi
        evaluation=$out/$eval_name/$experiment-seed$seed
        if [[ ! -f $evaluation/report.json ]]; then
            "$bin/coconut-eval" "ckpt_path=$run/checkpoints/last.ckpt" ${eval_overrides[@]+"${eval_overrides[@]}"} \
                "hydra.run.dir=$evaluation"
        fi
        evaluations+=("$evaluation")
    done
done
"$bin/python" scripts/aggregate.py "$out/runs" | tee "$out/aggregate.md"
"$bin/python" scripts/compare.py "${evaluations[@]}" --out "$out/compare${eval_name#eval}"
