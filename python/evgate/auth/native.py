"""auth room: the native authorizer — the operator's id-tag list, held in memory.

Decisions never wait for the database (ARCHITECTURE rule 4): the whole list is loaded at start
and kept in sync by the ``evgate_id_tag`` notifications that every change sends in its
transaction (the payload is the id-tag as it is now, so applying it needs no query).

The rules, for an id-tag compared case-insensitively (OCPP CiString20):

* not in the list → ``Invalid`` (an id-tag is never created by being seen);
* status ``Blocked``, ``Expired`` or ``Invalid`` → that status;
* ``Accepted`` with an expiry date in the past → ``Expired``;
* a child of a parent id-tag that is in the list and ``Blocked`` or expired takes the parent's
  status (a blocked fleet account blocks its cards); a parent not in the list is only a group
  name, passed on as ``parentIdTag``;
* an id-tag of a user (``userId``) whose status is ``blocked`` → ``Blocked``; of a prepaid user
  whose balance is at or below zero → ``Blocked`` on Authorize and StartTransaction, unless one
  of the user's groups allows an empty balance (a stop is answered by the user's status only:
  nothing starts);
* otherwise ``Accepted``, with the expiry date and parent id-tag of the entry.

Every decision on a listed id-tag carries its owner (``sub_operator_id``): the tariff a
transaction gets depends on it (a group's restrictions on who charges count only for the
group owner's own id-tags).

Users and groups are held in memory too, kept in sync by ``evgate_user`` (sent by the tables'
triggers), so the rules cost no query either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import msgspec

from evgate.auth.authorizer import AuthorizationQuestion, Decision
from evgate.storage.id_tags import IdTag, IdTagChange, IdTagStore
from evgate.storage.users import GroupAuth, UserAuth, UserChannelPayload, UserStore
from evgate.tasks import cancel_and_wait, service_task

__all__ = ["NativeAuthorizer"]

log = logging.getLogger(__name__)


class _Entry(msgspec.Struct, frozen=True, gc=False):
    status: str
    expiry_date: datetime | None
    parent_id_tag: str | None
    user_id: int | None
    sub_operator_id: int | None


def _entry(tag: IdTag | IdTagChange) -> _Entry:
    return _Entry(tag.status, tag.expiry_date, tag.parent_id_tag, tag.user_id, tag.sub_operator_id)


_USER_CHANGE = msgspec.json.Decoder(UserChannelPayload)


class NativeAuthorizer:
    """The id-tag list authorizer. ``await load()`` once; feed ``on_change`` the payloads of
    ``evgate_id_tag`` and ``on_user_change`` those of ``evgate_user`` (start listening before
    ``load``: changes that arrive during the load are applied after it) and ``reload_soon``
    the listeners' reconnections (notifications sent while away are lost); ``await close()``
    on shutdown. Without ``users``, id-tags' users are not consulted."""

    def __init__(
        self,
        store: IdTagStore,
        clock: Callable[[], datetime] | None = None,
        users: UserStore | None = None,
    ) -> None:
        self.store = store
        self.users = users
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tags: dict[str, _Entry] = {}
        self._users: dict[int, UserAuth] = {}
        # A group id → whether its prepaid members may charge at or below zero.
        self._allow_empty: dict[int, bool] = {}
        self._loading: list[IdTagChange | UserChannelPayload] | None = None
        self._reload: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._tags)

    async def load(self) -> None:
        """Replace the in-memory list with the database's."""
        self._loading = []
        try:
            tags = await self.store.all()
            users, groups = await self.users.authorization() if self.users else ([], [])
            self._replace(tags)
            self._users = {u.id: u for u in users}
            self._allow_empty = {g.id: g.allow_empty_balance for g in groups}
            for change in self._loading:
                self._apply(change)
        finally:
            self._loading = None

    def reload_soon(self) -> None:
        """Reload the whole list on a task of this authorizer (one at a time)."""
        if self._reload is None or self._reload.done():
            self._reload = service_task(self._reload_guarded())

    async def _reload_guarded(self) -> None:
        try:
            await self.load()
        except Exception as exc:  # the database went away again; its next return reloads
            self.store.db.health.report(exc, "the id-tag list reload", log)

    async def close(self) -> None:
        await cancel_and_wait(self._reload)
        self._reload = None

    def _replace(self, tags: Iterable[IdTag]) -> None:
        self._tags = {t.id_tag.upper(): _entry(t) for t in tags}

    def on_change(self, payload: str) -> None:
        """Apply one ``evgate_id_tag`` notification payload (an :class:`IdTagChange`)."""
        change = msgspec.json.decode(payload, type=IdTagChange)
        if self._loading is not None:
            self._loading.append(change)
        else:
            self._apply(change)

    def on_user_change(self, payload: str) -> None:
        """Apply one ``evgate_user`` notification payload (a user's or a group's facts)."""
        change = _USER_CHANGE.decode(payload)
        if self._loading is not None:
            self._loading.append(change)
        else:
            self._apply(change)

    def _apply(self, change: IdTagChange | UserChannelPayload) -> None:
        if isinstance(change, UserAuth):
            if change.deleted:
                self._users.pop(change.id, None)
            else:
                self._users[change.id] = change
        elif isinstance(change, GroupAuth):
            if change.deleted:
                self._allow_empty.pop(change.id, None)
            else:
                self._allow_empty[change.id] = change.allow_empty_balance
        elif change.deleted:
            self._tags.pop(change.id_tag.upper(), None)
        else:
            self._tags[change.id_tag.upper()] = _entry(change)

    def _user_refuses(self, user_id: int, question: AuthorizationQuestion) -> bool:
        """Whether the id-tag's user makes it ``Blocked`` (see the module's rules)."""
        user = self._users.get(user_id)
        if user is None:
            return False  # not loaded yet by this process, or gone: the id-tag's own status
        if user.status == "blocked":
            return True
        return (
            question.purpose != "stop"
            and user.prepaid
            and user.balance <= 0
            and not any(self._allow_empty.get(g, False) for g in user.group_ids)
        )

    def _status(self, entry: _Entry, now: datetime) -> str:
        if entry.status != "Accepted":
            return entry.status
        if entry.expiry_date is not None and entry.expiry_date <= now:
            return "Expired"
        return "Accepted"

    async def authorize(self, question: AuthorizationQuestion) -> Decision:
        """Decide from the in-memory list (no I/O)."""
        entry = self._tags.get(question.id_tag.upper())
        if entry is None:
            return Decision(status="Invalid")
        now = self._clock()
        status = self._status(entry, now)
        if status == "Accepted" and entry.parent_id_tag is not None:
            parent = self._tags.get(entry.parent_id_tag.upper())
            if parent is not None:
                parent_status = self._status(parent, now)
                if parent_status in ("Blocked", "Expired"):
                    status = parent_status
        if (
            status == "Accepted"
            and entry.user_id is not None
            and self._user_refuses(entry.user_id, question)
        ):
            status = "Blocked"
        return Decision(
            status=status,  # type: ignore[arg-type]
            expiry_date=entry.expiry_date,
            parent_id_tag=entry.parent_id_tag,
            sub_operator_id=entry.sub_operator_id,
        )
