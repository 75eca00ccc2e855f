"""Evaluate a checkpoint: python eval.py --checkpoint CKPT [data=spair|cub|pf_willow] [task=davis|jhmdb|tapvid] [key=value ...]"""

import sys

from hyperfeat.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
