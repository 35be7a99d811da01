"""``python -m tinylm``: see tinylm.cli."""

import sys

from tinylm.cli import main

sys.exit(main())
