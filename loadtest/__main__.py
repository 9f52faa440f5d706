"""``python -m loadtest``: the fleet simulator (the same as ``evgate simulate``)."""

import sys

from loadtest.cli import main

sys.exit(main())
