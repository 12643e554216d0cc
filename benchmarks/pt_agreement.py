"""How closely imported YOLOv5 checkpoints reproduce PyTorch: raw head outputs against PyTorch's own.

    python benchmarks/pt_agreement.py [--data_dir DIR] [--json FILE]   # default: the real-data folder's yolov5_pt

For every checkpoint named in ``expected_outputs.npz`` (written by the PyTorch YOLOv5 code, see that
folder's README): import the ``.pt`` with ``yolomodel.checkpoint.yolov5_import`` (no torch), build the network,
run the stored input images (uint8 RGB) in inference mode and compare the three raw head outputs
(B, 3, H, W, 5 + C) with PyTorch's. Prints the largest absolute difference per stride, the largest
output magnitude (for scale) and the import time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_data import REAL_DATA  # noqa: E402

DEFAULT_DATA = REAL_DATA / "yolov5_pt"
STRIDES = (8, 16, 32)


def compare(data_dir: Path) -> list[dict]:
    import mindspore as ms

    from yolomodel.network import create_yolov5
    from yolomodel.checkpoint.yolov5_import import read_yolov5_pt

    expected = np.load(data_dir / "expected_outputs.npz")
    images = expected["input_uint8_nchw"].transpose(0, 2, 3, 1).copy()
    stems = sorted({key.split("__")[0] for key in expected.files if "__s" in key})
    rows = []
    for stem in stems:
        started = time.perf_counter()
        imported = read_yolov5_pt(data_dir / f"{stem}.pt")
        seconds = time.perf_counter() - started
        net = create_yolov5(imported.version, imported.num_classes, layout=imported.layout, anchors=imported.anchors)
        ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in imported.weights.items()},
                               strict_load=True)
        net.set_train(False)
        outputs = net(ms.Tensor(images))
        row = {"checkpoint": f"{stem}.pt", "model": f"{imported.version} {imported.layout}",
               "classes": imported.num_classes, "weights": imported.weights_kind, "import_seconds": round(seconds, 2)}
        for output, stride in zip(outputs, STRIDES):
            reference = expected[f"{stem}__s{stride}"]
            got = output.asnumpy().reshape(reference.shape)
            row[f"max_abs_diff_s{stride}"] = float(np.abs(got - reference).max())
            row[f"max_abs_output_s{stride}"] = float(np.abs(reference).max())
        rows.append(row)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this json file")
    args = parser.parse_args(argv)
    if not (args.data_dir / "expected_outputs.npz").is_file():
        parser.error(f"{args.data_dir} has no expected_outputs.npz (the YOLOv5 fixtures of the real-data folder, "
                     f"see benchmarks/real_data.py)")
    rows = compare(args.data_dir)
    print(f"{'checkpoint':<32}{'model':<15}{'classes':>8}{'weights':>8}" +
          "".join(f"{'max |diff| s' + str(s):>16}" for s in STRIDES) + f"{'max |out|':>11}{'import s':>10}")
    for row in rows:
        print(f"{row['checkpoint']:<32}{row['model']:<15}{row['classes']:>8}{row['weights']:>8}" +
              "".join(f"{row[f'max_abs_diff_s{s}']:>16.2e}" for s in STRIDES) +
              f"{max(row[f'max_abs_output_s{s}'] for s in STRIDES):>11.2f}{row['import_seconds']:>10.2f}")
    worst = max(row[f"max_abs_diff_s{s}"] for row in rows for s in STRIDES)
    print(f"largest absolute difference from PyTorch over all outputs: {worst:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "max_abs_diff": worst}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
