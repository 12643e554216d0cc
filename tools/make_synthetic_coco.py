"""Write a synthetic COCO-format dataset: the same command as `yolo-make-synthetic-coco`
(yolodata.cli.make_synthetic_coco); --help for the flags."""
import sys

from yolodata.cli.make_synthetic_coco import main

if __name__ == "__main__":
    sys.exit(main())
