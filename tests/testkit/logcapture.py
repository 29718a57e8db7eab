"""Lines a logger writes, kept in a list (for access-log assertions)."""

from __future__ import annotations

import logging


class Lines(logging.Handler):
    """Every message the logger it is attached to writes, formatted, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def capture(name: str) -> tuple[logging.Logger, Lines]:
    """A logger of its own (INFO, not propagating) and what it writes."""
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    return logger, lines
