"""Tests of corral.engine: steps, replay, timers, signals, children, leases, workers."""
