"""``python -m rsbroker`` is ``rsbroker``: lets tools start nodes with a given interpreter."""

import sys

from rsbroker.cli import main

sys.exit(main())
