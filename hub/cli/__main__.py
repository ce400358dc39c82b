"""``python -m hub.cli`` is the ``smartshelf`` command."""

import sys

from hub.cli import main

sys.exit(main())
