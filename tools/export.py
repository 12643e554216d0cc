"""Export a YOLOv5 checkpoint as MINDIR, ONNX or AIR: the same command as
`yolo-export` (yolomodel.cli.export); --help for the flags."""
import sys

from yolomodel.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
