"""``python -m tools.cli``: the ``knute`` command without the console script."""

import sys

from tools.cli import main

sys.exit(main())
