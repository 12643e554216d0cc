#!/usr/bin/env bash
# Evaluate a YOLOv5 checkpoint on a converted val folder, as the reference's run_eval.sh did:
#
#   bash scripts/run_eval.sh DATASET CKPT [extra tools/eval.py flags...]
#
# DATASET: a folder written by tools/coco2mindrecord.py (MindRecord shards + manifest.json +
# annotations.json). CKPT: a checkpoint of tools/train.py. TESTING_SHAPE (default 640) and DEVICE_TARGET
# (default CPU) may be set in the environment. The 12 COCO lines and the time are printed and also
# written to EVAL_OUTPUT_DIR/log.txt, the detections to EVAL_OUTPUT_DIR/results.json (EVAL_OUTPUT_DIR
# defaults to outputs/eval in the project). Uses the project's .venv python when it exists.
# Exit code: tools/eval.py's (0 done, 2 user error, 1 unexpected).
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: bash scripts/run_eval.sh DATASET CKPT [extra tools/eval.py flags]" >&2
    exit 2
fi
project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dataset="$(realpath -m "$1")"
checkpoint="$(realpath -m "$2")"
shift 2
if [ ! -d "$dataset" ]; then
    echo "error: DATASET $dataset is not a folder (convert one with tools/coco2mindrecord.py)" >&2
    exit 2
fi
if [ ! -f "$checkpoint" ]; then
    echo "error: CKPT $checkpoint is not a file" >&2
    exit 2
fi
python="$project_root/.venv/bin/python"
if [ ! -x "$python" ]; then
    python="$(command -v python3 || command -v python)"
fi
log_dir="$(realpath -m "${EVAL_OUTPUT_DIR:-$project_root/outputs/eval}")"
mkdir -p "$log_dir"
echo "evaluating $checkpoint on $dataset; log: $log_dir/log.txt"
"$python" "$project_root/tools/eval.py" --mindrecord "$dataset" --pretrained "$checkpoint" \
    --testing_shape "${TESTING_SHAPE:-640}" --device_target "${DEVICE_TARGET:-CPU}" \
    --results_file "$log_dir/results.json" "$@" 2>&1 | tee "$log_dir/log.txt"
