"""Look at a converted dataset: the same command as `yolo-visualize` (yolodata.cli.visualize); --help for the flags."""
import sys

from yolodata.cli.visualize import main

if __name__ == "__main__":
    sys.exit(main())
