"""``python -m tools.cli``: the ``knute`` command without the console script."""

import sys

from knute.tools.cli import main

sys.exit(main())
