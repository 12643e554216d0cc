#!/bin/bash
# Training in one process (one device).
#
#   bash scripts/run_standalone_train.sh [tools/train.py options ...]
#   e.g. bash scripts/run_standalone_train.sh --mindrecord data/coco_train --yolov5_version yolov5s \
#            --per_batch_size 16 --device_target CPU
#
# Every option goes to tools/train.py unchanged; --is_distributed 0 is added.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -x "$ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON=python
fi
exec "$PYTHON" "$ROOT/tools/train.py" --is_distributed 0 "$@"
