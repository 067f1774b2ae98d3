"""The protected style's arithmetic (`worker.closing.collar`) and its settings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support import clean_env, run_cli
from worker.api.client import NewOrder
from worker.closing.collar import Collar, limit_price
from worker.errors import InputError
from worker.inputs.settings import load_settings
from worker.simulator import Simulator

D = Decimal


def test_a_sell_is_priced_the_collar_below_the_bid_rounded_up_to_the_cent() -> None:
    # 100.00 x 100.10, 5 bps: 100.00 x 0.9995 = 99.95 exactly.
    assert limit_price("SELL", D("100.00"), D("100.10"), 5) == D("99.95")
    # 33.33 x 0.9993 = 33.306669: up to 33.31, never below the collar (33.30 would be).
    assert limit_price("SELL", D("33.33"), D("33.40"), 7) == D("33.31")


def test_a_buy_is_priced_the_collar_above_the_ask_rounded_down_to_the_cent() -> None:
    assert limit_price("BUY", D("100.00"), D("100.10"), 5) == D("100.15")  # 100.150050 -> .15
    assert limit_price("BUY", D("33.33"), D("33.41"), 7) == D("33.43")  # 33.433387 -> .43


def test_below_a_dollar_the_tick_is_a_hundredth_of_a_cent() -> None:
    assert limit_price("SELL", D("0.5012"), D("0.5020"), 10) == D("0.5007")  # 0.50069880 up
    assert limit_price("BUY", D("0.5012"), D("0.5020"), 10) == D("0.5025")  # 0.50250200 down
    # As the order's body spells them: to the tick, never in exponent form.
    assert _body_price(limit_price("SELL", D("0.5012"), D("0.5020"), 10)) == "0.5007"
    assert _body_price(limit_price("SELL", D("99.90"), D("100.00"), 0)) == "99.90"


def _body_price(price: Decimal | None) -> str:
    assert price is not None
    return NewOrder("lq-x-g0", "iid", "SELL", D(1), price).as_body("DAY")["limit_price"]


def test_a_collar_of_zero_is_the_touch_and_no_quote_prices_nothing() -> None:
    assert limit_price("SELL", D("10.00"), D("10.02"), 0) == D("10.00")
    assert limit_price("BUY", D("10.00"), D("10.02"), 0) == D("10.02")
    assert limit_price("SELL", None, D("10.02"), 5) is None
    assert limit_price("BUY", D("10.00"), None, 5) is None
    assert limit_price("SELL", D("10.05"), D("10.00"), 5) is None  # crossed: not a quote to trust


def test_the_collar_widens_linearly_to_the_max_at_the_last_reprice() -> None:
    collar = Collar(first_bps=5, max_bps=50, reprice_s=5, deadline_s=60)
    # Re-prices at 5, 10, ... 55 s; the tick at 60 s escalates.
    assert collar.reprices == 11
    assert collar.bps_at(0) == 5
    assert collar.bps_at(1) == pytest.approx(5 + 45 / 11)
    assert collar.bps_at(11) == 50
    assert collar.bps_at(30) == 50  # never past the max
    # A deadline that is not a whole number of re-prices: those before it.
    assert Collar(5, 50, 5, 7).reprices == 1
    assert Collar(5, 50, 5, 7).bps_at(1) == 50
    assert Collar(5, 50, 10, 5).reprices == 0
    assert Collar(5, 50, 10, 5).bps_at(3) == 5


def test_defaults_and_protected_implies_submit_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CLOSE_VIA", "CLOSE_STYLE", "AT_CLOSE"):
        monkeypatch.delenv(f"LIQUIDATOR_{key}", raising=False)
    settings = load_settings({}, None)
    assert settings.close_style == "market"
    assert (settings.collar_bps, settings.collar_max_bps) == (5, 50)
    assert (settings.reprice_s, settings.deadline_s) == (5, 60)
    monkeypatch.setenv("LIQUIDATOR_CLOSE_STYLE", "Protected")
    settings = load_settings({}, None)
    assert (settings.close_style, settings.close_via) == ("protected", "submit_orders")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"close_style": "protected", "close_via": "close_position"},
            "--close-style: .*submit_orders",
        ),
        ({"collar_bps": 60, "collar_max_bps": 50}, "--collar-max-bps: .*collar_bps"),
        ({"reprice_s": 0}, "--reprice-s"),
        ({"deadline_s": -1}, "--deadline-s"),
        ({"close_style": "gentle"}, "--close-style"),
    ],
)
def test_bad_protected_settings_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_settings(values, None)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (
            ("--close-style", "protected", "--close-via", "close_position"),
            {},
            "--close-style",
        ),
        (
            (),
            {"LIQUIDATOR_COLLAR_BPS": "60", "LIQUIDATOR_COLLAR_MAX_BPS": "50"},
            "LIQUIDATOR_COLLAR_MAX_BPS",
        ),
    ],
)
async def test_a_protected_config_error_exits_2_with_nothing_sent(
    sim: Simulator, tmp_path: object, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    sim.add_account(20001)
    sim.add_position(20001, "GOOG", "10")
    environment = clean_env(
        LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path), **env
    )
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--account", "20001", *args, env=environment
    )
    assert code == 2, out
    assert named in out, out
    assert "submit_orders" in out or "collar_bps" in out, out
    assert sim.stats.requests == 0


def test_a_reprice_never_goes_past_the_arrival_quotes_widest_collar() -> None:
    from worker.closing.collar import within_collar

    # Arrival 100.00 x 100.10, COLLAR_MAX 50 bps: a sell never below 99.50, a buy never above
    # 100.60, however far the touch walked.
    sell_bound = limit_price("SELL", D("100.00"), D("100.10"), 50)
    buy_bound = limit_price("BUY", D("100.00"), D("100.10"), 50)
    assert (sell_bound, buy_bound) == (D("99.50"), D("100.60"))
    assert within_collar("SELL", D("98.00"), sell_bound) == D("99.50")
    assert within_collar("SELL", D("100.20"), sell_bound) == D("100.20")  # the touch rose
    assert within_collar("BUY", D("101.00"), buy_bound) == D("100.60")
    assert within_collar("BUY", D("99.00"), None) == D("99.00")


def test_the_plan_says_how_protected_closes_are_priced() -> None:
    from worker.run.close_style import style_line

    assert style_line(load_settings({}, None)) is None
    line = style_line(load_settings({"close_style": "protected", "at_close": True}, None))
    assert line == (
        "protected: LIMIT 5 bps past the touch, re-priced every 5 s up to 50 bps; the rest at"
        " the close 60 s after the first send"
    )
