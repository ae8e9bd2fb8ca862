"""Redaction of emails, phone numbers and card numbers: found where they are, and only there."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.governance.redaction import RedactionSettingInvalid, Redactor, luhn_valid

redactor = Redactor()


@pytest.mark.parametrize(
    "text",
    [
        "ada@example.com",
        "Ada.Lovelace+corral@mail.example.co.uk",
        "first_last-1@sub.domain.io",
    ],
)
def test_emails_are_redacted(text: str) -> None:
    assert redactor.redact_text(f"write to {text}, please") == "write to [redacted:email], please"


@pytest.mark.parametrize(
    "text",
    [
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+1 (555) 123-4567",
        "+33 6 12 34 56 78",
        "+4915112345678",
        "+49-151-1234-5678",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "030 1234567",
        "06 12 34 56 78",
        "020 7946 0958",
        "0171/1234567",
    ],
)
def test_phone_numbers_are_redacted(text: str) -> None:
    assert redactor.redact_text(f"call {text} today") == "call [redacted:phone] today"


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",
        "378282246310005",
        "3782 822463 10005",
        "6011000990139424",
        "2223003122003222",
        "4222222222222",
    ],
)
def test_card_numbers_are_redacted(text: str) -> None:
    assert redactor.redact_text(f"card: {text}.") == "card: [redacted:card]."


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 shipped",  # fails the Luhn check
        "at 1700000000000 ms",  # a Unix time in milliseconds
        "created 2026-01-15T10:20:30.123456Z",
        "dates 2026-01-15, 15/01/2026, 05.01.2026 10:30",
        "ids 123456789 and 0123456789 and 12345678901234567",
        "pi is 3.14159265358979323",
        "version 1.20.3, ip 192.168.100.200, port 8080",
        "amount 1234567.89 EUR",
        "not an email: ada@localhost or @handle",
        "uuid 3f1c0d2e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        "sha 4f9a7c1e0b2d3a5f6e7d8c9b0a1f2e3d4c5b6a79",
    ],
)
def test_what_is_not_personal_data_survives(text: str) -> None:
    assert redactor.redact_text(text) == text


def test_only_the_kinds_chosen_are_redacted() -> None:
    text = "ada@example.com, +44 20 7946 0958, 4111 1111 1111 1111"
    assert Redactor(["email"]).redact_text(text) == (
        "[redacted:email], +44 20 7946 0958, 4111 1111 1111 1111"
    )
    assert Redactor(["card", "phone"]).redact_text(text) == (
        "ada@example.com, [redacted:phone], [redacted:card]"
    )
    assert Redactor(()).redact_text(text) == text
    assert not Redactor(()).enabled
    assert Redactor(replacement="***").redact_text(text) == "***, ***, ***"


def test_json_values_are_redacted_recursively_keys_untouched() -> None:
    value = {
        "ada@example.com": "ada@example.com",
        "nested": [{"phone": "+44 20 7946 0958"}, ("4111 1111 1111 1111", 4111111111111111)],
        "count": 3,
        "ok": True,
        "none": None,
    }
    assert redactor.redact_json(value) == {
        "ada@example.com": "[redacted:email]",
        "nested": [{"phone": "[redacted:phone]"}, ("[redacted:card]", 4111111111111111)],
        "count": 3,
        "ok": True,
        "none": None,
    }


def test_settings() -> None:
    assert Redactor.from_settings({}).kinds == ("email", "phone", "card")
    assert Redactor.from_settings({"CORRAL_REDACT": ""}).kinds == ("email", "phone", "card")
    assert Redactor.from_settings({"CORRAL_REDACT": "none"}).kinds == ()
    assert Redactor.from_settings({"CORRAL_REDACT": " Card , email"}).kinds == ("card", "email")
    with pytest.raises(RedactionSettingInvalid, match=r"CORRAL_REDACT='email,ssn'.*'ssn'"):
        Redactor.from_settings({"CORRAL_REDACT": "email,ssn"})
    with pytest.raises(RedactionSettingInvalid, match="none"):
        Redactor.from_settings({"CORRAL_REDACT": "none,email"})


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


# -- properties ---------------------------------------------------------------------------------

CARD_NETWORKS = [
    # (prefix, possible lengths)
    ("4", (13, 16, 19)),
    ("51", (16,)),
    ("55", (16,)),
    ("2221", (16,)),
    ("2720", (16,)),
    ("34", (15,)),
    ("37", (15,)),
    ("36", (14,)),
    ("6011", (16, 19)),
    ("65", (16,)),
    ("3528", (16, 19)),
    ("62", (16, 17, 18, 19)),
]


def check_digit(partial: str) -> str:
    """The digit that makes `partial + digit` pass the Luhn check."""
    return next(str(d) for d in range(10) if luhn_valid(partial + str(d)))


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix, lengths = draw(st.sampled_from(CARD_NETWORKS))
    length = draw(st.sampled_from(lengths))
    body = draw(
        st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1)
    )
    number = prefix + body
    number += check_digit(number)
    separator = draw(st.sampled_from(["", " ", "-"]))
    if separator:
        number = separator.join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


PROSE = st.text("abcdefghijklmnopqrstuvwxyz ABCXYZ,;:!?()'\"\n", max_size=40)
LEFT_EDGE = st.sampled_from(["", " ", "\n", "(", ": ", ", "])
RIGHT_EDGE = st.sampled_from(["", " ", "\n", ")", ". ", ", ", "."])


@given(left=PROSE, edge=LEFT_EDGE, card=card_numbers(), right_edge=RIGHT_EDGE, right=PROSE)
def test_a_valid_card_number_in_text_is_always_redacted(
    left: str, edge: str, card: str, right_edge: str, right: str
) -> None:
    if edge == "" and left:
        edge = " "
    if right_edge == "" and right:
        right_edge = " "
    text = f"{left}{edge}{card}{right_edge}{right}"
    redacted = redactor.redact_text(text)
    assert "[redacted:card]" in redacted
    assert not re.search(r"\d", redacted), redacted


WORDS = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
SAFE_TOKENS = st.one_of(
    WORDS,
    st.integers(min_value=0, max_value=10**12 - 1).map(str),
    st.integers(min_value=-(10**9), max_value=-1).map(str),
    st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
        lambda moment: moment.isoformat()
    ),
    st.dates().map(lambda day: day.isoformat()),
    st.decimals(min_value=-(10**6), max_value=10**6, places=2).map(str),
    st.uuids().map(str),
    st.integers(min_value=0, max_value=10**9).map(lambda n: f"ORD-{n}"),
)


@given(tokens=st.lists(SAFE_TOKENS, max_size=12), joiner=st.sampled_from([" and ", "; ", " | "]))
def test_text_without_personal_data_is_unchanged(tokens: list[str], joiner: str) -> None:
    text = joiner.join(tokens)
    assert redactor.redact_text(text) == text
    assert redactor.redact_json({"text": text, "tokens": tokens}) == {
        "text": text,
        "tokens": tokens,
    }
