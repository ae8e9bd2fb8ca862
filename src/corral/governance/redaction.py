"""Redacting common personal data — email addresses, phone numbers, card numbers — from text.

Payloads (prompts, tool arguments and results) may hold personal data that should not be stored
or shown. A `Redactor` replaces what it finds with a marker (`[redacted:email]`); what it looks
for is configurable (`CORRAL_REDACT=email,phone,card`, or `none`). The audit chain never hashes
payloads (entries point at them with `payload_ref`), so redacting them breaks no link.

Detection favours precision over recall, so that data which is not personal (order ids,
timestamps, amounts) survives:

- cards: 13–19 digits, optionally in groups separated by single spaces or dashes, starting with
  2–6 (the networks' ranges: Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay/
  Maestro 6), and passing the Luhn check. A 13-digit Unix time in milliseconds (`17…`) or an
  arbitrary order number fails one of these.
- phones: an international number (`+` country code, 8–15 digits, separators allowed); a US
  number with separators (`(555) 123-4567`, `555-123-4567`, `555.123.4567`); a European national
  number starting with 0 and written in groups (`030 1234567`, `06 12 34 56 78`,
  `020 7946 0958`). A plain integer or an ISO date is never a phone number.
- emails: `local@domain.tld`.

This is a safety net, not a guarantee: personal data in other shapes (names, addresses, numbers
written in words) is not found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal, cast

from corral.errors import RedactionSettingInvalid as RedactionSettingInvalid

RedactionKind = Literal["email", "phone", "card"]
KINDS: Final[tuple[RedactionKind, ...]] = ("email", "phone", "card")
DEFAULT_KINDS: Final[tuple[RedactionKind, ...]] = KINDS
SETTING = "CORRAL_REDACT"
"""The environment variable `Redactor.from_settings` reads."""


# A run of 13–19 digits, single spaces or dashes between them, not inside a longer word/number.
_CARD = re.compile(r"(?<![\w.+])[2-6](?:[ -]?\d){12,18}(?![\w]|[.-]\d)")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

_SEP = r"[ .-]"
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    # International: +CC, then groups (an area code may be in parentheses: +44 (0)20 …).
    rf"\+\d{{1,3}}(?:{_SEP}?\(\d{{1,4}}\))?(?:{_SEP}?\d{{1,5}}){{2,6}}"
    # US / NANP with separators: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567.
    rf"|(?:\(\d{{3}}\)\ ?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}"
    # European national: a leading 0 and at least two groups: 030 1234567, 06 12 34 56 78.
    r"|0\d{1,4}(?:[ /.-]\d{2,8}){1,4}"
    r")(?![\w]|[.-]\d)"
)
_PHONE_DIGITS = {"+": (8, 15), "(": (10, 10), "0": (9, 13)}


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum (card numbers do)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _is_card(candidate: str) -> bool:
    digits = _digits(candidate)
    if not 13 <= len(digits) <= 19:
        return False
    separators = {char for char in candidate if not char.isdigit()}
    if len(separators) > 1:  # 4111 1111-1111 1111: not how cards are written
        return False
    return luhn_valid(digits)


def _is_phone(candidate: str) -> bool:
    digits = _digits(candidate)
    low, high = _PHONE_DIGITS.get(candidate[0], (10, 10))
    # National numbers are written with one separator throughout (06 12 34 56 78); mixed ones
    # are dates and times (05.01.2026 10:30).
    if candidate[0] == "0" and len({char for char in candidate if not char.isdigit()}) > 1:
        return False
    return low <= len(digits) <= high


class Redactor:
    """Replaces personal data in text and in JSON values.

    Args:
        kinds: What to redact: any of "email", "phone", "card" (empty: nothing).
        replacement: The marker; `{kind}` in it becomes the kind found.
    """

    def __init__(
        self,
        kinds: Iterable[str] = DEFAULT_KINDS,
        *,
        replacement: str = "[redacted:{kind}]",
    ) -> None:
        chosen = tuple(dict.fromkeys(kinds))
        unknown = [kind for kind in chosen if kind not in KINDS]
        if unknown:
            raise RedactionSettingInvalid(
                f"cannot redact {', '.join(map(repr, unknown))}: the kinds are "
                f"{', '.join(KINDS)} (or none)",
                value=",".join(chosen),
            )
        self.kinds: tuple[RedactionKind, ...] = cast(tuple[RedactionKind, ...], chosen)
        self.replacement = replacement
        # Cards before phones: a spaced card number also looks like a long phone number.
        order: list[tuple[RedactionKind, re.Pattern[str], Callable[[str], bool] | None]] = [
            ("card", _CARD, _is_card),
            ("email", _EMAIL, None),
            ("phone", _PHONE, _is_phone),
        ]
        self._passes = [entry for entry in order if entry[0] in self.kinds]

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """The redactor `CORRAL_REDACT` asks for: a comma list of kinds, `none` to disable;
        unset or empty means all of them (email, phone, card)."""
        value = (os.environ if environ is None else environ).get(SETTING, "").strip()
        if not value:
            return cls()
        parts = [part.strip().lower() for part in value.split(",") if part.strip()]
        if parts == ["none"]:
            return cls(())
        if "none" in parts:
            raise RedactionSettingInvalid(
                f"{SETTING}={value!r}: `none` cannot be combined with other kinds", value=value
            )
        try:
            return cls(parts)
        except RedactionSettingInvalid as error:
            message = f"{SETTING}={value!r}: {error.message}"
            raise RedactionSettingInvalid(message, value=value) from None

    @property
    def enabled(self) -> bool:
        return bool(self._passes)

    def marker(self, kind: str) -> str:
        return self.replacement.replace("{kind}", kind)

    def redact_text(self, text: str) -> str:
        """`text` with every email, phone and card number (of the kinds chosen) replaced."""
        for kind, pattern, accept in self._passes:
            marker = self.marker(kind)

            def replace(
                match: re.Match[str],
                marker: str = marker,
                accept: Callable[[str], bool] | None = accept,
            ) -> str:
                found = match.group(0)
                return marker if accept is None or accept(found) else found

            text = pattern.sub(replace, text)
        return text

    def redact_json(self, value: Any) -> Any:
        """A copy of a JSON value with its strings redacted; object keys are left untouched."""
        if not self._passes:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {key: self.redact_json(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact_json(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.redact_json(item) for item in value)
        return value

    def __repr__(self) -> str:
        return f"Redactor(kinds={self.kinds!r}, replacement={self.replacement!r})"
