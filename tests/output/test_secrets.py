"""No form of the key reaches any output, whatever the server echoes back.

A loopback server echoes every form back: in JSON error messages, in request ids, in plain-text and
HTML bodies (one cut so that an excerpt would end inside the key), in headers, in a 2xx order. The
test greps every output a run writes: events (JSON and console), the report, the journal's bytes,
the metrics file, and an internal error's traceback.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import structlog
from aiohttp import web

from tests.support import clean_env, run_cli, serving
from worker.cli import main as cli
from worker.inputs.secrets import secret_forms
from worker.inputs.targets import TargetSpec
from worker.observe import writer
from worker.results import TargetResult
from worker.run.runner import ExitCode, RunRequest, Watcher, run

KEY_ID = "ak-7Qm2"
SECRET = "sk-Zq9vR2xWp7LtY4"
KEY = f"{KEY_ID}.{SECRET}"
BEARER = f"Bearer {KEY}"
ACCOUNT = 19816
# The close of each symbol answers with a different echo.
SYMBOLS = ["MSG_BEARER", "MSG_SECRET", "HTML", "HEADERS", "CUT", "FILLED"]


def _instrument(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol))


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def _envelope(data: Any, request_id: str = "rid-ok") -> web.Response:
    return _json(200, {"data": data, "error": None, "metadata": {"request_id": request_id}})


def _failure(status: int, message: str, request_id: str) -> web.Response:
    body = {"error": {"code": status, "message": message}, "metadata": {"request_id": request_id}}
    return _json(status, body)


class EchoServer:
    """Answers like the API, but echoes what it was sent back in every way it can."""

    def __init__(self, *, reject_key: bool = False) -> None:
        self.reject_key = reject_key
        self.authorizations: list[str] = []
        self.closes = 0
        self.app = web.Application(middlewares=[self._record])
        self.app.router.add_get("/v1/clock", self.clock)
        self.app.router.add_get("/v1/accounts/{a}/positions", self.positions)
        self.app.router.add_get("/v1/accounts/{a}/orders", self.orders)
        self.app.router.add_delete("/v1/accounts/{a}/positions/{i}", self.close)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization", ""))
        response: web.StreamResponse = await handler(request)
        return response

    async def clock(self, request: web.Request) -> web.Response:
        if self.reject_key:
            return _failure(401, f"invalid key {KEY} (secret {SECRET}); you sent {BEARER}", KEY)
        return _envelope({"clock": datetime.now(UTC).isoformat()}, request_id=BEARER)

    async def positions(self, request: web.Request) -> web.Response:
        rows = [
            {
                "account_id": ACCOUNT,
                "instrument_id": _instrument(symbol),
                "symbol": symbol,
                "instrument_type": "COMMON_STOCK",
                "quantity": "10",
                "market_value": "1000.00",
                "position_type": "LONG",
            }
            for symbol in SYMBOLS
        ]
        return _envelope(rows, request_id=f"rid-{SECRET}")

    async def orders(self, request: web.Request) -> web.Response:
        page = f"<html><body><h1>500</h1><pre>Authorization: {BEARER}</pre></body></html>"
        return web.Response(status=500, text=page, content_type="text/html")

    async def close(self, request: web.Request) -> web.Response:
        self.closes += 1
        symbol = {_instrument(s): s for s in SYMBOLS}[request.match_info["i"]]
        sent = request.headers["Authorization"]
        if symbol == "MSG_BEARER":
            return _failure(400, f"bad header Authorization: {sent}", f"rid-{KEY}")
        if symbol == "MSG_SECRET":
            return _failure(422, f"the secret {SECRET} may not trade", SECRET)
        if symbol == "HTML":
            page = f"<html><body><p>upstream failed for {sent}</p><i>{SECRET}</i></body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        if symbol == "HEADERS":
            return web.Response(
                status=403,
                text=f"denied: {SECRET}",
                headers={"x-request-id": KEY, "WWW-Authenticate": sent},
            )
        if symbol == "CUT":  # the 200-character excerpt would end inside the key
            return web.Response(status=400, text="x" * 195 + sent, content_type="text/plain")
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": SECRET,
            "account_id": ACCOUNT,
            "side": "SELL",
            "quantity": "10",
            "order_type": "MARKET",
            "status": "PENDING_NEW",
            "filled_quantity": "0",
            "created_at": datetime.now(UTC).isoformat(),
            "symbol": KEY,
            "instrument_id": _instrument(symbol),
        }
        return _envelope([order], request_id=BEARER)


def _leaks(data: bytes) -> list[str]:
    """Which of the key's forms (or a piece of the secret) `data` holds."""
    pieces = [KEY, SECRET, BEARER, SECRET[:8], SECRET[-8:]]
    return [p for p in pieces if p.encode() in data]


class _Events:
    def __init__(self) -> None:
        self.raw = io.BytesIO()
        self.stream = io.TextIOWrapper(self.raw, write_through=True)


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_no_output_holds_any_form_of_the_key_whatever_the_server_echoes(
    fmt: Literal["json", "console"], settings_for: Any, tmp_path: Path
) -> None:
    server = EchoServer()
    out = _Events()
    report, metrics = tmp_path / "report.json", tmp_path / "metrics.prom"
    finished: list[TargetResult] = []

    class Watching(Watcher):
        def advance(self, result: TargetResult) -> None:
            # A fault of ours whose text holds the key: its traceback goes to internal_error.
            finished.append(result)
            if len(finished) == len(SYMBOLS):
                raise RuntimeError(f"worker bug while holding {BEARER} and {SECRET}")

    writer.configure(level="debug", fmt=fmt, secrets=secret_forms(KEY), stream=out.stream)
    try:
        async with serving(server.app) as base_url:
            result = await run(
                settings_for(
                    base_url=base_url,
                    api_key=KEY,
                    max_attempts=2,
                    metrics_file=metrics,
                    flat_timeout=0.5,  # the echo server's orders never fill
                ),
                RunRequest([TargetSpec(ACCOUNT, None)], report_path=report, watcher=Watching()),
                asyncio.Event(),
            )
    finally:
        writer.unconfigure()
        structlog.contextvars.clear_contextvars()

    # The server did echo: every close was answered, and with the key in hand.
    assert server.closes >= len(SYMBOLS)
    assert set(server.authorizations) == {BEARER}
    assert result.exit_code == ExitCode.ABORTED  # the internal error
    # At the source, replies are data as received (a short secret can occur inside an id):
    # only what leaves the process is scrubbed.
    filled = next(r for r in result.results if r.instrument == "FILLED")
    assert BEARER in filled.request_ids
    outputs = {
        "events": out.raw.getvalue(),
        "report": report.read_bytes(),
        "metrics": metrics.read_bytes(),
        **{f"journal {p.name}": p.read_bytes() for p in (tmp_path / "state").rglob("*")},
    }
    assert any(name.startswith("journal") for name in outputs)
    for name, data in outputs.items():
        assert _leaks(data) == [], f"{name} holds the key"
    # The echoes did reach the outputs, redacted: this test can fail.
    text = outputs["events"].decode()
    assert "internal_error" in text
    assert "Traceback" in text
    assert text.count("[REDACTED]") >= len(SYMBOLS)
    assert outputs["report"].count(b"[REDACTED]") >= len(SYMBOLS)


async def test_a_key_rejected_with_an_echo_leaves_no_trace_in_the_report_or_events(
    settings_for: Any, tmp_path: Path
) -> None:
    server = EchoServer(reject_key=True)
    out = _Events()
    report = tmp_path / "report.json"
    writer.configure(fmt="json", secrets=secret_forms(KEY), stream=out.stream)
    try:
        async with serving(server.app) as base_url:
            result = await run(
                settings_for(base_url=base_url, api_key=KEY, max_attempts=2),
                RunRequest([TargetSpec(ACCOUNT, None)], report_path=report),
                asyncio.Event(),
            )
    finally:
        writer.unconfigure()
        structlog.contextvars.clear_contextvars()
    assert result.exit_code == ExitCode.ABORTED
    assert result.aborted is not None
    assert "[REDACTED]" in result.aborted
    assert _leaks(result.aborted.encode()) == []
    assert _leaks(out.raw.getvalue()) == []
    assert _leaks(report.read_bytes()) == []
    assert server.closes == 0


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("no-dot-at-all", "no '.'"),
        (".only-secret", "empty id"),
        ("only-id.", "empty secret"),
        ("ak-1. sk-2", "whitespace"),
        (" ak-1.sk-2", "whitespace"),
        ("ak-1.sk-2\n", "whitespace"),
        ("ak-1.key", "secret shorter than 16 characters"),
        ("ak-1.sk-Zq9vR2xWp7Lt", "secret shorter than 16 characters"),  # 15
    ],
)
async def test_a_key_that_is_not_id_dot_secret_exits_2_before_any_request(
    key: str,
    why: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    server = EchoServer()
    for name in ("LIQUIDATOR_CONFIG", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIQUIDATOR_API_KEY", key)
    monkeypatch.setenv("LIQUIDATOR_STATE_DIR", str(tmp_path))
    async with serving(server.app) as base_url:
        code = cli.main(["run", "--yes", "--base-url", base_url, "--account", str(ACCOUNT)])
    err = capsys.readouterr().err
    assert code == 2
    assert why in err
    assert "environment LIQUIDATOR_API_KEY: the API key" in err
    assert server.authorizations == []  # nothing was sent
    if key.strip():
        assert key.strip() not in err
    secret = key.partition(".")[2].strip()
    if len(secret) > len("key"):  # a secret "key" is in any message about the API key
        assert secret not in err


async def test_a_short_secret_from_the_credential_names_the_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = EchoServer()
    (tmp_path / "clearstreet-api-key").write_text("ak-7Qm2.key\n")
    for name in ("LIQUIDATOR_CONFIG", "LIQUIDATOR_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("LIQUIDATOR_STATE_DIR", str(tmp_path / "state"))
    async with serving(server.app) as base_url:
        code = cli.main(["run", "--yes", "--base-url", base_url, "--account", str(ACCOUNT)])
    err = capsys.readouterr().err
    assert code == 2
    assert "credential clearstreet-api-key: the API key has a secret shorter than 16" in err
    assert "ak-7Qm2" not in err
    assert server.authorizations == []  # nothing was sent
    assert not (tmp_path / "state").exists()  # not even the journal


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_the_command_line_prints_no_form_of_the_key(fmt: str, tmp_path: Path) -> None:
    server = EchoServer()
    report, metrics, state = tmp_path / "r.json", tmp_path / "m.prom", tmp_path / "state"
    env = clean_env(
        LIQUIDATOR_API_KEY=KEY, LIQUIDATOR_MAX_ATTEMPTS="2", LIQUIDATOR_FLAT_TIMEOUT="0.5"
    )
    async with serving(server.app) as base_url:
        code, out = await run_cli(
            "run", "--yes", "--base-url", base_url, "--account", str(ACCOUNT),
            "--log-format", fmt, "--report", str(report), "--metrics-file", str(metrics),
            "--state-dir", str(state), env=env,
        )  # fmt: skip
    assert code == 1, out  # the echoing closes failed; the FILLED one closed
    assert server.closes >= len(SYMBOLS)
    outputs = {
        "stdout": out.encode(),
        "report": report.read_bytes(),
        "metrics": metrics.read_bytes(),
    }
    outputs |= {f"journal {p.name}": p.read_bytes() for p in state.rglob("*") if p.is_file()}
    for name, data in outputs.items():
        assert _leaks(data) == [], f"{name} holds the key"
    assert out.count("[REDACTED]") >= len(SYMBOLS) - 1
