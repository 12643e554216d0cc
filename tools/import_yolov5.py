"""Import a PyTorch YOLOv5 checkpoint (.pt) as a .ckpt of this toolkit, without torch: the same command as
`yolo-import-yolov5` (yolomodel.cli.import_yolov5); --help for the flags."""
import sys

from yolomodel.cli.import_yolov5 import main

if __name__ == "__main__":
    sys.exit(main())
