"""``python -m hyperfeat.cli``."""

import sys

from hyperfeat.cli import main

sys.exit(main())
