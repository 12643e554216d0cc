"""Convert a detection dataset (COCO json, YOLO txt with --format yolo, Pascal VOC with --format voc) into MindRecord shards: the same command as `yolo-coco2mindrecord` (yolodata.cli.coco2mindrecord); --help for the flags."""
import sys

from yolodata.cli.coco2mindrecord import main

if __name__ == "__main__":
    sys.exit(main())
