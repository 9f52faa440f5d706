"""What evgate logs during a test: a handler on the root logger that keeps the records."""

from __future__ import annotations

import logging

__all__ = ["LogLines"]


class LogLines(logging.Handler):
    """Every record logged (INFO and above) while it is attached to the root logger: as a
    context manager (which lowers the root logger to INFO meanwhile), or by ``addHandler``."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogLines:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)

    def saying(self, text: str) -> list[logging.LogRecord]:
        """The records whose message holds ``text``."""
        return [r for r in self.records if text in r.getMessage()]
