"""Supported fakes for testing workflows: a virtual clock (more fakes join as Corral grows)."""

from corral.testing.clock import FakeClock

__all__ = ["FakeClock"]
