"""Operators: :class:`QuiverSQLOperator`."""

from quiver_provider.operators.quiver import QuiverJobLink, QuiverSQLOperator

__all__ = ["QuiverJobLink", "QuiverSQLOperator"]
