"""``python -m zodb_swiftblobs.cli``: the ``zodb-swiftblobs`` command."""

import sys

from . import main

sys.exit(main())
