"""Bad targets and settings get a clear error naming the file and the line or key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import clean_env, event_lines, run_cli
from worker.errors import InputError
from worker.inputs.settings import load_settings
from worker.inputs.targets import read_targets
from worker.simulator import Simulator


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_targets_whole_accounts_named_instruments_and_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.toml",
        '[[accounts]]\nid = 19816\nexclude = ["SPY"]\n\n'
        '[[accounts]]\nid = 19817\ninstruments = ["GOOG", "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa"]\n'
        "cancel_orders = false\n",
    )
    specs = read_targets([path])
    assert [(s.account_id, s.instrument, s.cancel_orders) for s in specs] == [
        (19816, None, True),
        (19817, "GOOG", False),
        (19817, "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa", False),
    ]
    assert specs[0].exclude == frozenset({"SPY"})


def test_csv_targets_with_star_for_a_whole_account(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "account_id,instrument\n19816,*\n\n19817,GOOG\n")
    specs = read_targets([path])
    assert [(s.account_id, s.instrument) for s in specs] == [(19816, None), (19817, "GOOG")]


def test_command_line_targets() -> None:
    specs = read_targets([], accounts=["19816"], positions=["19817:GOOG", "19818:*"])
    assert [(s.account_id, s.instrument) for s in specs] == [
        (19816, None),
        (19817, "GOOG"),
        (19818, None),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.toml", "[[accounts]\nid = 1\n", r"t\.toml: not valid TOML: .*line 1"),
        ("t.toml", "[[accounts]]\nid = 1\ncolour = 1\n", r"accounts\[1\]: unknown key 'colour'"),
        ("t.toml", "[[accounts]]\nid = -4\n", r"accounts\[1\]\.id: .*positive integer"),
        ("t.toml", "[[accounts]]\nid = 'abc'\n", r"accounts\[1\]\.id: .*positive integer"),
        ("t.toml", "[[accounts]]\nid = true\n", r"accounts\[1\]\.id: .*positive integer"),
        ("t.toml", "[[accounts]]\ninstruments = ['X']\n", r"accounts\[1\]: missing key 'id'"),
        ("t.toml", "[[accounts]]\nid = 1\ninstruments = ['']\n", r"accounts\[1\]\.instruments"),
        ("t.toml", "[[accounts]]\nid = 1\ncancel_orders = 'no'\n", r"cancel_orders: expected"),
        ("t.toml", "[other]\nx = 1\n", r"unknown key 'other'"),
        ("t.toml", "  \n", r"t\.toml: the targets file is empty"),
        ("t.csv", "", r"t\.csv: the targets file is empty"),
        ("t.csv", "acct,instr\n1,X\n", r"t\.csv:1: expected the header"),
        ("t.csv", "account_id,instrument\n1,X\nfoo,Y\n", r"t\.csv:3: account_id: .*positive"),
        ("t.csv", "account_id,instrument\n1,X,Z\n", r"t\.csv:2: expected 2 columns"),
        ("t.csv", "account_id,instrument\n1,\n", r"t\.csv:2: instrument is empty"),
        ("t.csv", "account_id,instrument\n", r"t\.csv: no target rows"),
        ("t.json", "{}", r"t\.json: unknown targets format"),
        # An empty list is not "everything".
        ("t.toml", "[[accounts]]\nid = 1\ninstruments = []\n",
         r"t\.toml: accounts\[1\]\.instruments: the list is empty"),
        ("t.toml", "[[accounts]]\nid = 1\nexclude = ['S\u0420Y']\n",  # Cyrillic Р
         r"accounts\[1\]\.exclude: 'SРY' is not a symbol"),
        ("t.toml", "[[accounts]]\nid = 1\nexclude = ['SPY;']\n", r"accounts\[1\]\.exclude: 'SPY;'"),
        ("t.toml", "[[accounts]]\nid = 1\ninstruments = ['GOOG\u200b']\n",  # zero-width space
         r"accounts\[1\]\.instruments: 'GOOG\\u200b' is not a symbol"),
        ("t.csv", "account_id,instrument\n1000\u00b2,X\n", r"t\.csv:2: account_id: .*positive"),
        ("t.csv", "account_id,instrument\n\uff11\uff10\uff10\uff10,X\n",
         r"t\.csv:2: account_id: .*positive"),
        ("t.csv", "account_id,instrument\n1000,G\u041eOG\n", r"t\.csv:2: instrument: 'GОOG'"),
    ],
)  # fmt: skip
def test_bad_targets_name_the_file_and_place(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        read_targets([write(tmp_path, name, text)])


def _sent(sim: Simulator) -> int:
    """Requests that change anything, counted at the server."""
    return sum(sim.stats.by_route[r] for r in ("close", "submit", "cancel"))


@pytest.mark.parametrize("typo", ["SPYY", "S0004.", "mangled-uuid"])
async def test_an_exclude_that_names_no_instrument_refuses_the_run_before_any_close(
    sim: Simulator, tmp_path: Path, typo: str
) -> None:
    sim.add_account(20001)
    spy = sim.add_position(20001, "SPY", "100")
    sim.add_position(20001, "AAPL", "10")
    if typo == "mangled-uuid":
        typo = spy[:-1] + ("0" if spy[-1] != "0" else "1")
    targets = write(tmp_path, "t.toml", f'[[accounts]]\nid = 20001\nexclude = ["{typo}"]\n')
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    for command in (("run", "--yes"), ("check",)):
        code, out = await run_cli(
            *command, "--log-format", "json", "--base-url", sim.base_url,
            "--targets", str(targets), env=env,
        )  # fmt: skip
        assert code == 2, out
        [aborted] = event_lines(out, "run_aborted")
        assert f"t.toml: accounts[1].exclude: '{typo}' names no instrument" in str(
            aborted["reason"]
        )
        assert event_lines(out, "plan_ready") == []
    assert _sent(sim) == 0
    assert sim.position_quantity(20001, "SPY") == 100


async def test_an_exclude_the_api_knows_but_the_account_does_not_hold_excludes_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_account(20001)
    sim.add_position(20001, "SPY", "100")
    sim.add_position(20001, "AAPL", "10")
    targets = write(tmp_path, "t.toml", '[[accounts]]\nid = 20001\nexclude = ["spy", "MSFT"]\n')
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    code, out = await run_cli(
        "run", "--yes", "--log-format", "json", "--base-url", sim.base_url,
        "--targets", str(targets), env=env,
    )  # fmt: skip
    assert code == 0, out
    assert sim.stats.by_route["instrument"] == 1  # MSFT looked up; SPY matched the listing
    assert sim.position_quantity(20001, "SPY") == 100
    assert sim.position_quantity(20001, "AAPL") == 0


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        ("t.csv", "account_id,instrument\n1000\u00b2,GOOG\n", "t.csv:2: account_id"),
        ("t.csv", "account_id,instrument\n\uff11\uff10\uff10\uff10,GOOG\n", "t.csv:2: account_id"),
        ("t.toml", "[[accounts]]\nid = 1000\ninstruments = []\n", "accounts[1].instruments"),
    ],
)  # fmt: skip
async def test_a_targets_file_that_could_mean_something_else_exits_2_with_nothing_sent(
    sim: Simulator, tmp_path: Path, name: str, text: str, named: str
) -> None:
    sim.add_account(1000)
    sim.add_position(1000, "GOOG", "10")
    env = clean_env(LIQUIDATOR_API_KEY=sim.config.api_key, STATE_DIRECTORY=str(tmp_path))
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    code, out = await run_cli(
        "run", "--yes", "--base-url", sim.base_url, "--targets", str(path), env=env
    )
    assert code == 2, out
    assert named in out
    assert "Traceback" not in out
    assert sim.stats.requests == 0


def test_unreadable_targets_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.toml: cannot read"):
        read_targets([tmp_path / "missing.toml"])


def test_no_targets_at_all_is_an_error() -> None:
    with pytest.raises(InputError, match="no targets"):
        read_targets([])


@pytest.mark.parametrize(
    "raw", ["GOOG", "19816", "x:GOOG", "0:GOOG", "19816:", "19816:G\u041eOG", "\uff11\uff19:GOOG"]
)
def test_bad_position_flags(raw: str) -> None:
    with pytest.raises(InputError, match="--position"):
        read_targets([], positions=[raw])


def test_settings_precedence_cli_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "s.toml", "concurrency = 3\nrate_limit = 7\nmax_attempts = 2\n")
    monkeypatch.setenv("LIQUIDATOR_RATE_LIMIT", "9")
    monkeypatch.setenv("LIQUIDATOR_MAX_ATTEMPTS", "4")
    settings = load_settings({"max_attempts": 6}, path)
    assert (settings.concurrency, settings.rate_limit, settings.max_attempts) == (3, 9, 6)


def test_settings_defaults_an_operator_can_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    settings = load_settings({}, None)
    assert settings.base_url == "https://api.clearstreet.com"
    assert settings.concurrency == 16
    assert settings.rate_limit == 20
    assert settings.request_timeout == 5
    assert settings.max_attempts == 8
    assert settings.api_key is None


def test_state_dir_defaults_to_systemds_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert load_settings({}, None).state_dir == tmp_path / "state"


def test_api_key_from_systemd_credential_when_env_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clearstreet-api-key").write_text("cred-id.cred-secret\n")
    monkeypatch.delenv("LIQUIDATOR_API_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings({}, None)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "cred-id.cred-secret"
    assert "cred-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concurrency = 0\n", r"s\.toml: key 'concurrency': .*greater than or equal to 1"),
        ("colour = 1\n", r"s\.toml: unknown key 'colour'"),
        ("base_url = 'http://api.example.com'\n", r"base_url.*only for loopback"),
        ("concurrency = \n", r"s\.toml: not valid TOML"),
        ("api_key = 42\n", r"s\.toml: key 'api_key'"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_settings({}, write(tmp_path, "s.toml", text))


def test_plain_http_is_accepted_for_loopback_only() -> None:
    assert load_settings({"base_url": "http://127.0.0.1:8080"}, None).base_url.startswith("http:")
    with pytest.raises(InputError, match="--base-url"):
        load_settings({"base_url": "http://10.0.0.5"}, None)


def test_a_bad_key_value_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", "api_key = ['secret-in-a-list']\n")
    with pytest.raises(InputError) as caught:
        load_settings({}, path)
    assert "secret-in-a-list" not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.toml", r"missing\.toml: cannot read the settings file: No such"),
        (lambda d: d, r": cannot read the settings file: not a regular file"),
        (
            lambda d: write_bytes(d / "latin.toml", b"base_url = '\xe9'\n"),
            r"latin\.toml: not valid TOML: not UTF-8 at byte 12",
        ),
    ],
)
def test_a_settings_file_that_cannot_be_read_is_named(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        load_settings({}, make(tmp_path))


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_settings_file_keys_are_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", "Concurrency = 3\nRATE_LIMIT = 7\n")
    settings = load_settings({}, path)
    assert (settings.concurrency, settings.rate_limit) == (3, 7)
    with pytest.raises(InputError, match=r"s\.toml: key 'concurrency': .*greater than"):
        load_settings({}, write(tmp_path, "s.toml", "CONCURRENCY = 0\n"))


def test_an_unknown_settings_key_lists_the_known_ones(tmp_path: Path) -> None:
    message = r"s\.toml: unknown key 'Colour' \(known: .*api_key, .*stop_grace\)"
    with pytest.raises(InputError, match=message):
        load_settings({}, write(tmp_path, "s.toml", "concurrency = 2\nColour = 1\n"))


def test_liquidator_config_names_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIQUIDATOR_CONFIG", str(write(tmp_path, "s.toml", "concurrency = 3\n")))
    assert load_settings({}, None).concurrency == 3
    assert load_settings({}, write(tmp_path, "t.toml", "concurrency = 4\n")).concurrency == 4
    monkeypatch.setenv("LIQUIDATOR_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(InputError, match=r"gone\.toml: cannot read"):
        load_settings({}, None)


def test_a_bad_environment_value_names_the_variable_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIQUIDATOR_CONCURRENCY", "many-secret")
    path = write(tmp_path, "s.toml", "concurrency = 2\n")
    with pytest.raises(InputError, match="environment LIQUIDATOR_CONCURRENCY") as caught:
        load_settings({}, path)
    assert "many-secret" not in str(caught.value)
    assert load_settings({"concurrency": 5}, path).concurrency == 5


def test_a_mistyped_environment_variable_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIQUIDATOR_CONCURENCY", "many-secret")
    with pytest.raises(InputError) as caught:
        load_settings({}, None)
    assert str(caught.value) == (
        "environment LIQUIDATOR_CONCURENCY: not a liquidator setting;"
        " did you mean LIQUIDATOR_CONCURRENCY?"
    )
    monkeypatch.delenv("LIQUIDATOR_CONCURENCY")
    monkeypatch.setenv("liquidator_colour", "blue")
    with pytest.raises(InputError, match="environment liquidator_colour: not a liquidator"):
        load_settings({}, None)


def test_the_variables_that_are_not_settings_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.inputs.settings import NOT_SETTINGS

    assert set(NOT_SETTINGS) == {"LIQUIDATOR_CONFIG", "LIQUIDATOR_TEST_PG_BIN"}
    monkeypatch.setenv("LIQUIDATOR_TEST_PG_BIN", str(tmp_path))
    monkeypatch.setenv("LIQUIDATOR_CONFIG", str(write(tmp_path, "s.toml", "concurrency = 3\n")))
    monkeypatch.setenv("liquidator_rate_limit", "7")  # read case-insensitively, so known
    settings = load_settings({}, None)
    assert (settings.concurrency, settings.rate_limit) == (3, 7)


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("LIQUIDATOR_STATE_DIR", "", r"environment LIQUIDATOR_STATE_DIR: .*is empty"),
        ("LIQUIDATOR_STATE_DIR", "  ", r"environment LIQUIDATOR_STATE_DIR: .*is empty"),
        ("LIQUIDATOR_METRICS_FILE", "", r"environment LIQUIDATOR_METRICS_FILE: .*is empty"),
        ("LIQUIDATOR_CONFIG", "", r"environment LIQUIDATOR_CONFIG: is empty"),
    ],
)
def test_an_empty_path_setting_is_refused_not_taken_as_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, message: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(InputError, match=message):
        load_settings({}, None)


def test_an_empty_path_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"s\.toml: key 'state_dir': .*is empty"):
        load_settings({}, write(tmp_path, "s.toml", "state_dir = ''\n"))


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ((), {"LIQUIDATOR_CONCURENCY": "4"}, "did you mean LIQUIDATOR_CONCURRENCY?"),
        ((), {"LIQUIDATOR_STATE_DIR": ""}, "LIQUIDATOR_STATE_DIR: Value error, is empty"),
        (("--state-dir", ""), {}, "argument --state-dir: is empty"),
        (("--metrics-file", " "), {}, "argument --metrics-file: is empty"),
    ],
)
async def test_a_mistyped_or_empty_setting_exits_2_with_nothing_sent(
    sim: Simulator, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
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
    assert named in out
    assert sim.stats.requests == 0
