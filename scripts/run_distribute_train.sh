#!/bin/bash
# Data-parallel training with msrun (MindSpore's launcher): N processes on this machine, or N on each
# of several machines (nodes).
#
#   bash scripts/run_distribute_train.sh N [--num_nodes K --node_rank R --master_addr HOST]
#                                          [--master_port PORT] [tools/train.py options ...]
#
# One machine (as before):
#   bash scripts/run_distribute_train.sh 8 --mindrecord data/coco_train --yolov5_version yolov5s \
#            --per_batch_size 16 --lr 0.02 --max_epoch 300 --warmup_epochs 20
# Two machines of 8 devices (16 ranks), the same command on each, only --node_rank differs:
#   node 0 (10.0.0.1):  bash scripts/run_distribute_train.sh 8 --num_nodes 2 --node_rank 0 \
#                           --master_addr 10.0.0.1 --mindrecord /shared/coco_train ...
#   node 1:             bash scripts/run_distribute_train.sh 8 --num_nodes 2 --node_rank 1 \
#                           --master_addr 10.0.0.1 --mindrecord /shared/coco_train ...
#
#   N              processes on this node (devices used here)
#   --num_nodes    number of nodes K (default 1); the world size is N x K, ranks R*N .. R*N+N-1 run here
#   --node_rank    this node's index 0..K-1 (needed when K > 1)
#   --master_addr  address of node 0, where msrun starts the scheduler (needed when K > 1; every node
#                  must reach it); msrun starts the scheduler on the node that owns this address
#   --master_port  scheduler port (default 8118, the same on every node)
# These four may stand anywhere among the options; every other option goes to tools/train.py unchanged,
# and --is_distributed 1 is added. Each rank reads its part of every global batch (N x K x
# --per_batch_size images) and the gradients are averaged.
#
# Data on several nodes: --mindrecord (and --val_mindrecord) must name the same converted folder on
# every node: shared storage mounted at the same path, or identical copies. Before building the network
# every rank checks the files it reads against manifest.json and all ranks compare dataset id and
# manifest; on a mismatch every rank stops (exit 2) naming node, rank and file (README, "Training on
# several nodes").
#
# Environment (all optional; the flags above win):
#   MASTER_PORT, MASTER_ADDR, NODE_RANK  as the flags
#   WORKER_NUM       total number of processes over all nodes (older spelling of N x --num_nodes)
#   LOG_DIR          per-worker logs worker_<rank>.log (default ./msrun_log)
#   RANK_TABLE_FILE  Ascend: a rank table JSON as the reference used; passed to msrun --rank_table_file
#                    (msrun's dynamic cluster needs none; HCCL is initialised by mindspore.communication)
# On CPU the processes communicate through MindSpore's MCCL; on Ascend through HCCL, on GPU through NCCL.
set -euo pipefail

usage() {
    echo "usage: bash $0 NUM_DEVICES [--num_nodes K --node_rank R --master_addr HOST] [--master_port PORT]" \
         "[tools/train.py options ...]" >&2
    echo "  e.g. bash $0 8 --mindrecord data/coco_train --yolov5_version yolov5s" >&2
    exit 2
}
fail() { echo "$0: $*" >&2; exit 2; }

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
    usage
fi
LOCAL_WORKERS=$1
shift

NUM_NODES="" NODE_RANK_ARG="${NODE_RANK:-}" MASTER_ADDR_ARG="${MASTER_ADDR:-}" MASTER_PORT_ARG="${MASTER_PORT:-8118}"
TRAIN_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --num_nodes|--node_rank|--master_addr|--master_port)
            [ $# -ge 2 ] || fail "$1 needs a value"
            name=$1 value=$2; shift 2 ;;
        --num_nodes=*|--node_rank=*|--master_addr=*|--master_port=*)
            name=${1%%=*} value=${1#*=}; shift ;;
        *)
            TRAIN_ARGS+=("$1"); shift; continue ;;
    esac
    case "$name" in
        --num_nodes) NUM_NODES=$value ;;
        --node_rank) NODE_RANK_ARG=$value ;;
        --master_addr) MASTER_ADDR_ARG=$value ;;
        --master_port) MASTER_PORT_ARG=$value ;;
    esac
done

# world size: N x --num_nodes, or WORKER_NUM (older spelling; the node count then stays msrun's business)
if [ -n "$NUM_NODES" ]; then
    [[ "$NUM_NODES" =~ ^[1-9][0-9]*$ ]] || fail "--num_nodes must be a positive integer, got '$NUM_NODES'"
    WORLD_SIZE=$((LOCAL_WORKERS * NUM_NODES))
    if [ -n "${WORKER_NUM:-}" ] && [ "$WORKER_NUM" != "$WORLD_SIZE" ]; then
        fail "WORKER_NUM=$WORKER_NUM but $LOCAL_WORKERS processes per node x --num_nodes $NUM_NODES = $WORLD_SIZE;" \
             "unset WORKER_NUM"
    fi
    if [ "$NUM_NODES" -gt 1 ]; then
        [ -n "$NODE_RANK_ARG" ] || fail "--node_rank is needed with $NUM_NODES nodes (0 on the node of --master_addr)"
        [ -n "$MASTER_ADDR_ARG" ] || fail "--master_addr is needed with $NUM_NODES nodes: the address of node 0"
    fi
    if [ -n "$NODE_RANK_ARG" ]; then
        [[ "$NODE_RANK_ARG" =~ ^[0-9]+$ ]] && [ "$NODE_RANK_ARG" -lt "$NUM_NODES" ] ||
            fail "--node_rank must be 0..$((NUM_NODES - 1)) with $NUM_NODES node(s), got '$NODE_RANK_ARG'"
    fi
else
    WORLD_SIZE=${WORKER_NUM:-$LOCAL_WORKERS}
    [[ "$WORLD_SIZE" =~ ^[1-9][0-9]*$ ]] && [ "$WORLD_SIZE" -ge "$LOCAL_WORKERS" ] ||
        fail "WORKER_NUM=$WORLD_SIZE must be a number of processes of at least $LOCAL_WORKERS (the processes here)"
    [ -z "$NODE_RANK_ARG" ] || [[ "$NODE_RANK_ARG" =~ ^[0-9]+$ ]] ||
        fail "--node_rank must be a node index 0, 1, ..., got '$NODE_RANK_ARG'"
fi
[[ "$MASTER_PORT_ARG" =~ ^[1-9][0-9]*$ ]] || fail "--master_port must be a port number, got '$MASTER_PORT_ARG'"

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

ARGS=(--worker_num="$WORLD_SIZE" --local_worker_num="$LOCAL_WORKERS"
      --master_port="$MASTER_PORT_ARG" --log_dir="${LOG_DIR:-msrun_log}" --join=True)
if [ -n "$MASTER_ADDR_ARG" ]; then ARGS+=(--master_addr="$MASTER_ADDR_ARG"); fi
if [ -n "$NODE_RANK_ARG" ]; then ARGS+=(--node_rank="$NODE_RANK_ARG"); fi
if [ -n "${RANK_TABLE_FILE:-}" ]; then
    if [ ! -f "$RANK_TABLE_FILE" ]; then
        echo "RANK_TABLE_FILE=$RANK_TABLE_FILE does not exist" >&2
        exit 2
    fi
    ARGS+=(--rank_table_file="$RANK_TABLE_FILE")
fi

if [ -n "$NUM_NODES" ] && [ "$NUM_NODES" -gt 1 ]; then
    FIRST=$((NODE_RANK_ARG * LOCAL_WORKERS))
    echo "node $NODE_RANK_ARG of $NUM_NODES: ranks $FIRST..$((FIRST + LOCAL_WORKERS - 1)) of $WORLD_SIZE here," \
         "scheduler at $MASTER_ADDR_ARG:$MASTER_PORT_ARG"
fi
echo "msrun ${ARGS[*]} $ROOT/tools/train.py --is_distributed 1 ${TRAIN_ARGS[*]}"
echo "worker logs: ${LOG_DIR:-msrun_log}/worker_<rank>.log"
exec msrun "${ARGS[@]}" "$ROOT/tools/train.py" --is_distributed 1 "${TRAIN_ARGS[@]}"
