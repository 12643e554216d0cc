#!/bin/bash
# Data-parallel training on N devices of this machine with msrun (MindSpore's launcher).
#
#   bash scripts/run_distribute_train.sh N [tools/train.py options ...]
#   e.g. bash scripts/run_distribute_train.sh 8 --mindrecord data/coco_train --yolov5_version yolov5s \
#            --per_batch_size 16 --lr 0.02 --max_epoch 300 --warmup_epochs 20
#
# Every option after N goes to tools/train.py unchanged; --is_distributed 1 is added. Each rank reads
# its part of every global batch (N x --per_batch_size images) and the gradients are averaged.
#
# Environment (all optional):
#   MASTER_PORT      scheduler port (default 8118)
#   MASTER_ADDR      scheduler address for several machines (default 127.0.0.1)
#   WORKER_NUM       total number of processes over all machines (default N, one machine)
#   NODE_RANK        this machine's index when WORKER_NUM > N
#   LOG_DIR          per-worker logs worker_<rank>.log (default ./msrun_log)
#   RANK_TABLE_FILE  Ascend: a rank table JSON as the reference used; passed to msrun --rank_table_file
#                    (msrun's dynamic cluster needs none; HCCL is initialised by mindspore.communication)
# On CPU the processes communicate through MindSpore's MCCL; on Ascend through HCCL, on GPU through NCCL.
set -euo pipefail

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash $0 NUM_DEVICES [tools/train.py options ...]" >&2
    echo "  e.g. bash $0 8 --mindrecord data/coco_train --yolov5_version yolov5s" >&2
    exit 2
fi
LOCAL_WORKERS=$1
shift

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# msrun starts the workers with the python found on PATH: use the project's virtual environment
if [ -f "$ROOT/.venv/bin/activate" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    # shellcheck disable=SC1091
    source "$ROOT/.venv/bin/activate"
fi
if ! command -v msrun >/dev/null 2>&1; then
    echo "msrun not found on PATH; install mindspore (pip install mindspore==2.8.0) or activate its environment" >&2
    exit 2
fi

ARGS=(--worker_num="${WORKER_NUM:-$LOCAL_WORKERS}" --local_worker_num="$LOCAL_WORKERS"
      --master_port="${MASTER_PORT:-8118}" --log_dir="${LOG_DIR:-msrun_log}" --join=True)
if [ -n "${MASTER_ADDR:-}" ]; then ARGS+=(--master_addr="$MASTER_ADDR"); fi
if [ -n "${NODE_RANK:-}" ]; then ARGS+=(--node_rank="$NODE_RANK"); fi
if [ -n "${RANK_TABLE_FILE:-}" ]; then
    if [ ! -f "$RANK_TABLE_FILE" ]; then
        echo "RANK_TABLE_FILE=$RANK_TABLE_FILE does not exist" >&2
        exit 2
    fi
    ARGS+=(--rank_table_file="$RANK_TABLE_FILE")
fi

echo "msrun ${ARGS[*]} $ROOT/tools/train.py --is_distributed 1 $*"
echo "worker logs: ${LOG_DIR:-msrun_log}/worker_<rank>.log"
exec msrun "${ARGS[@]}" "$ROOT/tools/train.py" --is_distributed 1 "$@"
