"""storage room: a Kafka subscription's connection settings — one Struct for the API (what it
accepts and shows), the ``subscriptions.kafka`` JSON column and the Kafka sink.

The password is not one of them: it has its own column and is never shown by the API.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Codec", "KafkaSettings", "Mechanism", "SecurityProtocol"]

Codec = Literal["none", "gzip", "snappy", "lz4"]
SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """Where and how a subscription's records go. The defaults are the ones the API documents;
    they are filled in here, once, when the settings are made or read.

    Attributes:
        topic: the topic every record of the subscription goes to.
        brokers: ``host:port`` bootstrap servers.
        compression_codec: the producer's compression (``none``: uncompressed).
        security_protocol: plain or TLS, with or without SASL.
        sasl_mechanism: with a ``SASL_`` protocol; None reads as ``PLAIN``.
        sasl_username: with a ``SASL_`` protocol.
    """

    topic: str
    brokers: list[str]
    compression_codec: Codec = "gzip"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = "PLAIN"
    sasl_username: str | None = None

    @property
    def mechanism(self) -> Mechanism:
        """The SASL mechanism to use (``PLAIN`` when none was given)."""
        return self.sasl_mechanism or "PLAIN"
