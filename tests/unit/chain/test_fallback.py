"""chain.plan + chain.errors: which upstream next, after how long, and the last answer."""

from __future__ import annotations

import pytest

from proxy.chain.errors import NEVER_SENT, RETRY_GROUPS, SKIPPED, Failure, classify_status
from proxy.chain.headers import FailedHop
from proxy.chain.outcome import Health
from proxy.chain.plan import FailoverPlan, Final, RetryPolicy, Step, final_answer
from proxy.config.schema import RETRY_ON_CHOICES

ALL_GROUPS = ("connect_error", "timeout", "5xx", "429")


def lowest(low: float, high: float) -> float:
    return low


def highest(low: float, high: float) -> float:
    return high


def policy(attempts=1, backoff=0.1, max_backoff=1.0, on=ALL_GROUPS, non_idempotent=False):
    retry_on = frozenset().union(*(RETRY_GROUPS[name] for name in on))
    return RetryPolicy(attempts, backoff, max_backoff, retry_on, non_idempotent)


def plan(*, may_resend=True, deadline_at=100.0, uniform=lowest, **retry) -> FailoverPlan:
    return FailoverPlan(("primary", "secondary"), policy(**retry), may_resend, deadline_at, uniform)


def test_the_primary_is_tried_first_then_the_secondary_then_nothing():
    p = plan()
    assert p.first() == Step("primary")
    assert p.after_failure(Failure.CONNECTION_REFUSED, now=0.0) == Step("secondary")
    assert p.after_failure(Failure.HTTP_5XX, now=0.0, status=502) == Step(None)
    assert p.hops == [
        FailedHop("primary", Failure.CONNECTION_REFUSED),
        FailedHop("secondary", Failure.HTTP_5XX, 502),
    ]
    assert not p.deadline_exceeded


def test_each_upstream_gets_up_to_attempts_tries_before_moving_on():
    p = plan(attempts=3)
    tried = [p.first().upstream]
    while (step := p.after_failure(Failure.READ_TIMEOUT, now=0.0)).upstream:
        tried.append(step.upstream)
    assert tried == ["primary"] * 3 + ["secondary"] * 3


def test_only_failures_named_in_retry_on_are_retried_on_the_same_upstream():
    p = plan(attempts=2, on=("5xx",))
    p.first()
    assert p.after_failure(Failure.READ_TIMEOUT, now=0.0) == Step("secondary")
    assert p.after_failure(Failure.HTTP_5XX, now=0.0, status=503).upstream == "secondary"


def test_backoff_grows_exponentially_with_equal_jitter_and_is_capped():
    p = policy(backoff=0.1, max_backoff=0.3)
    assert [p.backoff_delay(n, lowest) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.05, 0.1, 0.15, 0.15]
    )
    assert [p.backoff_delay(n, highest) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.3]
    )


def test_the_retry_waits_the_jittered_backoff():
    calls = []

    def uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return high / 2

    p = plan(attempts=2, backoff=0.2, uniform=uniform)
    p.first()
    step = p.after_failure(Failure.HTTP_5XX, now=0.0, status=500)
    assert step.upstream == "primary"
    assert step.delay == pytest.approx(0.15)
    assert calls == [(0, pytest.approx(0.1))]


def test_retry_after_within_max_backoff_is_waited_on_the_same_upstream():
    p = plan(attempts=2, max_backoff=1.0)
    p.first()
    assert p.after_failure(Failure.HTTP_429, now=0.0, status=429, retry_after=0.5) == Step(
        "primary", 0.5, retry=True
    )


def test_retry_after_longer_than_max_backoff_moves_on_to_the_next_upstream_at_once():
    p = plan(attempts=2, max_backoff=1.0)
    p.first()
    step = p.after_failure(Failure.HTTP_429, now=0.0, status=429, retry_after=30.0)
    assert step == Step("secondary", 0.0)


def test_a_retry_that_would_outlast_the_deadline_moves_on_instead():
    p = plan(attempts=2, deadline_at=10.0)
    p.first()
    assert p.after_failure(Failure.HTTP_5XX, now=9.5, retry_after=0.9) == Step("secondary")


@pytest.mark.parametrize(
    "failure",
    [Failure.READ_TIMEOUT, Failure.HTTP_5XX, Failure.HTTP_429, Failure.CONNECTION_RESET],
)
def test_a_post_that_may_have_arrived_is_never_sent_again(failure):
    p = plan(attempts=3, may_resend=False, on=(*ALL_GROUPS, "reset"))
    p.first()
    assert p.after_failure(failure, now=0.0) == Step(None)
    assert p.hops == [FailedHop("primary", failure)]


@pytest.mark.parametrize(
    "failure", [Failure.CONNECTION_REFUSED, Failure.DNS_ERROR, Failure.CONNECT_TIMEOUT]
)
def test_a_post_that_provably_never_arrived_moves_on(failure):
    p = plan(may_resend=False)
    p.first()
    assert p.after_failure(failure, now=0.0) == Step("secondary")


@pytest.mark.parametrize(
    ("method", "key", "non_idempotent", "allowed"),
    [
        ("GET", False, False, True),
        ("HEAD", False, False, True),
        ("OPTIONS", False, False, True),
        ("PUT", False, False, True),
        ("DELETE", False, False, True),
        ("POST", False, False, False),
        ("PATCH", False, False, False),
        ("POST", True, False, True),
        ("POST", False, True, True),
    ],
)
def test_only_idempotent_or_keyed_or_allowed_requests_may_be_resent(
    method, key, non_idempotent, allowed
):
    assert policy(non_idempotent=non_idempotent).may_resend(method, key) is allowed


def test_a_body_that_cannot_be_replayed_stops_the_chain():
    p = plan(attempts=2)
    p.first()
    assert p.after_failure(Failure.CONNECTION_REFUSED, now=0.0, body_replayable=False) == Step(None)


def test_a_spent_deadline_stops_the_chain_and_is_remembered():
    p = plan(attempts=2, deadline_at=5.0)
    p.first()
    assert p.after_failure(Failure.CONNECTION_REFUSED, now=5.0) == Step(None)
    assert p.deadline_exceeded


def test_a_deadline_exceeded_failure_stops_the_chain_even_before_the_clock_says_so():
    p = plan(deadline_at=5.0)
    p.first()
    assert p.after_failure(Failure.DEADLINE_EXCEEDED, now=1.0) == Step(None)
    assert p.deadline_exceeded


def test_only_the_first_upstream_of_the_route_is_healthy():
    p = plan()
    assert p.health_of("primary") is Health.HEALTHY
    assert p.health_of("secondary") is Health.DEGRADED


@pytest.mark.parametrize(
    ("has_default", "complete", "deadline", "answer"),
    [
        (True, True, True, Final.DEFAULT),
        (True, False, False, Final.DEFAULT),
        (False, True, True, Final.PASS_THROUGH),
        (False, True, False, Final.PASS_THROUGH),
        (False, False, True, Final.TIMEOUT),
        (False, False, False, Final.UNAVAILABLE),
    ],
)
def test_the_final_answer_prefers_default_then_the_upstreams_own_error_then_503_or_504(
    has_default, complete, deadline, answer
):
    assert (
        final_answer(
            has_stale=False,
            has_default=has_default,
            last_answer_complete=complete,
            deadline_exceeded=deadline,
        )
        is answer
    )
    assert Final.UNAVAILABLE.value == 503 and Final.TIMEOUT.value == 504


def test_a_stale_answer_comes_before_everything_else():
    assert (
        final_answer(
            has_stale=True, has_default=True, last_answer_complete=True, deadline_exceeded=True
        )
        is Final.STALE
    )


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (503, Failure.HTTP_5XX),
        (500, Failure.HTTP_5XX),
        (429, Failure.HTTP_429),
        (404, Failure.HTTP_STATUS),
        (200, None),
        (501, None),
    ],
)
def test_a_status_is_a_failure_only_when_the_route_counts_it(status, failure):
    assert classify_status(status, frozenset({500, 502, 503, 404, 429})) is failure


def test_every_retry_on_name_in_the_schema_has_a_group():
    assert set(RETRY_GROUPS) == set(RETRY_ON_CHOICES)


def test_connect_error_means_never_sent_and_timeout_covers_connect_and_read():
    assert RETRY_GROUPS["connect_error"] | {Failure.CONNECT_TIMEOUT} == NEVER_SENT - SKIPPED
    assert RETRY_GROUPS["timeout"] == {Failure.CONNECT_TIMEOUT, Failure.READ_TIMEOUT}
    assert RETRY_GROUPS["429"] == {Failure.HTTP_429}
    assert Failure.HTTP_5XX in RETRY_GROUPS["5xx"]
    assert Failure.CONNECTION_RESET in RETRY_GROUPS["reset"]


def test_a_skipped_upstream_is_never_retried_even_when_attempts_remain():
    p = plan(attempts=3)
    p.first()
    assert p.after_failure(Failure.RETRY_BUDGET_EXHAUSTED, now=0.0) == Step("secondary")
