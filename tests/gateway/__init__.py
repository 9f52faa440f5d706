"""Tests of the gateway room (a package, so that its conftest does not shadow the root one)."""
