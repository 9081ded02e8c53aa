"""``python -m emostream …`` is the ``emostream`` command."""

import sys

from emostream.edge.cli import main

sys.exit(main())
