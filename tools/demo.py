"""The whole chain on the built-in synthetic dataset (what `make demo` runs): the same command as
`yolo-demo` (yolomodel.cli.demo); --help for the flags."""
import sys

from yolomodel.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
