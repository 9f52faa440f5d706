"""auth room: the authorizer interface — who may charge.

Handlers ask an :class:`Authorizer` on Authorize, StartTransaction and StopTransaction (the
question's ``purpose`` says which); ``app.py`` chooses the implementation per installation:
the native id-tag list (default), accept-all, or an external provider's webhook.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import msgspec

__all__ = [
    "AuthorizationQuestion",
    "AuthorizationStatus",
    "Authorizer",
    "Decision",
    "Purpose",
]

# OCPP 1.6 AuthorizationStatus values (idTagInfo.status).
AuthorizationStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]

# Which message asks: Authorize, StartTransaction, or StopTransaction (whose idTagInfo only
# tells the charger about the id-tag that stopped; no session starts).
Purpose = Literal["authorize", "start", "stop"]


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """An authorizer's answer, turned into idTagInfo by the handler."""

    status: AuthorizationStatus
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None
    # An external provider's id for the session (the notifications' externalSessionId).
    external_session_id: str | None = None
    # The id-tag's owner in evgate's list (a sub-operator's id); None: the operator's, also
    # for an id-tag the list does not hold (an external provider's or accept-all's decision
    # carries no parentIdTag, so no tariff restricted to a group matches it anyway, and one
    # the operator's external provider accepts is the operator's). A tariff group's
    # restrictions on who charges match only its owner's id-tags (``pricing.GroupEntry``).
    sub_operator_id: int | None = None


class AuthorizationQuestion(msgspec.Struct, frozen=True, kw_only=True):
    """The question asked on Authorize (connector_id None), StartTransaction and
    StopTransaction (an idTag in the stop)."""

    charger_id: str
    id_tag: str
    connector_id: int | None = None
    timestamp: datetime | None = None
    # "start": an authorizer may reuse a recent decision for the same charger and id-tag
    # instead of asking again. "stop": nothing starts, so an external provider must not be
    # asked to start a session (see WebhookAuthorizer).
    purpose: Purpose = "authorize"
    # On a stop: the id-tag that started the transaction (None when evgate does not know it).
    transaction_id_tag: str | None = None

    @property
    def starting(self) -> bool:
        return self.purpose == "start"


class Authorizer(Protocol):
    """Decides whether an id-tag may charge at a charger."""

    async def authorize(self, question: AuthorizationQuestion) -> Decision:
        """Answer for one id-tag at one charger. Must not raise for a provider's failure:
        apply the configured failure policy and return a Decision."""
        ...
