"""``python -m adaptrl.cli``: the ``adaptrl`` command."""

import sys

from adaptrl.cli import main

sys.exit(main())
