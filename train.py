"""Train a PGGAN: ``python train.py --help`` (same as ``python -m fastpggan train``)."""

import sys

from fastpggan.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
