"""Keeping tokens out of logs, errors, cards and run state."""

from __future__ import annotations

import logging
import os

SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "PERSONALOOM_API_KEY")


def secret_values() -> list[str]:
    return [v for name in SECRET_ENV_VARS if (v := os.environ.get(name)) and len(v) >= 4]


def redact(text: str) -> str:
    """Replace every known secret value in `text` with a placeholder."""
    for value in secret_values():
        text = text.replace(value, "***")
    return text


class RedactingFilter(logging.Filter):
    """Logging filter that scrubs secret values from every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
