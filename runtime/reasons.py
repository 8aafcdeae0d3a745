"""Errors as the one-line reasons every record, message and log line carries."""
from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
