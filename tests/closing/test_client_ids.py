"""The client id of a submitted close: short, deterministic, and distinct where it must be."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from worker.closing.client_ids import MAX_LENGTH, SHAPE, client_order_id

IID = "c3c4c5c6-d3d4-e3e4-f3f4-f5f6f7f8f9fa"
OTHER_IID = "d4d5d6d7-e4e5-f4f5-a4a5-a6a7a8a9aaab"


def test_the_id_fits_the_spec_and_has_the_documented_shape() -> None:
    longest = client_order_id("j" * 10_000, 2**63 - 1, "x" * 500, 9_999_999_999)
    for cid in (client_order_id("2026-11-25/flatten", 19816, IID, 0), longest):
        assert len(cid) <= MAX_LENGTH
        assert SHAPE.match(cid), cid
    assert len(longest) == 39


def test_the_same_inputs_give_the_same_id_in_another_process() -> None:
    here = client_order_id("job-a", 19816, IID, 1)
    code = (
        "from worker.closing.client_ids import client_order_id;"
        f"print(client_order_id('job-a', 19816, {IID!r}, 1))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == here
    # Pinned: a change to the derivation would orphan every journaled id of a resumed run.
    assert here == "lq-wxgazle2ej33czbz4kxelfro-g1"


@pytest.mark.parametrize(
    "other",
    [
        ("job-b", 19816, IID, 0),  # another job
        ("job-a", 19817, IID, 0),  # another account
        ("job-a", 19816, OTHER_IID, 0),  # another instrument
        ("job-a", 19816, IID, 1),  # a residue close
        ("job-a1", 9816, IID, 0),  # parts that would run together if simply joined
    ],
)
def test_any_other_input_gives_another_id(other: tuple[str, int, str, int]) -> None:
    assert client_order_id(*other) != client_order_id("job-a", 19816, IID, 0)


def test_ids_do_not_collide_over_many_positions() -> None:
    ids = {client_order_id("job", a, f"instrument-{i}", 0) for a in range(100) for i in range(100)}
    assert len(ids) == 10_000


@pytest.mark.parametrize(("job", "generation"), [("", 0), ("job", -1), ("job", 10**10)])
def test_bad_inputs_are_refused(job: str, generation: int) -> None:
    with pytest.raises(ValueError, match=r"job key|generation"):
        client_order_id(job, 1, IID, generation)


@pytest.mark.parametrize(
    ("job", "account_id", "instrument_id"),
    [
        ("job-a", 19816, IID),
        ("2026-11-25/flatten", 1, IID.upper()),
        ('a "quoted" job\\with a backslash', 0, "x,y:z"),
        ("jöb ünïcode ✓", 2**63 - 1, "ÉTF-🙂"),
        ("\u0000ctrl\t\n", 42, "\ud800"),
    ],
)
def test_the_material_is_the_json_list_it_always_was(
    job: str, account_id: int, instrument_id: str
) -> None:
    """Built from its parts for speed, the hashed text is still json.dumps of the list."""
    import base64
    import hashlib

    material = json.dumps([job, account_id, instrument_id.lower()], separators=(",", ":"))
    digest = hashlib.sha256(material.encode()).digest()[:15]
    expected = f"lq-{base64.b32encode(digest).decode().lower()}-g3"
    assert client_order_id(job, account_id, instrument_id, 3) == expected


@pytest.mark.parametrize("account_id", [True, 1.0, "1"])
def test_an_account_id_that_is_not_an_int_is_refused(account_id: object) -> None:
    """json.dumps would spell these unlike the int they stand for: refused, never hashed."""
    with pytest.raises(ValueError, match="account_id must be an int"):
        client_order_id("job", account_id, IID, 0)  # type: ignore[arg-type]
