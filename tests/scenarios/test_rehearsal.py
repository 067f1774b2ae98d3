"""docs/protected.md's "Rehearse it", run as written: against books, a protected close fills
part at its limit, escalates the rest at market, and costs something."""

from __future__ import annotations

import json
import re
import shlex
from decimal import Decimal
from pathlib import Path

from tests.support import clean_env, event_lines, run_cli

PAGE = Path(__file__).resolve().parents[2] / "docs" / "protected.md"


def rehearsal_command() -> tuple[dict[str, str], list[str]]:
    """The section's command: its environment assignments, and its arguments after `liquidator`."""
    section = PAGE.read_text().split("## Rehearse it", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    words = shlex.split(block)
    env: dict[str, str] = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[0] == "liquidator", words
    return env, words[1:]


async def test_the_documented_rehearsal_fills_part_at_the_limit_and_escalates_the_rest(
    tmp_path: Path,
) -> None:
    env, args = rehearsal_command()
    report = tmp_path / "rehearsal.json"
    args[args.index("--report") + 1] = str(report)
    code, out = await run_cli(
        *args,
        env=clean_env(**env, STATE_DIRECTORY=str(tmp_path), LIQUIDATOR_LOG_FORMAT="json"),
    )
    assert code == 0, out[-3000:]
    results = {r["instrument"]: r for r in json.loads(report.read_text())["results"]}
    assert {r["outcome"] for r in results.values()} == {"closed"}

    # The thin name: its limit filled part, never past its limit; the rest went at market.
    thin = results["NVDA"]
    limit, market = thin["orders"]
    assert (limit["order_type"], market["order_type"]) == ("LIMIT", "MARKET")
    quantity = abs(Decimal(thin["quantity"]))
    filled_at_limit = Decimal(limit["filled_quantity"])
    assert 0 < filled_at_limit < quantity
    assert limit["status"] == "CANCELED"
    buying = limit["side"] == "BUY"
    last_limit, average = Decimal(limit["limit_price"]), Decimal(limit["average_fill_price"])
    assert average <= last_limit if buying else average >= last_limit
    assert Decimal(market["filled_quantity"]) == quantity - filled_at_limit
    assert Decimal(thin["cost"]) > 0
    [escalated] = [e for e in event_lines(out, "close_escalated") if e["instrument"] == "NVDA"]
    assert Decimal(str(escalated["remaining"])) == quantity - filled_at_limit
    assert escalated["limit_price"] == limit["limit_price"]
    assert escalated["order_type"] == "LIMIT"

    # The deep one: its first limit filled whole at once, at about half the spread.
    deep = results["GOOG"]
    [only] = deep["orders"]
    assert (only["order_type"], only["status"]) == ("LIMIT", "FILLED")
    assert Decimal(deep["cost"]) > 0

    # Every order's first event carries its type and limit price (the first limit's too).
    orders = event_lines(out, "close_order")
    assert {(e["order_type"], e["limit_price"] is None) for e in orders} == {
        ("LIMIT", False),
        ("MARKET", True),
    }
    first = next(e for e in orders if e["order_id"] == limit["id"])
    assert Decimal(str(first["limit_price"])) > 0
    assert all(e["order_type"] == "LIMIT" for e in event_lines(out, "order_repriced"))
