"""torch is never a dependency: no file of the project imports it, no requirement names it, importing a .pt loads none of it."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

from conftest import shared_data_path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("yolodata", "yolomodel", "tools", "tests", "benchmarks", "scripts")
TORCH_IMPORT = re.compile(
    r"^\s*(?:import\s+torch\b|from\s+torch\b|import\s+[\w.]+\s*,\s*torch\b)"       # import statements
    r"|__import__\(\s*['\"]torch|import_module\(\s*['\"]torch",                     # dynamic imports
    re.M)


def torch_imports(text: str) -> list[str]:
    return [match.group(0).strip() for match in TORCH_IMPORT.finditer(text)]


def test_the_pattern_finds_every_way_of_importing_torch():
    found = torch_imports("import torch\nfrom torch import nn\n  import torch.nn as nn\nimport os, torch\n"
                          "m = __import__('" + "torch')\nimportlib.import_module(\"" + "torch.nn\")\n")
    assert len(found) == 6
    assert not torch_imports("# torch.save writes a zip\nname = 'torch._utils._rebuild_tensor_v2'\nimport torchvision_free\n"
                             "x = 'from torch import nn'\n")


def test_no_project_file_imports_torch():
    offenders = {}
    files = [path for folder in SOURCE_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    assert len(files) > 50
    for path in files:
        found = torch_imports(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders


def test_no_requirement_names_torch():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = config["options"]["install_requires"] + "".join(config["options.extras_require"].values())
    assert not re.search(r"\btorch\b|pytorch", requirements, re.I)


def test_importing_a_pt_loads_no_torch_module():
    pt_file = shared_data_path("yolov5_pt", "yolov5n_v7.0_custom3_last.pt")
    code = ("import sys\nfrom yolomodel.checkpoint.yolov5_import import read_yolov5_pt\n"
            f"model = read_yolov5_pt({str(pt_file)!r})\n"
            "print(model.version, model.layout, model.num_classes)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2:] == ["yolov5n v6.0 3", "[]"]
