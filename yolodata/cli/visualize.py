"""Look at a converted dataset before a long run: a grid of samples with their boxes, and label statistics.

    yolo-visualize --mindrecord DIR --num 16 --output grid.jpg [--seed S]
        [--stage raw|mosaic|full] [--training_shape 640] [augmentation flags as tools/train.py]
    yolo-visualize --mindrecord DIR --labels labels.jpg
    (--output and --labels may be given together; `python tools/visualize.py ...` is the same command)

Stages of the grid:
  raw     the stored images with their stored boxes (the rows epoch 0 of --seed visits first),
          captioned with image id and file name; each image once (--num is capped at the number of
          stored images, and a note says so);
  mosaic  the train pipeline's geometry (mosaic, affine) without colour jitter, flips and extras;
  full    the train pipeline exactly as training with these flags sees it: the first --num samples
          of training for --seed from epoch 0 on, in batches of --per_batch_size (default --num;
          give training's batch size to see its exact batches, since mosaic partners come from the
          same batch).
  (mosaic and full: more samples than stored images repeat images as training does, each with its
  own augmentation draw: an epoch is padded to whole batches, then the next epoch begins; a note
  says so, and the captions of tiles after epoch 0 name their epoch.)
Every box is outlined in its class colour and labelled with its class name (crowd boxes are marked).
The same arguments give the same output bytes.

--labels writes the label statistics figure (instances per class, box centres, box sizes relative
to the image, boxes per image; as YOLOv5's labels.jpg) and prints a short summary. Counts include
crowd boxes, as the manifest's num_boxes and boxes_per_category do.

Both read only the shards and manifest.json. Outputs are written atomically (parent folders created).
Exit codes: 0 done; 2 bad input or arguments (message on stderr); 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yolodata.augment.policy import AugmentConfig
from yolodata.fileio import write_file_atomic
from yolodata.manifest import ManifestError, load_manifest
from yolodata.pipeline.sampler import multiscale_shapes
# importing these loads numpy and OpenCV; MindSpore and matplotlib load only when a grid or figure is made
from yolodata.visualize import (GRID_IMAGE_SUFFIXES, STAGES, check_figure_suffix, dataset_label_statistics,
                                encode_figure, encode_grid, format_statistics, label_figure, read_samples,
                                render_grid, sample_span, span_note)

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 2, 130
AUGMENT_FLAGS = ("mosaic", "degrees", "translate", "scale", "shear", "perspective", "hsv_h", "hsv_s", "hsv_v",
                 "fliplr", "flipud", "extras", "mixup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", type=Path, required=True,
                        help="output folder of tools/coco2mindrecord.py (shards + manifest.json)")
    parser.add_argument("--output", type=Path, default=None, help="grid image to write (.jpg, .png, .bmp)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="label statistics figure to write (.jpg, .png, .pdf, .svg ...)")
    parser.add_argument("--num", type=int, default=16,
                        help="number of tiles in the grid (default 16; raw: at most the stored images)")
    parser.add_argument("--seed", type=int, default=0, help="the training seed (default 0)")
    parser.add_argument("--stage", choices=STAGES, default="full",
                        help="what the tiles show (default full; see above)")
    parser.add_argument("--training_shape", type=int, default=640, help="train input size (default 640)")
    parser.add_argument("--per_batch_size", type=int, default=None,
                        help="train batch size the samples are drawn in (default: --num)")
    parser.add_argument("--resize_rate", type=int, default=0,
                        help="multi-scale: batches between input size changes (default 0: fixed size)")
    parser.add_argument("--tile_size", type=int, default=320, help="side of each tile's image in pixels "
                                                                     "(default 320)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="pipeline workers (default and ceiling: the CPU count); the output is the same "
                             "for any number")
    defaults = AugmentConfig()
    augment = parser.add_argument_group("augmentation (as tools/train.py; defaults YOLOv5's hyp.scratch-low)")
    for name in AUGMENT_FLAGS:
        augment.add_argument(f"--{name}", type=float, default=getattr(defaults, name),
                             help=f"default {getattr(defaults, name)}")
    return parser


def _check_suffixes(args) -> None:
    """Refuse unsupported output formats before any work is done."""
    if args.output is not None and args.output.suffix.lower() not in GRID_IMAGE_SUFFIXES:
        raise ValueError(f"--output {args.output}: name the grid file with one of "
                         f"{', '.join(GRID_IMAGE_SUFFIXES)}")
    if args.labels is not None:
        try:
            check_figure_suffix(args.labels.suffix)
        except ValueError as error:
            raise ValueError(f"--labels {args.labels}: {error}") from None


def write_grid(args, manifest) -> str:
    note = span_note(sample_span(args.stage, num=args.num, num_images=manifest.num_images,
                                 per_batch_size=args.per_batch_size))
    if note:
        print(f"note: {note}", flush=True)
    options = {}
    if args.stage != "raw":
        options = dict(training_shape=args.training_shape, per_batch_size=args.per_batch_size,
                       resize_rate=args.resize_rate, num_workers=args.num_workers,
                       augment={name: getattr(args, name) for name in AUGMENT_FLAGS})
    samples = read_samples(args.mindrecord, stage=args.stage, num=args.num, seed=args.seed, **options)
    grid, geometry = render_grid(samples, manifest.class_names, tile_size=args.tile_size)
    write_file_atomic(args.output, encode_grid(grid, args.output.suffix))
    return (f"wrote {args.output}: {len(samples)} {args.stage} samples (seed {args.seed}) in a "
            f"{geometry.rows}x{geometry.cols} grid, {grid.shape[1]}x{grid.shape[0]} pixels")


def write_labels(args) -> str:
    stats, manifest = dataset_label_statistics(args.mindrecord, num_workers=args.num_workers)
    print(format_statistics(stats, manifest.category_keys))
    figure = label_figure(stats, manifest.class_names)
    write_file_atomic(args.labels, encode_figure(figure, args.labels.suffix))
    return f"wrote {args.labels}"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is None and args.labels is None:
        parser.error("nothing to do: give --output FILE (sample grid), --labels FILE (statistics) or both")
    try:
        if args.num < 1:
            raise ValueError(f"--num must be at least 1, got {args.num}")
        if args.per_batch_size is not None and args.per_batch_size < 1:
            raise ValueError(f"--per_batch_size must be at least 1, got {args.per_batch_size}")
        if args.tile_size < 32:
            raise ValueError(f"--tile_size must be at least 32 pixels, got {args.tile_size}")
        _check_suffixes(args)
        AugmentConfig.from_mapping({name: getattr(args, name) for name in AUGMENT_FLAGS})
        if args.output is not None and args.stage != "raw":
            multiscale_shapes(args.training_shape)  # a multiple of 32, else a message saying so
        # a missing or incomplete folder fails here, before MindSpore starts
        manifest = load_manifest(args.mindrecord)
        if args.labels is not None:
            print(write_labels(args))
        if args.output is not None:
            print(write_grid(args, manifest))
        return EXIT_OK
    except (ManifestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as error:  # MindRecord reports damaged shards as RuntimeError
        print(f"error: reading {args.mindrecord} failed: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # e.g. the output folder cannot be created or written
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; no partial output file was left", file=sys.stderr)
        return EXIT_INTERRUPTED
