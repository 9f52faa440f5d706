"""handlers room: Authorize — through the charger's authorizer.

The authorizer (per charger: its installation's, or the native id-tag list) decides; with
``allow_concurrent_tx`` off, an accepted id-tag that has an open transaction is
``ConcurrentTx``. An id-tag is never created by being seen; what is written is the
AuthorizationNotification and authorization.changed of the decision (with an authorizationId
from a sequence), and the answer waits for them to commit.
"""

from __future__ import annotations

from evgate.events.builders import authorization
from evgate.handlers import ChargerContext, Routes
from evgate.handlers.services import HandlerServices, id_tag_info
from evgate.protocol.v16 import AuthorizeRequest, AuthorizeResponse
from evgate.storage.ops import outbox, sequences
from evgate.storage.ops.base import Results, Write

__all__ = ["routes"]


def routes(services: HandlerServices) -> Routes:
    """The handlers of this module, by action."""

    async def authorize(ctx: ChargerContext, request: AuthorizeRequest) -> AuthorizeResponse:
        decision = await services.decide(ctx.charger_id, request.id_tag)
        charger, now = ctx.charger, services.clock()

        drawn = sequences.authorization_id()

        def described(results: Results) -> list[Write[None]]:
            return outbox.append(
                authorization(charger, results[drawn], request.id_tag, decision.status, now)
            )

        await services.emit(ctx.charger_id, [drawn], described)
        return AuthorizeResponse(
            id_tag_info=id_tag_info(decision.status, decision.expiry_date, decision.parent_id_tag)
        )

    return {"Authorize": authorize}
