"""Scheduling policies and rules, as plugins of the core framework (they import core only)."""
