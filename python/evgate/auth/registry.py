"""auth room: creating chargers and API tokens, where a secret is made and shown once.

The API and the CLI both go through here, so a secret is generated, digested and handed back
in one place, and never logged.
"""

from __future__ import annotations

from evgate.credentials import digest, key_problem, new_api_token, new_charger_secret
from evgate.storage.chargers import Charger, ChargerStore, SecretsImported
from evgate.storage.tokens import BOOTSTRAP, ApiToken, Scope, TokenStore

__all__ = ["ChargerRegistry", "create_token", "issue_token"]


class ChargerRegistry:
    """Charger creation and secret rotation over a :class:`ChargerStore`."""

    def __init__(self, store: ChargerStore) -> None:
        self.store = store

    async def create(
        self,
        charger_id: str,
        description: str = "",
        security_profile: int = 1,
        lenient: bool = False,
    ) -> tuple[Charger, str]:
        """Register a charger; returns it and its secret, which exists nowhere else.

        Raises:
            AlreadyExists: the id is taken.
        """
        secret = new_charger_secret()
        charger = await self.store.create(
            charger_id, digest(secret), description, security_profile, lenient
        )
        return charger, secret

    async def rotate_secret(self, charger_id: str) -> str:
        """Give the charger a new secret; the old one stops working at once.

        Raises:
            NotFound: no such charger.
        """
        secret = new_charger_secret()
        await self.store.set_secret_digest(charger_id, digest(secret))
        return secret

    async def set_secret(self, charger_id: str, secret: str) -> None:
        """Make ``secret`` (one the charger already has, e.g. from another central system)
        the charger's secret; the old one stops working at once, as on rotation.

        Raises:
            ValueError: the secret breaks ``credentials.key_problem`` (its message says how).
            NotFound: no such charger.
        """
        await self.store.set_secret_digest(charger_id, digest(_checked(secret)))

    async def import_secrets(
        self, secrets: dict[str, str], create_missing: bool = False
    ) -> SecretsImported:
        """Set many chargers' secrets at once, all or none (``ChargerStore.import_secrets``).

        Raises:
            ValueError: a secret breaks ``credentials.key_problem``; nothing changed.
            MissingCharger: see ``ChargerStore.import_secrets``.
        """
        digests = {charger_id: digest(_checked(s)) for charger_id, s in secrets.items()}
        return await self.store.import_secrets(digests, create_missing)


def _checked(secret: str) -> str:
    problem = key_problem(secret)
    if problem is not None:
        raise ValueError(f"a charger secret {problem}")
    return secret


async def issue_token(
    tokens: TokenStore, name: str, scope: Scope, sub_operator_id: int | None = None
) -> tuple[ApiToken, str]:
    """Create an API token; returns its row and the token, which exists nowhere else (it is
    stored as a digest).

    Args:
        tokens: where it is stored.
        name: what it is for.
        scope: ``read`` or ``admin``.
        sub_operator_id: the sub-operator it acts for (None: the operator).

    Raises:
        ValueError: ``name`` is the bootstrap token's (reserved for ``EVGATE_BOOTSTRAP_TOKEN``).
        BadReference: no such sub-operator.
    """
    if name == BOOTSTRAP:
        raise ValueError(f"the token name {BOOTSTRAP!r} is reserved for EVGATE_BOOTSTRAP_TOKEN")
    token = new_api_token()
    return await tokens.create(name, scope, digest(token), sub_operator_id), token


async def create_token(
    tokens: TokenStore, name: str, scope: Scope, sub_operator_id: int | None = None
) -> str:
    """Create an API token and return it (see :func:`issue_token`)."""
    return (await issue_token(tokens, name, scope, sub_operator_id))[1]
