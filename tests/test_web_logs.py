"""The web process's log lines: one JSON object each, with the delivery's fields, secrets masked."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging

import pytest
from hypothesis import given, strategies as st

from bot.logs import MASK, TOKEN_PATTERNS, JsonFormatter, Masker

SECRET = "webhook-secret-value"
TOKENS = ["ghp_" + "a1" * 12, "gho_" + "B" * 30, "github_pat_" + "x_" * 15, "glpat-" + "z-" * 12]


def line(msg: str = "webhook queued", **extra: object) -> dict:
    record = logging.makeLogRecord({"name": "gitops_bot.web", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": msg, "created": 1_700_000_000.25, "msecs": 250.0, **extra})
    return json.loads(JsonFormatter(Masker([SECRET])).format(record))


def test_a_line_holds_the_time_level_logger_message_and_the_records_own_fields():
    assert line(forge="github", delivery="d-1", jobs=["j-1"]) == {
        "ts": "2023-11-14T22:13:20.250Z", "level": "info", "logger": "gitops_bot.web", "msg": "webhook queued",
        "forge": "github", "delivery": "d-1", "jobs": ["j-1"]}


@dataclasses.dataclass
class Pull:
    number: int


def test_values_json_cannot_hold_are_written_as_str_gives_them():
    written = line(when=datetime.datetime(2024, 1, 2, 3, 4, 5), pull=Pull(7), seen={3}, counts={1: "one"},
                   big=2 ** 70)
    assert written["when"] == "2024-01-02 03:04:05" and written["pull"] == "Pull(number=7)"
    assert written["seen"] == "{3}" and written["counts"] == {"1": "one"} and written["big"] == 2 ** 70


@pytest.mark.parametrize("secret", [SECRET, *TOKENS, "https://bot:hunter2hunter2@example.com/x.git"])
def test_secrets_and_token_shapes_are_masked_wherever_they_are(secret):
    written = json.dumps(line(f"cloning {secret}", error=f"failed with {secret}"))
    assert secret.split("://")[-1].split("@")[0] not in written and MASK in written


@given(st.lists(st.sampled_from(["gh", "p_", "o_", "github_pat_", "glpat-", "://", "a:b@", "x" * 20, "_", "-",
                                 "/", "@", ":", " ", "é"]), max_size=12).map("".join))
def test_masking_is_the_token_pattern_wherever_it_matches(text):
    assert Masker()(text) == TOKEN_PATTERNS.sub(MASK, text)
