"""``python -m lrgmm``: the command-line interface (same as the ``lrgmm`` command)."""

import sys

from .cli import main

sys.exit(main())
