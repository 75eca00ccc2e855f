"""Train the aggregation network: python train.py [--config FILE] [key=value ...]"""

import sys

from hyperfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
