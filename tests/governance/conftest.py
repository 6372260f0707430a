"""Fixtures of the governance tests: the tiering tests' hot stores (SQLite, PostgreSQL)."""

from tests.tier.conftest import hot, hot_factory, now  # noqa: F401 - fixtures by import
