"""Shared test helpers (real servers and builders, never mocks of shicheng's own code)."""
