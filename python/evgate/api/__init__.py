"""api: the operator HTTP API (Litestar) and its OpenAPI document. Knows HTTP, not SQL."""
