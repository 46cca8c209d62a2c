"""PII-like strings: real-looking e-mails, phone numbers, payment card and SSN-like numbers.

Synthetic people should not carry contact data that could belong to a real person. Reserved
example domains (RFC 2606) and the fictional US 555-01xx numbers are allowed.
"""

from __future__ import annotations

import re

from personaloom.critic.rule_critics import CriticContext, CriticResult, rule_critic, text_units

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?![\w-])")
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]\d{1,4}){1,5}"  # international
    r"|(?:\(\d{2,4}\)\s?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}"  # national: groups of 2+ digits
    r")(?![\w-])"
)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
FICTIONAL_PHONE = re.compile(r"555[\s.-]?01\d\d$")


def luhn_valid(number: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask(text: str) -> str:
    return text[:2] + "*" * max(0, len(text) - 4) + text[-2:] if len(text) > 4 else "****"


def find_pii(text: str, allowed_domains: list[str]) -> tuple[str, str] | None:
    """(code, masked value) of the first PII-like string in `text`, or None."""
    for m in EMAIL.finditer(text):
        domain = m.group(1).lower()
        if not any(domain == d or domain.endswith("." + d) for d in allowed_domains):
            return "email", _mask(m.group(0))
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits):
            return "card_number", _mask(digits)
    for m in SSN.finditer(text):
        return "ssn", _mask(m.group(0))
    for m in PHONE.finditer(text):
        raw = m.group(0).strip()
        digits = re.sub(r"\D", "", raw)
        if not 10 <= len(digits) <= 15 or len(set(digits)) == 1:
            continue
        if re.fullmatch(r"(?:1[89]|20)\d\d(?:\s*[-–]\s*(?:1[89]|20)\d\d)+", raw):
            continue  # year ranges
        if FICTIONAL_PHONE.search(raw):
            continue
        return "phone", _mask(digits)
    return None


@rule_critic(
    "pii",
    kinds=("persona", "conversation"),
    defaults={
        "allowed_email_domains": [
            "example.com",
            "example.org",
            "example.net",
            "example",
            "test",
            "invalid",
            "localhost",
        ]
    },
)
def pii(record: dict, ctx: CriticContext) -> CriticResult:
    """No real-looking e-mail address, phone number, card number (Luhn) or SSN."""
    domains = [d.lower().lstrip(".") for d in ctx.settings["allowed_email_domains"]]
    for label, text in text_units(record, ctx.kind):
        found = find_pii(text, domains)
        if found:
            code, masked = found
            return ctx.fail(f"{code}: {label} contains {masked}")
    return ctx.ok()
