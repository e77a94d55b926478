"""Targets that hide a traversal behind double encoding: shared by the unit and e2e
parts of test_hardening_traversal.py."""

from __future__ import annotations

DOUBLE_ENCODED = [
    "/%252e%252e/admin",
    "/%252E%252E/admin",
    "/a%252fb",
    "/a%252Fb",
    "/a%255cb",
    "/a%255Cb",
    "/a%2500b",
    "/files/%252e",
]
