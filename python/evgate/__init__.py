"""evgate: an OCPP 1.6J central system for large charger fleets."""

__version__ = "0.1.0"
