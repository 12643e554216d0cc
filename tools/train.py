"""Train YOLOv5 on MindRecord shards, on one device or many (msrun): the same command as
`yolo-train` (yolomodel.cli.train); --help for the flags."""
import sys

from yolomodel.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
