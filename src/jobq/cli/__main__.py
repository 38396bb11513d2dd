"""``python -m jobq.cli``: the same as the ``jobq`` command."""

import sys

from jobq.cli import main

if __name__ == "__main__":
    sys.exit(main())
