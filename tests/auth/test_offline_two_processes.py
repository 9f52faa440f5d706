"""Review of perf23c (offline configuration read only for chargers known pending): a charger's
installation changes through one evgate process while the charger boots at once on another;
the second learns of the change by NOTIFY only, and the charger still gets what is wanted."""

from __future__ import annotations

import contextlib

from support import until

from .auth_helpers import StartSite, connected
from .test_real_chargers import OFFLINE_OFF, OFFLINE_ON


async def test_a_charger_leaving_on_one_process_and_booting_at_once_on_another_is_pushed(
    start_site: StartSite,
) -> None:
    """Removed from its installation (offline allowed) through process B, the charger boots on
    process A straight away, before or after A heard of it: A pushes offline charging off.
    Then added again through B while connected to A: A pushes it on."""
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(start_site(node_id="node-a"))
        b = await stack.enter_async_context(start_site(node_id="node-b"))
        installation = await a.installation(allowChargingWhenOffline=True)
        secrets = {}
        for n in range(4):
            secrets[n] = await a.charger(f"CP-{n}", installation["id"])
        for n in range(4):
            await b.join(f"CP-{n}", None)
            async with connected(a.ws_url(f"CP-{n}", secrets[n]), f"CP-{n}") as charger:
                assert await charger.boot() == "Accepted"
                await until(lambda c=charger: c.configuration == OFFLINE_OFF, within=10)
                await b.join(f"CP-{n}", installation["id"])
                await until(lambda c=charger: c.configuration == OFFLINE_ON, within=10)
