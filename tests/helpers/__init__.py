"""Helpers shared by test files of different kinds (unit, e2e, process): plain functions
and constants, no fixtures (those live in tests/conftest.py)."""
