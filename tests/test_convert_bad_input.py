"""Bad input to the converter: each case is named with its reason, skipped by default, fatal with --strict,
and an existing output is never damaged (failures, Ctrl-C, full disk).

Messages and exit codes are checked through the command line tool (subprocess); the rest through
the Python API. The images are real files from ../shared/data/coco128 (a truncated one is a real JPEG
cut short).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yolodata import manifest as manifest_lib
from yolodata import mindrecord_shards
from yolodata.convert import ConversionError, convert_coco
from yolodata.verify import verify_output

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "coco2mindrecord.py"
COCO128_JSON = Path("annotations") / "instances_val2017.json"
NUM_GOOD = 6

# case -> (image id or None, file name or None, reason code, words the message must contain)
CASES = {
    "missing_file": (9001, "missing.jpg", "missing_file", "file not found"),
    "undecodable": (9002, "garbage.jpg", "undecodable", "cannot decode"),
    "truncated": (9003, "truncated.jpg", "truncated", "truncated JPEG"),
    "absolute_path": (9004, "/etc/hostname", "unsafe_file_name", "is absolute"),
    "parent_path": (9005, "../outside.jpg", "unsafe_file_name", "would escape --image_dir"),
    "duplicate_id": (9006, "dup_a.jpg", "duplicate_image_id", "image id 9006 is used by 2 images"),
    "wrong_types": (9007, "bad_types.jpg", "bad_image_record", "width '640' must be a positive integer"),
    "unknown_category": (9008, "unknown_cat.jpg", "unknown_category", "category_id 999 is not in 'categories'"),
    "bad_bbox": (9009, "bad_bbox.jpg", "bad_annotation", "must be a list of 4 numbers"),
    "unknown_image": (123456789, None, "unknown_image", "names image_id 123456789, which is not in 'images'"),
}


def run_tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args, "--no_progress"], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def snapshot(folder: Path) -> dict:
    """{file name: (size, sha256)} of every file in ``folder`` (to prove it was left as it was)."""
    return {p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def build_dataset(coco128_dir: Path, root: Path, cases) -> tuple[Path, Path, list]:
    """An image folder and json holding NUM_GOOD good coco128 images plus the given bad ``cases``.

    Returns (image_dir, ann_file, ids of the good images).
    """
    document = json.loads((coco128_dir / COCO128_JSON).read_text())
    annotated = {a["image_id"] for a in document["annotations"]}
    good = [r for r in sorted(document["images"], key=lambda r: r["id"]) if r["id"] in annotated][:NUM_GOOD]
    image_dir = root / "images"
    (image_dir / "good").mkdir(parents=True)
    source = coco128_dir / "val2017"
    images, annotations = [], []
    for record in good:
        (image_dir / "good" / record["file_name"]).symlink_to(source / record["file_name"])
        images.append({**record, "file_name": "good/" + record["file_name"]})
        annotations += [a for a in document["annotations"] if a["image_id"] == record["id"]]
    donor = good[0]
    donor_bytes = (source / donor["file_name"]).read_bytes()
    template = next(a for a in document["annotations"] if a["image_id"] == donor["id"])

    def add_image(image_id, file_name, content=None, **overrides):
        if content is not None:
            (image_dir / file_name).write_bytes(content)
        images.append({"id": image_id, "file_name": file_name, "width": donor["width"],
                       "height": donor["height"], **overrides})
        annotations.append({**template, "id": 10 ** 12 + len(annotations), "image_id": image_id})

    for case in cases:
        image_id, file_name, _, _ = CASES[case]
        if case == "missing_file":
            add_image(image_id, file_name)
        elif case == "undecodable":
            add_image(image_id, file_name, b"\xff\xd8\xff\xe0 not really a JPEG " * 50 + b"\xff\xd9")
        elif case == "truncated":
            add_image(image_id, file_name, donor_bytes[: len(donor_bytes) * 6 // 10])
        elif case == "absolute_path":
            add_image(image_id, file_name)
        elif case == "parent_path":
            (root / "outside.jpg").write_bytes(donor_bytes)  # exists, yet must not be read
            add_image(image_id, file_name)
        elif case == "duplicate_id":
            add_image(image_id, "dup_a.jpg", donor_bytes)
            add_image(image_id, "dup_b.jpg", donor_bytes)
        elif case == "wrong_types":
            add_image(image_id, file_name, donor_bytes, width=str(donor["width"]))
        elif case == "unknown_category":
            add_image(image_id, file_name, donor_bytes)
            annotations[-1]["category_id"] = 999
        elif case == "bad_bbox":
            add_image(image_id, file_name, donor_bytes)
            annotations[-1]["bbox"] = [1, 2, 3]
        elif case == "unknown_image":
            annotations.append({**template, "id": 77, "image_id": image_id})
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({**document, "images": images, "annotations": annotations}))
    return image_dir, ann_file, [r["id"] for r in good]


@pytest.fixture(scope="module")
def all_bad(coco128_dir_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("all_bad")
    image_dir, ann_file, good_ids = build_dataset(coco128_dir_module, root, list(CASES))
    return root, image_dir, ann_file, good_ids


@pytest.fixture(scope="module")
def coco128_dir_module():
    from conftest import shared_data_path

    return shared_data_path("coco128")


@pytest.fixture(scope="module")
def default_run(all_bad):
    """One command-line run over every bad case at once, without --strict."""
    root, image_dir, ann_file, good_ids = all_bad
    out = root / "out"
    result = run_tool("--image_dir", str(image_dir), "--ann_file", str(ann_file), "--output_dir", str(out),
                      "--num_workers", "2")
    return result, out, good_ids


def test_default_run_skips_each_bad_case_and_names_it(default_run):
    result, out, _ = default_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for case, (image_id, file_name, reason, words) in CASES.items():
        lines = [line for line in result.stdout.splitlines() if str(image_id) in line and words in line]
        assert lines, f"{case}: no summary line names {image_id} with {words!r}:\n{result.stdout}"
        if file_name is not None:
            assert any(file_name in line for line in lines), case
    assert "skipped" in result.stdout and "images" in result.stdout and "shards" in result.stdout


def test_default_run_lists_every_problem_in_the_manifest(default_run):
    _, out, _ = default_run
    manifest = manifest_lib.load_manifest(out)
    listed = {(p["image_id"], p["file_name"], p["reason"]) for p in manifest.skipped}
    for case, (image_id, file_name, reason, words) in CASES.items():
        if case == "unknown_image":
            entry = manifest.skipped_annotations[0]
            assert (entry["image_id"], entry["annotation_id"], entry["reason"]) == (image_id, 77, reason)
            assert words in entry["message"]
        else:
            assert (image_id, file_name, reason) in listed, case
    assert ((9006, "dup_b.jpg", "duplicate_image_id")) in listed  # both images of a duplicate id


def test_default_run_loses_none_of_the_good_images(default_run):
    _, out, good_ids = default_run
    manifest = manifest_lib.load_manifest(out)
    assert manifest.num_images == NUM_GOOD
    written = json.loads((out / "annotations.json").read_text())
    assert sorted(r["id"] for r in written["images"]) == sorted(good_ids)
    assert {a["image_id"] for a in written["annotations"]} == set(good_ids)
    report = verify_output(out)
    assert report.ok, report.format()


def test_strict_run_stops_and_leaves_the_existing_output_as_it_was(default_run, all_bad):
    _, out, _ = default_run
    root, image_dir, ann_file, _ = all_bad
    before = snapshot(out)
    result = run_tool("--image_dir", str(image_dir), "--ann_file", str(ann_file), "--output_dir", str(out),
                      "--strict")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--strict" in result.stderr and "nothing was written" in result.stderr
    assert "image 9001 (missing.jpg): file not found" in result.stderr
    assert snapshot(out) == before
    assert leftovers(root) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_strict_stops_on_each_case_with_its_message(coco128_dir, tmp_path, case):
    image_dir, ann_file, _ = build_dataset(coco128_dir, tmp_path, [case])
    out = tmp_path / "out"
    image_id, file_name, _, words = CASES[case]
    with pytest.raises(ConversionError) as caught:
        convert_coco(image_dir, ann_file, out, strict=True, num_workers=2)
    message = str(caught.value)
    assert words in message and str(image_id) in message
    if file_name is not None:
        assert file_name in message
    assert not out.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content, words", [
    ({"images": [], "categories": []}, "key 'annotations' is missing"),
    ({"images": {"1": "a.jpg"}, "annotations": [], "categories": []}, "'images' must be a list, got dict"),
    ([1, 2, 3], "the top level is a list"),
    ({"images": [], "annotations": [], "categories": [{"id": "1", "name": "x"}]}, "has id '1'"),
    ("{not json", "is not valid JSON"),
])
def test_a_json_that_is_not_coco_stops_with_a_message(coco128_dir, tmp_path, content, words):
    ann_file = tmp_path / "bad.json"
    ann_file.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "out"
    result = run_tool("--image_dir", str(coco128_dir / "val2017"), "--ann_file", str(ann_file),
                      "--output_dir", str(out))
    assert result.returncode == 2
    assert words in result.stderr and str(ann_file) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def small_output(coco128_dir: Path, root: Path) -> tuple[Path, Path, Path]:
    """A finished conversion of 3 coco128 images: (image_dir, ann_file, output folder)."""
    image_dir, ann_file, _ = build_dataset(coco128_dir, root, [])
    document = json.loads(ann_file.read_text())
    document["images"] = document["images"][:3]
    keep = {r["id"] for r in document["images"]}
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in keep]
    ann_file.write_text(json.dumps(document))
    out = root / "out"
    convert_coco(image_dir, ann_file, out)
    return image_dir, ann_file, out


def test_full_disk_leaves_the_existing_output_and_no_temporary_files(coco128_dir, tmp_path, monkeypatch):
    image_dir, ann_file, out = small_output(coco128_dir, tmp_path)
    before = snapshot(out)

    def disk_full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mindrecord_shards.OneFileWriter, "close", disk_full)
    with pytest.raises(ConversionError, match="No space left on device") as caught:
        convert_coco(image_dir, ann_file, out, num_workers=1)   # one worker: the unit runs in this process
    assert "was left as it was" in str(caught.value)
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_interrupt_while_writing_leaves_the_existing_output(coco128_dir, tmp_path, monkeypatch):
    image_dir, ann_file, out = small_output(coco128_dir, tmp_path)
    before = snapshot(out)

    def interrupted(self, fields, shard=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(mindrecord_shards.OneFileWriter, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_coco(image_dir, ann_file, out, num_workers=1)
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_ctrl_c_on_the_tool_leaves_the_existing_output(coco128_dir, tmp_path):
    """A real SIGINT sent to the command-line tool while it writes rows."""
    from benchmarks.convert_throughput import make_repeated_coco

    image_dir, ann_file = make_repeated_coco(coco128_dir, tmp_path / "coco", 640)
    _, _, out = small_output(coco128_dir, tmp_path / "small")
    before = snapshot(out)
    process = subprocess.Popen([sys.executable, str(TOOL), "--image_dir", str(image_dir), "--ann_file",
                                str(ann_file), "--output_dir", str(out), "--num_workers", "1", "--no_progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    partial = []
    while time.monotonic() < deadline and process.poll() is None:
        partial = list(out.parent.glob(".out.parts/unit-*.tmp/data.mindrecord*"))  # rows being written
        if partial:
            break
        time.sleep(0.01)
    assert partial, "the conversion finished or failed before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert snapshot(out) == before
    assert leftovers(out.parent) == []
    # the unit being written is not published; the next run removes what is left of it
    assert not list(out.parent.glob(".out.parts/unit-?????")) and "kept in" in stderr


def test_a_folder_that_is_not_a_converter_output_is_not_replaced(coco128_dir, tmp_path):
    image_dir, ann_file, _ = build_dataset(coco128_dir, tmp_path, [])
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(ConversionError, match="not a converter output"):
        convert_coco(image_dir, ann_file, precious)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    assert leftovers(tmp_path) == []


def test_a_new_conversion_replaces_an_old_one_and_stale_leftovers_are_removed(coco128_dir, tmp_path):
    image_dir, ann_file, out = small_output(coco128_dir, tmp_path)
    stale = tmp_path / ".out.partial-999999999-0badf00d"  # a killed run's leftover (no such process)
    stale.mkdir()
    (stale / "data.mindrecord0").write_bytes(b"half")
    document = json.loads(ann_file.read_text())
    document["images"] = document["images"][:2]
    ann_file.write_text(json.dumps(document))
    summary = convert_coco(image_dir, ann_file, out)
    assert summary.num_images == 2 and manifest_lib.load_manifest(out).num_images == 2
    assert leftovers(tmp_path) == []


def test_an_old_output_left_between_the_two_renames_is_restored(coco128_dir, tmp_path):
    """A run killed after moving the old output aside and before moving the new one in."""
    image_dir, ann_file, out = small_output(coco128_dir, tmp_path)
    before = snapshot(out)
    aside = tmp_path / ".out.old-999999999-0badf00d"
    os.rename(out, aside)
    build_dataset(coco128_dir, tmp_path / "bad", ["truncated"])
    bad_json = tmp_path / "bad" / "instances.json"
    with pytest.raises(ConversionError, match="truncated"):
        convert_coco(tmp_path / "bad" / "images", bad_json, out, strict=True)
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []
