#!/usr/bin/env bash
# Export a YOLOv5 checkpoint for deployment, as the reference's export step:
#
#   bash scripts/run_export.sh CKPT [FILE_FORMAT] [FILE_NAME] [extra tools/export.py flags...]
#
# CKPT: a checkpoint of tools/train.py (it records the model size and class count; for a plain
# weights file add --yolov5_version V --num_classes N). FILE_FORMAT: MINDIR (default), ONNX or AIR
# (AIR needs an Ascend device). FILE_NAME: output name without suffix (default yolov5 in the current
# folder). TESTING_SHAPE (default 640), BATCH_SIZE (default 1) and DEVICE_TARGET (default CPU) may be
# set in the environment. Uses the project's .venv python when it exists.
# Exit code: tools/export.py's (0 written, 2 user error, 1 unexpected).
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: bash scripts/run_export.sh CKPT [MINDIR|ONNX|AIR] [FILE_NAME] [extra tools/export.py flags]" >&2
    exit 2
fi
project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checkpoint="$1"
file_format="${2:-MINDIR}"
file_name="${3:-yolov5}"
shift $(( $# < 3 ? $# : 3 ))
python="$project_root/.venv/bin/python"
if [ ! -x "$python" ]; then
    python="$(command -v python3 || command -v python)"
fi
exec "$python" "$project_root/tools/export.py" --ckpt_file "$checkpoint" --file_format "$file_format" \
    --file_name "$file_name" --testing_shape "${TESTING_SHAPE:-640}" --batch_size "${BATCH_SIZE:-1}" \
    --device_target "${DEVICE_TARGET:-CPU}" "$@"
