"""``python -m influencekit``: the command line (``influencekit.cli``)."""

import sys

from .cli import main

sys.exit(main())
