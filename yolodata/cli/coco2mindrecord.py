"""Convert a detection dataset (COCO json, YOLO txt or Pascal VOC XML) into MindRecord shards for the
YOLOv5 pipelines.

    yolo-coco2mindrecord --image_dir DIR --ann_file FILE --output_dir OUT \\
        [--shard_size 1G | --shard_num N] [--engine local|ray] [--num_workers K] [--drop_empty] \\
        [--strict] [--exif_frame auto] \\
        [--max_side N [--jpeg_quality Q]]
    yolo-coco2mindrecord --format yolo --data data.yaml|obj.data [--split train] --output_dir OUT [...]
    yolo-coco2mindrecord --format voc --voc_dir DIR [--split train] [--names FILE] \\
        [--difficult ignore|keep|drop] --output_dir OUT [...]
    yolo-coco2mindrecord --verify OUT
    (python tools/coco2mindrecord.py ... is the same command)

OUT receives data.mindrecord0..N-1 (+ .db index files), manifest.json and annotations.json: one
file per work unit of about --shard_size bytes of images (default 1G), or --shard_num files. The
units run on --engine local (a process pool of --num_workers processes) or ray (Ray Core tasks; the
cluster in RAY_ADDRESS); the output is the same either way. The result replaces OUT only when
complete: a failure or Ctrl-C leaves an existing OUT as it was, and the units already converted in
.OUT.parts beside it, which the next run with the same source and options reuses (any other run
starts that folder afresh). Problem images are skipped and listed (summary and manifest.json); with
--strict the first problem stops the run and nothing is written. A shard file never stays empty:
a unit all of whose images are skipped writes no file, and with fewer images than --shard_num,
fewer shards are written (the summary says so).

Exit codes: 0 done; 1 --verify found problems; 2 bad input or arguments (message on stderr);
130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from yolodata.convert import ConversionError, convert_coco, convert_voc, convert_yolo
from yolodata.convert.engines import ENGINES, EngineError
from yolodata.convert import run as run_lib
from yolodata.convert.run import parse_shard_size
from yolodata.convert.shrink import DEFAULT_JPEG_QUALITY
from yolodata.formats import DIFFICULT_MODES, SOURCE_FORMATS
from yolodata.manifest import ManifestError
from yolodata.verify import verify_output

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
# The flags each source format reads; the others are refused with that format.
FORMAT_FLAGS = {"coco": ("image_dir", "ann_file"), "yolo": ("data", "split"),
                "voc": ("voc_dir", "split", "names", "difficult")}
REQUIRED_FLAGS = {"coco": ("image_dir", "ann_file"), "yolo": ("data",), "voc": ("voc_dir",)}


def _shard_size_argument(text: str) -> int:
    try:
        return parse_shard_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=SOURCE_FORMATS, default="coco",
                        help="the annotations: coco (--image_dir, --ann_file; the default), yolo (--data) or voc "
                             "(--voc_dir)")
    parser.add_argument("--image_dir", type=Path, help="coco: folder the json's file_name entries are relative to")
    parser.add_argument("--ann_file", type=Path, help="coco: COCO instances json")
    parser.add_argument("--data", type=Path, help="yolo: the dataset's data.yaml (Ultralytics) or obj.data (Darknet)")
    parser.add_argument("--voc_dir", type=Path, help="voc: the folder holding Annotations/, JPEGImages/, ImageSets/")
    parser.add_argument("--split", default=None,
                        help="yolo: the data file's split (train, val, test; default train); voc: the ids of "
                             "ImageSets/Main/SPLIT.txt (default: every XML of Annotations/)")
    parser.add_argument("--names", type=Path, default=None,
                        help="voc: class names, one a line, in class-index order (default: the sorted names of "
                             "every XML)")
    parser.add_argument("--difficult", choices=DIFFICULT_MODES, default=None,
                        help="voc: difficult objects as crowd-like boxes that training and evaluation ignore "
                             "(ignore, the default), as ordinary objects (keep), or left out (drop)")
    parser.add_argument("--output_dir", type=Path, help="output folder (created, or replaced when it holds "
                                                        "an earlier conversion)")
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument("--shard_size", type=_shard_size_argument, default=None, metavar="SIZE",
                        help="bytes of images per MindRecord file, e.g. 512M, 1G or a number of bytes "
                             "(default 1G; see the README's conversion section)")
    shards.add_argument("--shard_num", type=int, default=None,
                        help="number of MindRecord files instead, of nearly equal bytes (at most one per image)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="where the work units run: local (a process pool, the default) or ray (Ray Core "
                             "tasks, `pip install yolodata[ray]`; the cluster in RAY_ADDRESS, else a local one)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="worker processes (local) or concurrent tasks (ray) (default and local ceiling: "
                             "the CPU count)")
    parser.add_argument("--drop_empty", action="store_true",
                        help="leave out images without boxes (default: keep them as background rows)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first problem instead of skipping the image; nothing is written")
    parser.add_argument("--exif_frame", choices=("auto", "displayed", "stored"), default="auto",
                        help="which frame the json's width/height describe for EXIF-rotated images: auto "
                             "(the displayed frame when it fits, else the stored one), displayed, stored")
    parser.add_argument("--max_side", type=int, default=None, metavar="N",
                        help="store pictures whose long side exceeds N shrunk to long side N (area interpolation; "
                             "boxes scaled; evaluation still scores in original pixels). Default: off, every "
                             "picture stored as it is; 1280 suits camera photos (see README)")
    parser.add_argument("--jpeg_quality", type=int, default=None, metavar="Q",
                        help=f"JPEG quality of the pictures --max_side shrinks (default {DEFAULT_JPEG_QUALITY}; "
                             f"other formats are stored as lossless PNG)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--verify_after", action="store_true",
                        help="after converting, re-read OUT with MindDataset and check it (as --verify)")
    parser.add_argument("--verify", type=Path, metavar="OUT", default=None,
                        help="only verify an existing output folder: re-read every shard with MindDataset and "
                             "check rows, ids, boxes and decodability against the manifest")
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM cleans up like Ctrl-C while the command runs (the previous handler is restored after;
    only the main thread can set handlers, elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_verify(folder: Path, num_workers) -> int:
    report = verify_output(folder, num_workers=num_workers)
    print(report.format())
    return EXIT_OK if report.ok else EXIT_VERIFY_FAILED


def check_format_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error for a flag of another source format, or a missing one of this format."""
    for flag in sorted({f for flags in FORMAT_FLAGS.values() for f in flags} - set(FORMAT_FLAGS[args.format])):
        if getattr(args, flag) is not None:
            owners = " or ".join(name for name, flags in FORMAT_FLAGS.items() if flag in flags)
            parser.error(f"--{flag} is for --format {owners}, not --format {args.format}")
    if args.jpeg_quality is not None and args.max_side is None:
        parser.error("--jpeg_quality applies to the pictures --max_side shrinks; give --max_side too")
    missing = [flag for flag in REQUIRED_FLAGS[args.format] + ("output_dir",) if getattr(args, flag) is None]
    if missing:
        parser.error(f"--format {args.format} needs " + ", ".join("--" + m for m in missing))


def convert(args: argparse.Namespace):
    """The conversion the arguments ask for; returns its ConversionSummary."""
    common = dict(shard_size=args.shard_size, shard_num=args.shard_num, engine=args.engine,
                  num_workers=args.num_workers, drop_empty=args.drop_empty,
                  strict=args.strict, exif_frame=args.exif_frame, max_side=args.max_side,
                  jpeg_quality=DEFAULT_JPEG_QUALITY if args.jpeg_quality is None else args.jpeg_quality,
                  progress=not args.no_progress)
    if args.format == "yolo":
        return convert_yolo(args.data, args.output_dir, split=args.split or "train", **common)
    if args.format == "voc":
        return convert_voc(args.voc_dir, args.output_dir, split=args.split, names_file=args.names,
                           difficult=args.difficult or "ignore", **common)
    return convert_coco(args.image_dir, args.ann_file, args.output_dir, **common)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _sigterm_as_interrupt():
        return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.verify is not None:
            if any(getattr(args, flag) for flag in ("image_dir", "ann_file", "data", "voc_dir", "output_dir")):
                parser.error("--verify OUT checks an existing folder; give it alone (or use --verify_after)")
            return run_verify(args.verify, args.num_workers)
        check_format_flags(parser, args)
        summary = convert(args)
        print(summary.format_table())
        if args.verify_after:
            return run_verify(args.output_dir, args.num_workers)
        return EXIT_OK
    except (ConversionError, ManifestError, ValueError, EngineError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # e.g. no space left, permission denied on the output folder
        print(f"error: {error}; {args.output_dir or args.verify} was left as it was", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        where = args.output_dir or args.verify
        parts = run_lib.parts_dir_of(Path(where)) if args.output_dir else None
        kept = (f"; the units converted so far are kept in {parts} for the next run with the same input and "
                f"options (delete it to start afresh)") if parts is not None and parts.exists() else ""
        print(f"interrupted; {where} was left as it was{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
