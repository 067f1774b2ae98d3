"""Accounts as the simulator answers them: the list (`get_accounts`), one account, balances.

Balances are derived from the account's book and move with its fills (Reg T, 2x, no P&L since
fills happen at the position's own price). Nothing here books an order.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from worker.simulator.config import SimConfig
from worker.simulator.replies import error, ok
from worker.simulator.state import Book, SimAccount

STARTING_CASH = Decimal("1000000.00")
Page = Callable[[web.Request, list[dict[str, Any]]], web.Response]


def account_core(account: SimAccount) -> dict[str, Any]:
    """The spec's Account (what `get_accounts` lists)."""
    return {
        "id": account.id,
        "account_holder_entity_id": 987654321,
        "full_name": f"Simulated account {account.id}",
        "short_name": f"SIM-{account.id}",
        "status": "ACTIVE",
        "type": "CUSTOMER",
        "subtype": "MARGIN",
        "open_date": "2023-01-15",
        "close_date": None,
        "options_level": 1,
    }


def account_details(account: SimAccount) -> dict[str, Any]:
    """The spec's AccountWithPersonalDetails (`get_account_by_id`)."""
    return {
        **account_core(account),
        "country_of_tax_residency": "US",
        "date_of_birth": None,
        "mailing_address": None,
        "phone_number": None,
    }


class AccountDesk:
    """The account routes' handlers, over the simulator's book."""

    def __init__(self, book: Book, config: SimConfig, page: Page) -> None:
        self.book = book
        self.config = config
        self.page = page

    async def list_accounts(self, request: web.Request, _: SimAccount | None) -> web.Response:
        """Every account the key may act on: `account_id` a prefix of the decimal id,
        `account_name` a case-insensitive part of the full name; both must match when given."""
        prefix = request.query.get("account_id", "")
        name = request.query.get("account_name", "").lower()
        listed = [
            account_core(account)
            for account_id, account in sorted(self.book.accounts.items())
            if account_id not in self.config.forbidden_accounts
            and str(account_id).startswith(prefix)
        ]
        return self.page(request, [a for a in listed if name in a["full_name"].lower()])

    async def account(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        return ok(account_details(account))

    async def balances(self, request: web.Request, account: SimAccount | None) -> web.Response:
        assert account is not None
        limit = request.query.get("top_margin_contributors_limit")
        if limit is not None and (not limit.isdigit() or int(limit) < 1):
            return error(400, "top_margin_contributors_limit must be a positive integer")
        return ok(self.balances_of(account))

    def balances_of(self, account: SimAccount) -> dict[str, Any]:
        positions = self.book.open_positions(account)  # applies the fills that are due
        values = [p.value() for p in positions]
        long_value = sum((v for v in values if v > 0), Decimal(0))
        short_value = -sum((v for v in values if v < 0), Decimal(0))
        cash = STARTING_CASH + sum((e.cash_flow() for e in account.executions), Decimal(0))
        equity = cash + long_value - short_value
        power = self.config.buying_power
        buying_power = power if power is not None else max(Decimal(0), equity * 2)
        return {
            "account_id": account.id,
            "currency": "USD",
            "buying_power": _money(buying_power),
            "equity": _money(equity),
            "long_market_value": _money(long_value),
            "short_market_value": _money(short_value),
            "settled_cash": _money(cash),
            "withdrawable_cash": _money(max(Decimal(0), cash)),
            "trade_cash": _money(cash),
            "open_order_adjustment": "0.00",
            "unsettled_credits": "0.00",
            "unsettled_debits": "0.00",
            "margin_type": "REG_T",
            "multiplier": "2",
            "margin_details": None,
            "unrealized_pnl": "0.00",
            "daily_unrealized_pnl": "0.00",
            "daily_pnl": "0.00",
            "daily_change": "0.00",
            "daily_realized_pnl": "0.00",
            # No start-of-day snapshot is kept: it repeats the current figures.
            "sod": {
                "asof": None,
                "buying_power": _money(buying_power),
                "equity": _money(equity),
                "long_market_value": _money(long_value),
                "short_market_value": _money(short_value),
            },
        }


def _money(value: Decimal) -> str:
    return f"{value:.2f}"
