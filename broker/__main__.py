"""``python -m broker`` is ``rsbroker``: lets tools start nodes with a given interpreter."""

import sys

from broker.cli import main

sys.exit(main())
