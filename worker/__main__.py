"""`python -m worker` is the `liquidator` command."""

import sys

from worker.cli import main

sys.exit(main())
