"""Tests of corral.store: the contract every backend passes, and SQLite specifics."""
