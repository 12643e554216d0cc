"""What importing a part of yolodata loads: the converter, the format readers, the pipelines' package and
the command-line mains start without MindSpore (a fast ``--help`` and an error message before MindSpore
starts), and ``import yolodata`` loads the pipelines only when one of its three names is used."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code`` (whose last line prints nothing)."""
    script = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_read_and_write_sides_and_the_mains_import_without_mindspore():
    modules = loaded_after("import yolodata.cli.coco2mindrecord, yolodata.cli.visualize, yolodata.convert, "
                           "yolodata.formats, yolodata.verify, yolodata.pipeline, yolodata.visualize")
    assert "yolodata.pipeline.train" in modules      # the imports above did run
    assert not [m for m in modules if m == "mindspore" or m.startswith("mindspore.")]


def test_the_package_loads_its_pipelines_only_when_asked():
    modules = loaded_after("import yolodata, yolodata.convert")
    assert not [m for m in modules if m.startswith(("yolodata.pipeline", "yolodata.augment"))]
    code = ("import yolodata, yolodata.pipeline, yolodata.augment.policy\n"
            "assert yolodata.create_train_dataset is yolodata.pipeline.create_train_dataset\n"
            "assert yolodata.create_eval_dataset is yolodata.pipeline.create_eval_dataset\n"
            "assert yolodata.AugmentConfig is yolodata.augment.policy.AugmentConfig\n"
            "assert {'AugmentConfig', 'create_eval_dataset', 'create_train_dataset'} <= set(dir(yolodata))\n"
            "try:\n    yolodata.create_dataset\nexcept AttributeError as error:\n"
            "    assert 'create_dataset' in str(error)\nelse:\n    raise SystemExit('no AttributeError')\n")
    assert "yolodata.pipeline.train" in loaded_after(code)
