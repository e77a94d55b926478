"""Double-encoded traversal: ``%25`` then the encoding of ``.``, ``/``, ``\\`` or NUL is
refused like the singly encoded forms, because a backend that decodes twice would see
``..``, a slash or a NUL that the proxy's routing never saw."""

from __future__ import annotations

import pytest

from proxy.chain.routing import BadTarget, normalise_target
from tests.helpers.traversal import DOUBLE_ENCODED


@pytest.mark.parametrize("target", DOUBLE_ENCODED)
def test_double_encoded_dot_slash_backslash_or_nul_is_refused(target: str) -> None:
    with pytest.raises(BadTarget, match="double-encoded"):
        normalise_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "/a%25%32%65",  # %25 then an encoded "2e": %2e after one decode, "." after two
        "/a%25%32%46",
        "/a%25%35%43",
        "/a%25%30%30",
        "/a%25252e",  # encoded three times
        "/a%2525%32f",
    ],
)
def test_traversal_hidden_by_mixed_or_repeated_encoding_is_refused(target: str) -> None:
    with pytest.raises(BadTarget, match="double-encoded"):
        normalise_target(target)


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("/100%25", "/100%25"),
        ("/a%2541", "/a%2541"),  # "%41" after one decode: a letter, no traversal
        ("/a%252", "/a%252"),
        ("/discount/50%25off", "/discount/50%25off"),
    ],
)
def test_an_encoded_percent_that_hides_no_traversal_is_forwarded(
    target: str, canonical: str
) -> None:
    assert normalise_target(target) == (canonical, "")
