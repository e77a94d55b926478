"""Issue 12, items 10 and 11: a buffered write's replay does not take a half-open probe a
client could take, and an answer retrying cannot change (501, 505, most 4xx) makes the
write a dead letter at once without counting against the upstream's breaker."""

from __future__ import annotations

import pytest

from proxy.buffer.rules import Verdict, final, verdict

# -- item 11: which answers end a replay ---------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 405, 410, 413, 422, 501, 505])
def test_an_answer_retrying_cannot_change_makes_a_dead_letter(status: int) -> None:
    assert final(status)
    assert verdict(status) is Verdict.DEAD


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 507, 599])
def test_an_answer_that_may_change_is_retried(status: int) -> None:
    assert not final(status)
    assert verdict(status) is Verdict.RETRY


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_a_2xx_delivers(status: int) -> None:
    assert not final(status)
    assert verdict(status) is Verdict.DELIVERED
