#!/usr/bin/env bash
# The legibility frontier (docs/legibility.md, "The legibility frontier"): what each step of
# readability costs in accuracy. Trains every legibility.weight (lambda) x thought projection x seed,
# evaluates each run's last checkpoint with coconut-eval, and plots accuracy against legibility, one
# point per (projection, lambda) with error bars over the seeds (scripts/legibility_frontier.py).
#
#   scripts/legibility_frontier.sh OUT [OVERRIDES FOR EVERY RUN...]
#
#   scripts/legibility_frontier.sh outputs/frontier                                  # the quickstart's arithmetic
#   scripts/legibility_frontier.sh outputs/frontier_graph experiment=graph_coconut \
#       'init_from=outputs/graph/runs/graph_stage0/seed{seed}/checkpoints/last.ckpt'   # frontier recall on graphs
#   WEIGHTS="0 0.1" PROJECTIONS=identity SEEDS=0 scripts/legibility_frontier.sh /tmp/f debug=fast   # a smoke test
#
# {seed} in an override is the run's seed (the graph methods continue the graph_stage0 run of theirs).
# Environment: WEIGHTS (default "0 0.03 0.1 0.3 1"), PROJECTIONS ("identity sparse_readout"), SEEDS
# ("0 1 2"), READ (legibility.read, of training and of evaluation: lm_head, or readout for the sparse_readout
# runs, which then read their thoughts by the readout too; default lm_head),
# BIN (the folder of coconut-train / coconut-eval / python; default .venv/bin). Runs write
# OUT/runs/<projection>_w<lambda>_s<seed>, evaluations OUT/eval/<same>, the plot OUT/plot/. A run
# whose evaluation exists is skipped, and an interrupted training resumes from its last checkpoint, so an
# interrupted sweep continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUT [OVERRIDES...]" >&2
    exit 2
fi
out=$1
shift
bin=${BIN:-.venv/bin}
read -r -a weights <<<"${WEIGHTS:-0 0.03 0.1 0.3 1}"
read -r -a projections <<<"${PROJECTIONS:-identity sparse_readout}"
read -r -a seeds <<<"${SEEDS:-0 1 2}"
read=${READ:-lm_head}

evaluations=()
for projection in "${projections[@]}"; do
    for weight in "${weights[@]}"; do
        for seed in "${seeds[@]}"; do
            name=${projection}_w${weight}_s${seed}
            evaluations+=("$out/eval/$name")
            [[ -f $out/eval/$name/report.json ]] && continue
            if [[ -d $out/runs/$name && ! -f $out/runs/$name/metrics.json ]]; then
                # An interrupted try: kept beside, and resumed from its last.ckpt (resume=auto finds it).
                mv "$out/runs/$name" "$out/runs/$name.interrupted-$(date +%s)"
            fi
            rm -rf "$out/eval/$name"  # an evaluation without its report.json
            run_read=$read
            [[ $projection == sparse_readout ]] || run_read=lm_head  # only sparse_readout has a readout
            overrides=("${@//\{seed\}/$seed}")  # {seed} in an override: this run's seed
            "$bin/coconut-train" ${overrides[@]+"${overrides[@]}"} "model/thought_projection=$projection" "legibility.weight=$weight" \
                "legibility.read=$run_read" "seed=$seed" test=false "hydra.run.dir=$out/runs/$name"
            "$bin/coconut-eval" "ckpt_path=$out/runs/$name/checkpoints/last.ckpt" "legibility.read=$run_read" \
                "hydra.run.dir=$out/eval/$name"
        done
    done
done
"$bin/python" scripts/legibility_frontier.py "${evaluations[@]}" --out "$out/plot"
