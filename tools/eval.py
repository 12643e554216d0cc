"""COCO mAP evaluation of a YOLOv5 checkpoint on MindRecord shards, or of a results file: the same command as
`yolo-eval` (yolomodel.cli.eval); --help for the flags."""
import sys

from yolomodel.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
