"""CLOSE_STYLE read from the settings: the collar its protected limits are priced with, the IOC
waves' schedule (PROTECTED_VIA=ioc_waves), and what the plan says of the style."""

from __future__ import annotations

from worker.closing.collar import Collar
from worker.closing.waves import Waves
from worker.inputs.settings import Settings


def collar_of(settings: Settings) -> Collar | None:
    """CLOSE_STYLE=protected: the collar its limits are priced and re-priced with."""
    if settings.close_style != "protected":
        return None
    return Collar(
        first_bps=settings.collar_bps,
        max_bps=settings.collar_max_bps,
        reprice_s=settings.reprice_s,
        deadline_s=settings.deadline_s,
    )


def waves_of(settings: Settings) -> Waves | None:
    """PROTECTED_VIA=ioc_waves: the schedule of the protected targets' IOC waves."""
    collar = collar_of(settings)
    if collar is None or settings.protected_via != "ioc_waves":
        return None
    return Waves(collar, rate_limit=settings.rate_limit, batch_size=settings.batch_size)


def style_line(settings: Settings) -> str | None:
    """What the plan says of CLOSE_STYLE=protected; None for market orders."""
    if settings.close_style != "protected":
        return None
    rest = "at the close" if settings.at_close else "at market"
    if settings.protected_via == "ioc_waves":
        return (
            f"protected: IOC LIMIT waves every {settings.reprice_s:g} s from"
            f" {settings.collar_bps:g} to {settings.collar_max_bps:g} bps past the arrival"
            f" quote; the rest {rest} {settings.deadline_s:g} s after the first send"
        )
    return (
        f"protected: LIMIT {settings.collar_bps:g} bps past the touch, re-priced every"
        f" {settings.reprice_s:g} s up to {settings.collar_max_bps:g} bps; the rest {rest}"
        f" {settings.deadline_s:g} s after the first send"
    )
