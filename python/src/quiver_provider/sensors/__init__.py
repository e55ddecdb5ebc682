"""Sensors: :class:`QuiverJobSensor`, :class:`QuiverPrefixSensor`."""

from quiver_provider.sensors.quiver import QuiverJobSensor, QuiverPrefixSensor

__all__ = ["QuiverJobSensor", "QuiverPrefixSensor"]
