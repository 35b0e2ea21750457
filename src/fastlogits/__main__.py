"""``python -m fastlogits`` and the ``fastlogits`` console script: see :mod:`fastlogits.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
