"""Two msrun CPU workers train exactly like one process that averages the same two micro-batches.

scripts/run_distribute_train.sh starts 2 ranks of tools/train.py (1 image each per step, default
augmentation) for the 2 steps of one epoch on 4 synthetic images. The reference runs in this process
with the same settings: for every global batch it computes the gradients of rank 1's and rank 0's
micro-batch separately (BatchNorm normalises each micro-batch on its own, so one batch of 2 would
differ), averages them as DistributedGradReducer does ((g0 + g1) * 0.5), and applies one update. Rank 0's
BatchNorm moving statistics see only its own micro-batch, so the reference restores them after rank 1's
forward pass. Rank 0's checkpoint must then equal the reference in every entry.

Two "nodes" on this machine (two launches of the script with ``--num_nodes 2``, one process each) must
end exactly like that one-node run; and when node 1's copy of the shards is damaged, both launches stop
before building the network, naming node 1's rank, host and file (yolomodel/data_contract.py).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from yolodata.convert import convert_coco
from yolodata.synthetic import make_synthetic_coco
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train.loop import step_inputs

# starts msrun and compiles yolov5n; under pytest-xdist the module runs on one worker (its data is made once)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("msrun")]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_distribute_train.sh"
SETTINGS = dict(yolov5_version="yolov5n", training_shape=64, per_batch_size=1, lr=0.01, max_epoch=1, seed=3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist_data")
    synthetic = make_synthetic_coco(root / "syn", num_images=7, seed=7, image_size=(96, 128), val_fraction=0.4,
                                    background_fraction=0.0)
    out = root / "shards"
    convert_coco(synthetic.image_dir, synthetic.train_json, out, shard_num=2)
    convert_coco(synthetic.image_dir, synthetic.val_json, root / "val")
    assert (synthetic.num_train, synthetic.num_val) == (4, 3)
    return out


def train_flags(shards: Path, out: Path, validate: bool = True) -> list[str]:
    """The tools/train.py options of every msrun run here (one node or two); ``validate``: with the
    validation shards (validation reads the EMA weights and changes no trained value)."""
    flags = ["--mindrecord", str(shards), "--yolov5_version", SETTINGS["yolov5_version"],
             "--training_shape", str(SETTINGS["training_shape"]), "--per_batch_size", str(SETTINGS["per_batch_size"]),
             "--lr", str(SETTINGS["lr"]), "--max_epoch", str(SETTINGS["max_epoch"]), "--warmup_epochs", "0",
             "--seed", str(SETTINGS["seed"]), "--log_interval", "1", "--ckpt_path", str(out / "ckpt"),
             "--num_parallel_workers", "1",
             "--noautoanchor"]   # the single-process reference below builds its network with YOLOv5's anchors
    if validate:
        flags += ["--val_mindrecord", str(shards.parent / "val"), "--testing_shape", "64", "--val_per_batch_size", "1"]
    return flags


def launch_env(log_dir: Path, **extra) -> dict:
    """The environment of scripts/run_distribute_train.sh: this python's msrun (and msrun's python) first
    on PATH, since without the project's .venv the script takes them from PATH."""
    env = dict(os.environ, LOG_DIR=str(log_dir),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


def worker_logs(*log_dirs: Path) -> dict:
    return {p.name: p.read_text() for log_dir in log_dirs for p in Path(log_dir).glob("worker_*.log")}


@pytest.fixture(scope="module")
def two_rank_run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_run")
    env = launch_env(out / "msrun_log", MASTER_PORT=str(free_port()))
    result = subprocess.run(["bash", str(SCRIPT), "2", *train_flags(shards, out)], cwd=out, env=env,
                            capture_output=True, text=True, timeout=500)
    return out, result, worker_logs(out / "msrun_log")


def reference_parameters(shards) -> dict:
    """name -> numpy value of every parameter after the one-process run that averages micro-batch gradients."""
    import mindspore as ms
    from mindspore import Tensor

    from yolodata.manifest import load_manifest
    from yolodata.pipeline import create_train_dataset
    from yolodata.pipeline.sampler import steps_per_epoch
    from yolomodel.train import builder
    from yolomodel.train.lr_schedule import build_lr_schedule

    ms.set_context(mode=ms.GRAPH_MODE)
    manifest = load_manifest(shards)
    steps = steps_per_epoch(manifest.num_images, 2 * SETTINGS["per_batch_size"])
    lr = build_lr_schedule(lr_scheduler="cosine_annealing", lr=SETTINGS["lr"], steps_per_epoch=steps,
                           warmup_epochs=0, max_epoch=SETTINGS["max_epoch"], t_max=320)
    parts = builder.build_train_step(
        yolov5_version=SETTINGS["yolov5_version"], num_classes=manifest.num_classes,
        training_shape=SETTINGS["training_shape"], momentum=0.9, weight_decay=0.0005,
        loss_scale=builder.step_lib.default_loss_scale("O0"),   # tools/train.py's default on CPU
        loss_scale_type="static", label_smooth_factor=0.0, iou_type="ciou", seed=SETTINGS["seed"])
    forward_backward = parts.train_step.forward_backward
    apply_gradients = parts.train_step.apply_gradients
    moving = [p for p in parts.network.get_parameters() if "moving_" in p.name]
    datasets = [create_train_dataset(shards, per_batch_size=SETTINGS["per_batch_size"],
                                     training_shape=SETTINGS["training_shape"], resize_rate=0, num_parallel_workers=1,
                                     rank=rank, group_size=2, seed=SETTINGS["seed"], num_epochs=1)
                for rank in (0, 1)]
    iterators = [d.create_tuple_iterator(num_epochs=1, output_numpy=True) for d in datasets]
    for step, (batch0, batch1) in enumerate(zip(*iterators)):
        scale = parts.loss_scale.scale * 1.0
        saved_moving = [p.asnumpy().copy() for p in moving]
        parts1, grads1 = forward_backward(scale, *[Tensor(column) for column in step_inputs(batch1)])
        for param, value in zip(moving, saved_moving):
            param.set_data(Tensor(value))
        parts0, grads0 = forward_backward(scale, *[Tensor(column) for column in step_inputs(batch0)])
        grads = tuple((a + b) * Tensor(np.float32(0.5)) for a, b in zip(grads0, grads1))
        finite = apply_gradients(grads, (parts0 + parts1) / 2, Tensor(lr[step]))
        assert bool(finite.asnumpy())
    assert step + 1 == steps
    return {p.name: p.asnumpy() for p in parts.train_step.get_parameters()}


@pytest.mark.slow
def test_two_ranks_equal_one_process_averaging_their_micro_batches(two_rank_run, shards):
    out, result, logs = two_rank_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + str(logs)[-3000:]
    assert sorted(logs) == ["worker_0.log", "worker_1.log"]
    rank0 = logs["worker_0.log"]
    assert "2 steps per epoch of 2 images (2 rank(s) x 1)" in rank0
    assert "epoch[0], iter[1], loss:" in rank0 and "iter[" not in logs["worker_1.log"]   # rank 0 logs
    assert not (out / "ckpt" / "ckpt_1").exists()                                        # is_save_on_master 1
    # validation: 3 val images over 2 ranks (2 and 1, rank 1 padded), every image counted once, rank 0 writes
    assert "validation epoch 1/1:" in rank0 and "; 3 images in " in rank0
    assert (out / "ckpt" / "results.csv").read_text().count("\n") == 2 and (out / "ckpt" / "ckpt_0" / "best.ckpt").exists()
    # rank 0 alone writes the batch pictures and the best epoch's per-class report, and lists them
    assert all((out / "ckpt" / name).is_file() for name in ("train_batch0.jpg", "train_batch1.jpg", "per_class.csv",
                                                            "val_batch0_pred.jpg", "confusion_matrix.png"))
    assert "pictures and reports in" in rank0 and "pictures and reports in" not in logs["worker_1.log"]
    saved, metadata = ckpt_lib.read_checkpoint(out / "ckpt" / "ckpt_0" / "last.ckpt")
    assert (metadata["epoch"], metadata["step"], metadata["global_batch_size"]) == (1, 0, 2)

    expected = reference_parameters(shards)
    compared = [name for name in saved if name in expected]
    assert len(compared) == len(saved)
    worst = {}
    for name in compared:
        got, want = saved[name].asnumpy(), expected[name]
        worst[name] = float(np.max(np.abs(got - want) / (np.abs(want) + 1e-3))) if got.size else 0.0
    print("largest relative difference:", max(worst.values()), "bitwise equal:",
          sum(np.array_equal(saved[n].asnumpy(), expected[n]) for n in compared), "of", len(compared))
    assert max(worst.values()) < 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    # the comparison means something: two steps moved the weights away from the initial ones (a few BN
    # gammas deep in the stride-32 path get updates below float32 resolution at 1.0 in two steps)
    from yolomodel.network import create_yolov5

    initial = {p.name: p.asnumpy() for p in create_yolov5(SETTINGS["yolov5_version"], metadata["num_classes"],
                                                          seed=SETTINGS["seed"]).trainable_params()}
    unchanged = [n for n, v in initial.items() if np.array_equal(v, saved[n].asnumpy())]
    assert len(unchanged) < 0.1 * len(initial) and not any(n.startswith("head.") for n in unchanged), unchanged


# ---------------------------------------------------------------------------------------------
# Two "nodes" on this machine: two launches of the script, one msrun worker each
# ---------------------------------------------------------------------------------------------

def not_the_master_host(folder: Path) -> Path:
    """A folder holding an ``ip`` command that lists no address of this machine.

    msrun starts the scheduler on every node that owns --master_addr, which it finds out with
    ``ip -j addr``. On a second machine node 0's address is not among them; here both "nodes" own
    127.0.0.1, so node 1's launch gets this ``ip`` first on PATH and, like a second machine, only joins.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fake_ip = folder / "ip"
    fake_ip.write_text("#!/bin/sh\necho '[]'\n")
    fake_ip.chmod(0o755)
    return folder


def run_two_nodes(shards_of_node: tuple[Path, Path], out: Path, *, validate: bool = True,
                  timeout: float = 500) -> list[dict]:
    """Launch node 0 and node 1 (``--num_nodes 2``, one process each, same master address and port) at
    once, each reading its own ``shards_of_node`` path; wait for both. Per node: returncode, output, logs."""
    port = str(free_port())
    launches = []
    for node, shards in enumerate(shards_of_node):
        log_dir = out / f"node{node}_log"
        extra = {} if node == 0 else {"PATH": f"{not_the_master_host(out / 'node1_bin')}{os.pathsep}"
                                              f"{launch_env(log_dir)['PATH']}"}
        command = ["bash", str(SCRIPT), "1", "--num_nodes", "2", "--node_rank", str(node), "--master_addr",
                   "127.0.0.1", "--master_port", port, *train_flags(shards, out, validate)]
        launches.append((log_dir, subprocess.Popen(command, cwd=out, env=launch_env(log_dir, **extra),
                                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    results = []
    for log_dir, process in launches:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for _, other in launches:   # msrun stops its workers on SIGINT
                other.send_signal(signal.SIGINT)
            raise
        results.append({"returncode": process.returncode, "output": output, "logs": worker_logs(log_dir)})
    return results


def losses(log: str) -> list[str]:
    """Rank 0's step lines without their timings (fps, data wait and step time differ from run to run)."""
    lines = re.findall(r"epoch\[\d+\], iter\[\d+\], loss:.*", log)
    return [re.sub(r", fps:[^,]*|, data_wait:.*", "", line) for line in lines]


@pytest.mark.slow
def test_two_nodes_end_equal_to_one_node(two_rank_run, shards, tmp_path):
    """``--worker_num 2 --local_worker_num 1`` on node ranks 0 and 1 against ``--worker_num 2
    --local_worker_num 2`` (the one-node run above): the same two processes' computation, placed
    differently, so the logged losses and every checkpoint entry must be bitwise equal (the all-reduce of
    two values is one float32 addition, which is commutative)."""
    one_node_out, one_node, one_node_logs = two_rank_run
    assert one_node.returncode == 0, one_node.stdout[-3000:]
    node0, node1 = run_two_nodes((shards, shards), tmp_path, validate=False)   # validation: above
    for node in (node0, node1):
        assert node["returncode"] == 0, node["output"][-3000:] + str(node["logs"])[-3000:]
    assert sorted(node0["logs"]) == ["worker_0.log"] and sorted(node1["logs"]) == ["worker_1.log"]
    rank0, rank1 = node0["logs"]["worker_0.log"], node1["logs"]["worker_1.log"]
    assert "node 1 of 2: ranks 1..1 of 2 here, scheduler at 127.0.0.1:" in node1["output"]
    assert (tmp_path / "node0_log" / "scheduler.log").is_file()       # node 0 alone ran the scheduler
    assert not (tmp_path / "node1_log" / "scheduler.log").exists()
    for log in (rank0, rank1):
        assert "data check: 2 rank(s) on 1 node(s) read the same data: --mindrecord dataset " in log
    assert "2 steps per epoch of 2 images (2 rank(s) x 1)" in rank0
    assert len(losses(rank0)) == 2 and losses(rank0) == losses(one_node_logs["worker_0.log"])
    two_nodes, metadata = ckpt_lib.read_checkpoint(tmp_path / "ckpt" / "ckpt_0" / "last.ckpt")
    one_node_saved, _ = ckpt_lib.read_checkpoint(one_node_out / "ckpt" / "ckpt_0" / "last.ckpt")
    assert (metadata["epoch"], metadata["step"], metadata["global_batch_size"]) == (1, 0, 2)
    assert sorted(two_nodes) == sorted(one_node_saved) and len(two_nodes) > 100
    differing = [name for name in two_nodes if not np.array_equal(two_nodes[name].asnumpy(),
                                                                   one_node_saved[name].asnumpy())]
    assert differing == []


@pytest.mark.slow
def test_a_node_with_a_damaged_copy_stops_both_nodes_naming_node_and_file(shards, tmp_path):
    """Node 1 holds its own copy of the shards, one file cut short: both launches end with exit status
    non-zero, and each node's log names node 1's rank, host and file (the check runs before any network
    is built, so no rank waits for another)."""
    copy = tmp_path / "node1_copy" / "shards"
    for folder, target in ((shards, copy), (shards.parent / "val", copy.parent / "val")):
        target.mkdir(parents=True)
        for path in folder.iterdir():   # sparse: a MindRecord file is mostly holes
            subprocess.run(["cp", "--sparse=always", str(path), str(target / path.name)], check=True)
    damaged = copy / "data.mindrecord1"
    expected_bytes = damaged.stat().st_size
    os.truncate(damaged, expected_bytes - 4096)
    node0, node1 = run_two_nodes((shards, copy), tmp_path, timeout=300)
    expected = (f"rank 1 on node {socket.gethostname()}: {damaged} has {expected_bytes - 4096} bytes, "
                f"manifest.json says {expected_bytes}")
    for node, log_name in ((node0, "worker_0.log"), (node1, "worker_1.log")):
        assert node["returncode"] != 0
        log = node["logs"][log_name]
        assert "the training data is not the same complete set on every rank" in log and expected in log, log[-3000:]
        assert "epoch[" not in log and "steps per epoch" not in log
    assert "rank 0 on node" not in node0["logs"]["worker_0.log"].split("not the same complete set")[1]
