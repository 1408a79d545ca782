"""``python -m bench SUITE [--quick] [--json FILE] [--plot FILE.png]``."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m bench"))
