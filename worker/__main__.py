"""`python -m worker`, and the `liquidator` command (`run`).

Start-up imports build a few hundred thousand long-lived objects (aiohttp, pydantic's schemas);
the collector's passes over them find nothing and cost ~25 ms of CPU, a tenth of start-up.
Collection is off until `worker.cli.main` has frozen them and turned it back on.
"""

import gc
import sys

gc.disable()

from worker.cli import main  # noqa: E402  (after gc.disable(), on purpose)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
