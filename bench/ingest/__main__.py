"""``python -m bench.ingest``."""

import sys

from bench.ingest.cli import main

if __name__ == "__main__":
    sys.exit(main())
