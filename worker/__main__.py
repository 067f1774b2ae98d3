"""`python -m worker`, and the `liquidator` command (`run`).

Start-up is kept short: the garbage collector stays off until `worker.cli.main.main` has frozen
the objects imports build, and structlog's import is kept from loading rich just to pick a
traceback format the worker never uses (bench/README.md, "Start-up and the journal's fixed costs").
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
