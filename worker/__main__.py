"""`python -m worker`, and the `liquidator` command (`run`).

Start-up imports build a few hundred thousand long-lived objects (aiohttp, pydantic's schemas);
the collector's passes over them find nothing and cost ~25 ms of CPU, a tenth of start-up.
Collection is off until `worker.cli.main.main` has frozen them and turned it back on.

structlog imports rich, when it is installed, only to choose the console renderer's default
traceback format: ~30 ms of every start-up, for a default the worker never uses
(`events.configure` names its own). rich is hidden from that one import; the terminal views
import it as usual.
"""

import gc
import sys

gc.disable()

if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]  # (an import of it fails at once)
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]

from worker.cli.main import main  # noqa: E402  (after gc.disable(), on purpose)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
