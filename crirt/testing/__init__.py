"""Fakes of the lifecycle's ports, for tests that run it without root (crirt.testing.fakes)."""
