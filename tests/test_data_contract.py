"""The data contract of distributed runs (yolomodel/data_contract.py; a training run's folders:
yolomodel/train/data_contract.py; distributed evaluation: yolomodel/cli/eval.py), without msrun.

Each rank's local check on a real converted folder and on copies damaged the ways a copy to another node
goes wrong, the reports' trip through int32 words, and how the reports of several ranks combine into
the one message every rank raises. tests/test_train_distributed.py runs the collective itself with msrun.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from yolodata.convert import convert_coco
from yolodata.manifest import read_manifest
from yolodata.synthetic import make_synthetic_coco
from yolomodel.device import DeviceGroup, SINGLE_PROCESS
from yolomodel.train import config as config_lib
from yolomodel import data_contract
from yolomodel.cli import eval as eval_cli
from yolomodel.data_contract import DataContractError, FolderIdentity, RankReport
from yolomodel.train import data_contract as training_contract


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A converted folder of 4 tiny images in 2 shard files (2 rows each)."""
    root = tmp_path_factory.mktemp("contract")
    synthetic = make_synthetic_coco(root / "syn", num_images=4, seed=5, image_size=(64, 80), val_fraction=0.0,
                                    background_fraction=0.0)
    convert_coco(synthetic.image_dir, synthetic.train_json, root / "shards", shard_num=2)
    return root / "shards"


def node_copy(source: Path, target: Path) -> Path:
    """A copy of a converted folder as another node would hold it (sparse: MindRecord files are mostly holes)."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        subprocess.run(["cp", "--sparse=always", str(path), str(target / path.name)], check=True)
    return target


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 1000)


def append_bytes(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\0" * 10)


def garble_header(path: Path) -> None:      # same size: only the header check can see it
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(b"not json")


def other_page_size(path: Path) -> None:   # a file of a conversion with other MindRecord settings
    with open(path, "r+b") as handle:
        head = handle.read(1 << 16)
        assert head.count(b'"page_size":33554432') == 1
        handle.seek(0)
        handle.write(head.replace(b'"page_size":33554432', b'"page_size":16777216'))


def garble_index(path: Path) -> None:
    Path(f"{path}.db").write_bytes(b"\0" * 4096)


DAMAGES = {
    "missing shard": (lambda p: p.unlink(), "data.mindrecord1 is missing (listed in manifest.json)"),
    "truncated shard": (truncate, "bytes, manifest.json says"),
    "longer shard": (append_bytes, "bytes, manifest.json says"),
    "garbled header": (garble_header, "data.mindrecord1 has no readable MindRecord header"),
    "other page size": (other_page_size, "data.mindrecord1 differs from data.mindrecord0 in its MindRecord "
                                         "page_size (files of different conversions cannot be read as one set)"),
    "missing index": (lambda p: Path(f"{p}.db").unlink(), "data.mindrecord1.db is missing"),
    "garbled index": (garble_index, "data.mindrecord1.db is not an SQLite index"),
}


def test_a_complete_folder_passes_and_is_identified(converted):
    report = data_contract.local_report([("--mindrecord", str(converted))], rank=3, host="node-a")
    manifest = read_manifest(converted)
    assert report.problems == ()
    assert report.folders == (FolderIdentity("--mindrecord", str(converted), manifest.dataset_id,
                                             data_contract._sha256_of(converted / "manifest.json")),)
    assert (report.rank, report.host, report.num_files) == (3, "node-a", 2 + 2 * 2)
    assert all(entry.num_bytes for entry in manifest.shards)   # converter 1.4: the sizes are checked


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_damaged_copy_is_named_with_its_file(converted, tmp_path, damage):
    copy = node_copy(converted, tmp_path / "copy")
    change, expected = DAMAGES[damage]
    change(copy / "data.mindrecord1")
    report = data_contract.local_report([("--mindrecord", str(copy))], rank=1, host="node-b")
    assert len(report.problems) >= 1 and expected in report.problems[0], report.problems
    assert str(copy / "data.mindrecord1") in report.problems[0]
    assert not any(problem.startswith(str(copy / "data.mindrecord0")) for problem in report.problems)   # not blamed


def test_a_file_of_another_conversion_is_caught_by_its_row_count(converted, tmp_path):
    copy = node_copy(converted, tmp_path / "copy")
    document = json.loads((copy / "manifest.json").read_text())
    document["shards"][0]["num_rows"], document["shards"][1]["num_rows"] = 3, 1   # same total, other split
    (copy / "manifest.json").write_text(json.dumps(document))
    problems = data_contract.local_report([("--mindrecord", str(copy))], rank=0).problems
    assert problems == (f"{copy / 'data.mindrecord0'} holds 2 rows, manifest.json says 3 (a file of another "
                        f"conversion)", f"{copy / 'data.mindrecord1'} holds 2 rows, manifest.json says 1 (a file "
                                        f"of another conversion)")


def test_a_folder_without_manifest_or_annotations_is_named(converted, tmp_path):
    copy = node_copy(converted, tmp_path / "copy")
    (copy / "annotations.json").unlink()
    report = data_contract.local_report([("--mindrecord", str(copy))], rank=0)
    assert report.problems == (f"{copy / 'annotations.json'} is missing (the converter writes it beside the "
                               f"shards)",)
    (copy / "manifest.json").unlink()
    report = data_contract.local_report([("--mindrecord", str(copy))], rank=0)
    assert report.folders == () and report.problems[0].startswith(f"--mindrecord {copy}: ")
    assert "manifest.json is missing" in report.problems[0]


def test_a_report_crosses_the_collective_unchanged():
    report = RankReport(rank=1, host="nœud-2", folders=(FolderIdentity("--mindrecord", "/données/a", "ab" * 32,
                                                                       "cd" * 32),),
                        problems=("x" * 7, "/données/a/data.mindrecord0 is missing"), num_files=6)
    words = data_contract.report_to_words(report)
    assert words.dtype.name == "int32" and words.shape[1] == 1
    assert data_contract.words_to_report(words) == report


def _report(rank, host, dataset_id="a" * 64, manifest_sha256="b" * 64, problems=()):
    return RankReport(rank, host, (FolderIdentity("--mindrecord", "/data/shards", dataset_id, manifest_sha256),),
                      tuple(problems), 6)


def test_ranks_that_agree_pass_and_every_difference_is_named():
    agreeing = [_report(0, "node-a"), _report(1, "node-b")]
    assert data_contract.contract_failures(agreeing) == []
    other_data = data_contract.contract_failures([_report(0, "node-a"), _report(1, "node-b", dataset_id="c" * 64)])
    assert other_data == [f"--mindrecord: the ranks read different datasets: rank 0 on node node-a (/data/shards) "
                          f"has dataset id {'a' * 16}, manifest.json sha256 {'b' * 16}; rank 1 on node node-b "
                          f"(/data/shards) has dataset id {'c' * 16}, manifest.json sha256 {'b' * 16}"]
    other_manifest = data_contract.contract_failures([_report(0, "node-a"), _report(1, "node-a"),
                                                      _report(2, "node-b", manifest_sha256="d" * 64)])
    assert len(other_manifest) == 1 and "the same dataset id but different manifest.json files" in other_manifest[0]
    assert "rank 0 on node node-a (/data/shards), rank 1 on node node-a (/data/shards) has" in other_manifest[0]
    broken = data_contract.contract_failures([_report(0, "node-a"), _report(1, "node-b", problems=["/x is missing"])])
    assert broken == ["rank 1 on node node-b: /x is missing"]


def test_one_process_run_stops_on_a_damaged_folder(converted, tmp_path):
    copy = node_copy(converted, tmp_path / "copy")
    args = config_lib.parse_config(["--mindrecord", str(copy)])
    messages = []
    reports = training_contract.resolve_and_check(args, SINGLE_PROCESS, log=messages.append)
    assert len(reports) == 1 and messages[-1].startswith("data check: 1 rank(s) on 1 node(s) read the same data: "
                                                         "--mindrecord dataset ")
    truncate(copy / "data.mindrecord0")
    with pytest.raises(DataContractError, match=r"(?s)not the same complete set on every rank.*rank 0 on node "
                                                r".*data.mindrecord0 has \d+ bytes, manifest.json says"):
        training_contract.resolve_and_check(args, SINGLE_PROCESS, log=messages.append)
    with pytest.raises(ValueError, match="holds no shards"):   # one process: the error as it always was
        training_contract.resolve_and_check(config_lib.parse_config(["--mindrecord", str(tmp_path)]), SINGLE_PROCESS)


def test_a_rank_that_cannot_resolve_its_folder_still_joins_and_every_rank_gets_its_error(converted, tmp_path,
                                                                                        monkeypatch):
    """With several ranks, the rank without shards reports instead of raising: the collective (replaced
    here by what the other rank would send) carries its error to every rank."""
    other_rank = _report(0, "node-a")
    sent = []

    def exchange(report, group_size):
        sent.append(report)
        return [other_rank, report]

    monkeypatch.setattr(data_contract, "exchange_reports", exchange)
    args = config_lib.parse_config(["--mindrecord", str(tmp_path / "empty")])
    with pytest.raises(DataContractError, match=r"rank 1 on node \S+: --mindrecord \S+empty holds no shards"):
        training_contract.resolve_and_check(args, DeviceGroup(rank=1, group_size=2, distributed=True))
    assert len(sent) == 1 and sent[0].folders == () and "holds no shards" in sent[0].problems[0]


def test_the_validation_folder_is_checked_too(converted, tmp_path):
    val = node_copy(converted, tmp_path / "val")
    args = config_lib.parse_config(["--mindrecord", str(converted), "--val_mindrecord", str(val)])
    assert training_contract.folders_read(args) == [("--mindrecord", str(converted)), ("--val_mindrecord", str(val))]
    messages = []
    training_contract.check_training_data(args, SINGLE_PROCESS, log=messages.append)
    assert "--mindrecord dataset " in messages[0] and "--val_mindrecord dataset " in messages[0]
    assert messages[0].endswith("; 12 files checked on each rank")
    (val / "data.mindrecord0.db").unlink()
    with pytest.raises(DataContractError, match=f"rank 0 on node .*: {val / 'data.mindrecord0.db'} is missing"):
        training_contract.check_training_data(args, SINGLE_PROCESS)


# ---------------------------------------------------------------------------------------------
# Distributed evaluation (tools/eval.py --is_distributed 1): the same check before the network is loaded
# ---------------------------------------------------------------------------------------------

def _as_rank(monkeypatch, rank: int, other_reports: dict) -> list:
    """tools/eval.py as ``rank`` of 2 ranks: the collective replaced by the other rank's report."""
    sent = []

    def exchange(report, group_size):
        sent.append(report)
        return [other_reports.get(r, report) if r != rank else report for r in range(group_size)]

    monkeypatch.setattr(eval_cli, "setup_device", lambda *a, **k: DeviceGroup(rank=rank, group_size=2,
                                                                              distributed=True))
    monkeypatch.setattr(data_contract, "exchange_reports", exchange)
    return sent


def _eval_argv(folder: Path, tmp_path: Path) -> list:
    checkpoint = tmp_path / "never_loaded.ckpt"    # the check stops the run before any network is loaded
    checkpoint.write_bytes(b"")
    return ["--mindrecord", str(folder), "--pretrained", str(checkpoint), "--is_distributed", "1",
            "--results_file", str(tmp_path / "results.json")]


def test_distributed_eval_stops_on_a_rank_with_a_damaged_copy(converted, tmp_path, monkeypatch, capsys):
    copy = node_copy(converted, tmp_path / "copy")
    truncate(copy / "data.mindrecord0")
    good = data_contract.local_report([("--mindrecord", str(converted))], 0, host="node-a")
    sent = _as_rank(monkeypatch, 1, {0: good})
    assert eval_cli.main(_eval_argv(copy, tmp_path)) == 2
    error = capsys.readouterr().err
    assert "the evaluation data is not the same complete set on every rank" in error
    assert f"rank 1 on node {sent[0].host}: {copy / 'data.mindrecord0'} has" in error
    assert not (tmp_path / "results.json").exists()
    # rank 0, whose own copy is fine, stops with the same message about rank 1
    _as_rank(monkeypatch, 0, {1: sent[0]})
    assert eval_cli.main(_eval_argv(converted, tmp_path)) == 2
    assert f"rank 1 on node {sent[0].host}: {copy / 'data.mindrecord0'} has" in capsys.readouterr().err


def test_distributed_eval_rank_without_the_folder_joins_the_check(converted, tmp_path, monkeypatch, capsys):
    good = data_contract.local_report([("--mindrecord", str(converted))], 0, host="node-a")
    sent = _as_rank(monkeypatch, 1, {0: good})
    assert eval_cli.main(_eval_argv(tmp_path / "absent", tmp_path)) == 2
    assert len(sent) == 1 and sent[0].folders == () and str(tmp_path / "absent") in sent[0].problems[0]
    assert f"rank 1 on node {sent[0].host}: --mindrecord {tmp_path / 'absent'}" in capsys.readouterr().err


def test_distributed_eval_ranks_reading_other_conversions_are_named(converted, tmp_path, monkeypatch, capsys):
    other = data_contract.local_report([("--mindrecord", str(converted))], 0, host="node-a")
    other = dataclasses.replace(other, folders=(dataclasses.replace(other.folders[0], dataset_id="c" * 64),))
    _as_rank(monkeypatch, 1, {0: other})
    assert eval_cli.main(_eval_argv(converted, tmp_path)) == 2
    assert "--mindrecord: the ranks read different datasets: rank 0 on node node-a" in capsys.readouterr().err
