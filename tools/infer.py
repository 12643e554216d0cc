"""Detect objects in image files with a YOLOv5 checkpoint and draw them: the same command as
`yolo-infer` (yolomodel.cli.infer); --help for the flags."""
import sys

from yolomodel.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
