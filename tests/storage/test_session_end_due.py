"""The session-end outbox's next-due query: an empty outbox has nothing due (the sender then
sleeps until NOTIFY or its poll), a row due now reads 0, a row due later its delay."""

from __future__ import annotations

import pytest

from evgate.storage.db import Database
from evgate.storage.installations import InstallationStore


async def test_an_empty_outbox_has_nothing_due(db: Database) -> None:
    """None, not 0: 0 would make the sender look again at once, forever."""
    assert await InstallationStore(db).next_session_end_due() is None


async def test_due_rows_read_their_delay(db: Database) -> None:
    """A row due now reads 0; once leased for a minute, about 60."""
    store = InstallationStore(db)
    await db.execute("INSERT INTO auth_session_ends (installation_id, payload) VALUES (1, '{}')")
    assert await store.next_session_end_due() == 0.0
    await store.claim_session_ends(10, 60.0)
    assert await store.next_session_end_due() == pytest.approx(60.0, abs=5)
