#!/usr/bin/env bash
# CI smoke benchmark: two tiny random-init BERT QA models (benchmarks/make_tiny_models.py) on the first
# 50 questions of SQuAD dev-v1.1, compared with the committed benchmarks/ci_baseline/bench.json.
# Prints report.md (and appends it to $GITHUB_STEP_SUMMARY when set); exits 1 on a regression,
# 2 on bad input. `benchmarks/ci_smoke.sh --update-baseline` re-measures and rewrites the baseline.
#
# Quality is bit-stable (fixed seeds, fp32), so EM/F1 use the recipe's 1-point tolerance. Speed and
# memory are judged only as student/teacher ratios measured in the same run, with 1 torch thread
# (multi-threaded timings on a shared 2-core machine are erratic) and a 40% margin: re-runs here
# moved these ratios by up to ~10%; a student made 2x slower moves its throughput ratio by 100%.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-.venv/bin/python}
DATA=../shared/data/squad/dev-v1.1.json
BASELINE=benchmarks/ci_baseline/bench.json
OUT=${BENCH_OUT:-benchmarks/results/ci_smoke_work}  # git-ignored

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" benchmarks/make_tiny_models.py "$work/models" >/dev/null

args=(bench --teacher "$work/models/teacher" --student "$work/models/student" --data "$DATA"
      --max-questions 50 --batch-sizes 1,4 --seq-len 256 --doc-stride 96 --precision fp32 --threads 1
      --warmup 2 --min-iters 10 --min-seconds 1.0 --max-ratio-increase 0.4 --no-progress --out "$OUT")

if [ "${1:-}" = "--update-baseline" ]; then
    "$PY" -m distill "${args[@]}"
    mkdir -p "$(dirname "$BASELINE")"
    cp "$OUT/bench.json" "$BASELINE"
    cp "$OUT/bench.md" "$(dirname "$BASELINE")/bench.md"
    echo "baseline updated: $BASELINE"
    exit 0
fi

rc=0
"$PY" -m distill "${args[@]}" --baseline "$BASELINE" || rc=$?
if [ -f "$OUT/report.md" ] && [ "$rc" -le 1 ]; then
    cat "$OUT/report.md"
    if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat "$OUT/report.md" >> "$GITHUB_STEP_SUMMARY"; fi
fi
exit "$rc"
