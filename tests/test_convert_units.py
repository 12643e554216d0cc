"""Unit-by-unit conversion (issue 25): engines, identical bytes whatever the workers or retries, resume,
shards by bytes, and readers of the new (one file per unit) and the old (linked set) layouts.

Tiny synthetic data (``yolodata.synthetic``): 16 pictures of 64x80 px, a few KB each, so that a
``shard_size`` of a few KB gives several units.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from yolodata import mindrecord_shards
from yolodata.cli import coco2mindrecord
from yolodata.convert import ConversionError, convert_coco
from yolodata.convert import engines, run as run_lib, units as units_lib, unit_convert
from yolodata.manifest import load_manifest
from yolodata.pipeline.rows import check_rows, read_rows_in_order, stored_image_sizes
from yolodata.schema import MANIFEST_NAME, MINDRECORD_SCHEMA
from yolodata.synthetic import make_synthetic_coco
from yolodata.verify import verify_output

sys.path.insert(0, str(Path(__file__).parent))
from engine_tasks import always_fails, module_loaded, square_failing_once  # noqa: E402  (spawned workers import it by name)

SHARD_SIZE = 12_000      # bytes: the 16 pictures (2-4 KB each) make 4-6 units


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    """(image folder, instances json) of 16 synthetic images."""
    root = tmp_path_factory.mktemp("tiny_coco")
    make_synthetic_coco(root, num_images=16, seed=3, image_size=(64, 80), val_fraction=0.0, num_workers=1)
    return root / "images", root / "annotations" / "instances_train.json"


@pytest.fixture(scope="module")
def reference(tiny_coco, tmp_path_factory):
    """A clean one-worker conversion at SHARD_SIZE: the bytes every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "out"
    convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE, num_workers=1)
    return out


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------------------------- engines

@pytest.mark.parametrize("num_workers", [1, 2])
def test_run_tasks_returns_results_in_task_order_and_retries_a_failed_task(tmp_path, num_workers):
    marker = tmp_path / "failed-once"
    tasks = [(value, str(marker) if value == 3 else None) for value in range(6)]
    seen = []
    results = engines.run_tasks(square_failing_once, tasks, num_workers=num_workers,
                                on_result=lambda index, result: seen.append(index))
    assert [value for value, _ in results] == [v * v for v in range(6)]
    assert sorted(seen) == list(range(6)) and marker.exists()   # task 3 failed once, then succeeded
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) == (num_workers == 1)        # 2 workers: run in other processes


def test_run_tasks_gives_up_after_max_retries_naming_the_task():
    with pytest.raises(engines.EngineError, match=r"task 1 failed 2 time\(s\).*task 1 always fails"):
        engines.run_tasks(_fails_on_one, [0, 1], max_retries=1)


def _fails_on_one(task):
    if task == 1:
        always_fails(task)
    return task


def test_ray_engine_without_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # as when Ray is not installed (`import ray` fails)
    with pytest.raises(engines.EngineError, match=r"pip install yolodata\[ray\]"):
        engines.run_tasks(_fails_on_one, [0], engine="ray")
    with pytest.raises(ValueError, match="engine must be one of"):
        engines.run_tasks(_fails_on_one, [0], engine="spark")


@pytest.mark.parametrize("warm_module", ["colorsys", None])
def test_local_engine_workers_import_the_warm_module_before_their_first_task(warm_module):
    # colorsys: a standard module nothing here imports, so only the warm-up can load it
    with engines.open_engine("local", 2, warm_module=warm_module) as engine:
        results = engine.run(module_loaded, ["colorsys"] * 4)
    assert [loaded for loaded, _ in results] == [warm_module is not None] * 4
    assert os.getpid() not in {pid for _, pid in results}
    assert not any(psutil.pid_exists(pid) for _, pid in results), "the engine's processes outlive close()"


def test_an_error_while_planning_closes_the_engine_opened_before(tiny_coco, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "annotations": [')
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}
    with pytest.raises(ConversionError, match="bad.json"):
        convert_coco(tiny_coco[0], bad_json, tmp_path / "out", num_workers=2)
    new_children = {child.pid for child in psutil.Process().children(recursive=True)} - children_before
    assert not new_children, f"worker processes {new_children} left running after the error"
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------- same bytes, retries, resume

def test_same_bytes_for_two_workers_with_a_failed_task(tiny_coco, reference, tmp_path, monkeypatch):
    marker = tmp_path / "unit-1-failed"
    monkeypatch.setenv(unit_convert.FAIL_ONCE_VARIABLE, f"1:{marker}")
    out = tmp_path / "out"
    convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE, num_workers=2)
    assert marker.exists()                       # unit 1 failed after writing, before publishing, and ran again
    manifest = load_manifest(reference)
    assert len(manifest.shards) >= 4
    assert digests(out) == digests(reference)    # every shard, .db, manifest.json and annotations.json
    assert not run_lib.parts_dir_of(out).exists()


def test_an_interrupted_run_resumes_with_only_the_unpublished_units(tiny_coco, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv(unit_convert.FAIL_ONCE_VARIABLE, "2:")          # unit 2 never converts: the run stops
    with pytest.raises(engines.EngineError, match="injected failure of unit 2"):
        convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE, num_workers=1)
    parts = run_lib.parts_dir_of(out)
    assert not out.exists()
    assert sorted(p.name for p in parts.glob("unit-*")) == ["unit-00000", "unit-00001"]   # published before it
    # damage unit 0's published file: its record no longer matches, so it is converted again
    record = json.loads((parts / "unit-00000" / unit_convert.UNIT_RECORD_NAME).read_text())
    with open(parts / "unit-00000" / record["file"], "r+b") as handle:
        handle.seek(-200, os.SEEK_END)
        handle.write(b"\x01")
    monkeypatch.delenv(unit_convert.FAIL_ONCE_VARIABLE)
    converted, messages = [], []
    original = run_lib.convert_unit

    def counting(task):
        converted.append(task.index)
        return original(task)

    monkeypatch.setattr(run_lib, "convert_unit", counting)
    convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE, num_workers=1, log=messages.append)
    num_units = len(load_manifest(reference).shards)
    assert converted == [0] + list(range(2, num_units))
    assert any("1 already converted" in message for message in messages)
    assert digests(out) == digests(reference)
    assert not parts.exists()


def test_parts_of_a_run_with_other_options_are_not_reused(tiny_coco, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv(unit_convert.FAIL_ONCE_VARIABLE, "1:")
    with pytest.raises(engines.EngineError):
        convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE, num_workers=1)
    monkeypatch.delenv(unit_convert.FAIL_ONCE_VARIABLE)
    messages = []
    convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE, num_workers=1, drop_empty=True, log=messages.append)
    assert any("0 already converted" in message for message in messages)
    assert load_manifest(out).options["drop_empty"] is True


# ------------------------------------------------------------------------------ shards by bytes

def test_shard_files_stay_within_shard_size_plus_the_largest_row(tiny_coco, reference):
    import mindspore.dataset as ds

    manifest = load_manifest(reference)
    largest_row = 0
    for path, entry in zip(manifest.shard_paths, manifest.shards):
        reader = ds.MindDataset([str(path)], columns_list=["image"], shuffle=False)
        images = [np.asarray(r["image"]).nbytes for r in reader.create_dict_iterator(output_numpy=True, num_epochs=1)]
        stored = mindrecord_shards.stored_bytes(mindrecord_shards.read_header(path)[0])
        # ROW_OVERHEAD_BYTES bounds what a row adds besides its picture (label columns, index, page entry)
        assert stored - sum(images) <= units_lib.ROW_OVERHEAD_BYTES * len(images)
        largest_row = max(largest_row, max(images) + units_lib.ROW_OVERHEAD_BYTES)
        assert entry.num_bytes == path.stat().st_size and entry.num_rows == len(images)
    for path in manifest.shard_paths:
        assert mindrecord_shards.stored_bytes(mindrecord_shards.read_header(path)[0]) <= SHARD_SIZE + largest_row
    assert manifest.options["shard_size"] == SHARD_SIZE and manifest.options["shard_num"] is None


def test_a_plan_beyond_the_readers_file_limit_is_refused_up_front(tiny_coco, tmp_path, monkeypatch):
    monkeypatch.setattr(units_lib, "MAX_FILES_PER_READER", 3)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"MindDataset reads at most 3 files; use --shard_size [\d,]+ or more"):
        convert_coco(*tiny_coco, out, shard_size=SHARD_SIZE)
    assert not out.exists() and not run_lib.parts_dir_of(out).exists()


def test_shard_size_and_shard_num_arguments():
    assert run_lib.parse_shard_size("512M") == 512 * 2 ** 20
    assert run_lib.parse_shard_size("1G") == run_lib.parse_shard_size("1GiB") == 2 ** 30
    assert run_lib.parse_shard_size("1.5k") == 1536 and run_lib.parse_shard_size("65536") == 65536
    for bad in ("big", "0", "-1G"):
        with pytest.raises(ValueError, match="shard size"):
            run_lib.parse_shard_size(bad)
    assert run_lib.shard_request(None, None) == (units_lib.DEFAULT_SHARD_SIZE, None)
    assert run_lib.shard_request(None, 3) == (None, 3) and run_lib.shard_request("2K", None) == (2048, None)
    with pytest.raises(ValueError, match="not both"):
        run_lib.shard_request(2048, 3)
    with pytest.raises(SystemExit):
        coco2mindrecord.build_parser().parse_args(["--shard_size", "1G", "--shard_num", "2"])


def test_cli_converts_by_shard_size_and_warns_about_lazy_load(tiny_coco, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(units_lib, "LAZY_LOAD_ROWS", 10)
    out = tmp_path / "out"
    image_dir, ann_file = tiny_coco
    with pytest.warns(UserWarning, match="16 images in one set: above 10 rows MindDataset loads its index lazily"):
        code = coco2mindrecord.main(["--image_dir", str(image_dir), "--ann_file", str(ann_file), "--output_dir",
                                     str(out), "--shard_size", "6K", "--engine", "local", "--num_workers", "1",
                                     "--no_progress"])
    assert code == 0
    manifest = load_manifest(out)
    assert manifest.options["shard_size"] == 6144 and len(manifest.shards) > 4
    assert "shards" in capsys.readouterr().out


# -------------------------------------------------------------------------------- problems, --strict

def test_strict_stops_at_a_missing_picture_and_a_plain_run_skips_it(tiny_coco, tmp_path):
    image_dir, ann_file = tiny_coco
    document = json.loads(ann_file.read_text())
    document["images"][5]["file_name"] = "no-such-picture.jpg"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(document))
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="(?s)--strict.*no-such-picture.jpg"):
        convert_coco(image_dir, bad_json, out, shard_size=SHARD_SIZE, strict=True, num_workers=1)
    assert not out.exists()
    summary = convert_coco(image_dir, bad_json, out, shard_size=SHARD_SIZE, num_workers=1)
    missing_id = document["images"][5]["id"]
    assert [p.image_id for p in summary.skipped] == [missing_id]
    written = json.loads((out / "annotations.json").read_text())
    assert [r["id"] for r in written["images"]] == sorted(r["id"] for r in document["images"] if r["id"] != missing_id)
    assert [a["id"] for a in written["annotations"]] == [a["id"] for a in document["annotations"]
                                                        if a["image_id"] != missing_id]
    assert list(written) == [k for k in document if k not in ("images", "annotations")] + ["images", "annotations"]
    assert verify_output(out).ok


def test_annotations_json_is_the_source_file_when_nothing_is_left_out(tiny_coco, reference):
    assert (reference / "annotations.json").read_bytes() == tiny_coco[1].read_bytes()


# ---------------------------------------------------------------------- readers: new and old layouts

def old_linked_layout(new: Path, old: Path) -> None:
    """``new`` (schema 3, one file per unit) re-written as converter 1.4 wrote it: one linked set whose
    row_index is the global row, manifest schema 2."""
    import mindspore.dataset as ds

    manifest = load_manifest(new)
    old.mkdir()
    writer = mindrecord_shards.ShardSetWriter(old, len(manifest.shards))
    rows = ds.MindDataset([str(p) for p in manifest.shard_paths], columns_list=list(MINDRECORD_SCHEMA),
                          shuffle=False).create_dict_iterator(output_numpy=True, num_epochs=1)
    starts = manifest.shard_row_starts() + [manifest.num_images]
    for position, row in enumerate(rows):
        fields = {name: (value.item() if value.ndim == 0 else value) for name, value in row.items()}
        fields["image"] = row["image"].tobytes()
        fields["file_name"] = str(fields["file_name"])
        fields["row_index"] = position
        writer.add(fields, int(np.searchsorted(starts, position, side="right") - 1))
    shards = writer.close()
    document = json.loads((new / MANIFEST_NAME).read_text())
    document.update(converter_version="1.4.0", schema_version=2, shards=shards)
    (old / MANIFEST_NAME).write_text(json.dumps(document))
    (old / "annotations.json").write_bytes((new / "annotations.json").read_bytes())


def test_readers_see_the_same_rows_in_one_file_many_files_and_the_old_linked_set(tiny_coco, reference, tmp_path):
    from yolodata.visualize.readers import raw_samples

    one = tmp_path / "one"
    convert_coco(*tiny_coco, one, shard_num=1, num_workers=1)
    old = tmp_path / "old"
    old_linked_layout(reference, old)
    rows = np.array([15, 0, 7, 7, 3, 12], np.int64)   # any global rows, in any order, repeated
    picked = {}
    for name, folder in (("one", one), ("many", reference), ("old", old)):
        manifest = load_manifest(folder)
        assert verify_output(folder).ok, verify_output(folder).problems
        dataset = read_rows_in_order(manifest.shard_paths, rows, manifest.num_images, 1, ["image_id", "row_index"])
        got = list(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))
        check_rows([r[1] for r in got], rows, manifest)          # the global row -> (file, row) mapping
        picked[name] = ([int(r[0]) for r in got], stored_image_sizes(manifest).tolist(),
                               [s.caption for s in raw_samples(folder, num=4)])
    assert picked["one"] == picked["many"] == picked["old"]
    assert load_manifest(old).schema_version == 2 and load_manifest(reference).schema_version == 3
    manifest = load_manifest(reference)
    with pytest.raises(RuntimeError, match="do not match the manifest"):
        check_rows([0, 0], np.array([0, 1]), manifest)
