"""The write buffer's journal on disk: torn tails, checksums, space coming back, and
the decisions about which writes may be buffered."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.buffer.frames import Write
from proxy.buffer.journal import Journal, JournalLocked
from proxy.buffer.rules import Verdict, may_buffer, replay_backoff, verdict
from proxy.chain.errors import Failure
from proxy.chain.headers import FailedHop


def write(n: int, route: str = "events") -> Write:
    return Write(f"id{n}", n, route, "POST", f"/e?n={n}", (("X-A", "1"),), f"key{n}", 1e9, None)


def opened(directory: Path, **options) -> Journal:
    journal = Journal(directory, **options)
    journal.open()
    return journal


def test_writes_and_their_outcomes_survive_a_reopen(tmp_path: Path):
    journal = opened(tmp_path)
    journal.add([(write(1), b"one"), (write(2), b"two"), (write(3), b"three")])
    journal.resolve(b"A", "id1")
    journal.resolve(b"D", "id2", {"status": 400})
    journal.close()
    again = opened(tmp_path)
    assert sorted(again.live) == ["id2", "id3"]
    assert again.dead_answer("id2") == {"status": 400}
    assert again.body("id3") == b"three"
    assert again.live["id3"].write.target == "/e?n=3"
    assert again.next_seq == 4
    again.close()


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_a_torn_tail_is_cut_off_and_the_rest_kept(tmp_path: Path, cut: int):
    journal = opened(tmp_path)
    journal.add([(write(1), b"whole")])
    journal.add([(write(2), b"torn by a crash")])
    journal.close()
    (segment,) = tmp_path.glob("journal-*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-cut])  # the crash came mid-frame
    again = opened(tmp_path)
    assert list(again.live) == ["id1"]
    again.add([(write(3), b"after")])  # appended behind the cut, not behind garbage
    again.close()
    third = opened(tmp_path)
    assert sorted(third.live) == ["id1", "id3"]
    third.close()


def test_a_flipped_bit_in_the_tail_is_detected(tmp_path: Path):
    journal = opened(tmp_path)
    journal.add([(write(1), b"good"), (write(2), b"bad")])
    journal.close()
    (segment,) = tmp_path.glob("journal-*.log")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01
    segment.write_bytes(bytes(data))
    again = opened(tmp_path)
    assert list(again.live) == ["id1"]
    again.close()


def test_space_comes_back_by_whole_segments(tmp_path: Path):
    journal = opened(tmp_path, segment_size=400)
    for n in range(1, 13):
        journal.add([(write(n), b"x" * 100)])
    assert len(journal.segments) > 3
    for n in range(1, 12):
        journal.resolve(b"A", f"id{n}")
    journal.compact()
    assert len(journal.segments) <= 2
    journal.close()
    again = opened(tmp_path, segment_size=400)
    assert list(again.live) == ["id12"]
    assert again.body("id12") == b"x" * 100
    again.close()


def test_a_few_live_writes_are_copied_forward_so_old_segments_can_go(tmp_path: Path):
    journal = opened(tmp_path, segment_size=1000)
    for n in range(1, 21):
        journal.add([(write(n), b"y" * 100)])
    journal.resolve(b"D", "id2", {"status": 422})  # a dead letter in the first segment
    for n in range(3, 21):
        journal.resolve(b"A", f"id{n}")
    journal.compact()
    first = journal.segments[0].number
    assert first > 1  # the first segment went, its live writes moved on
    journal.close()
    again = opened(tmp_path, segment_size=1000)
    assert sorted(again.live) == ["id1", "id2"]
    assert again.dead_answer("id2") == {"status": 422}
    assert again.dead_answer("id1") is None
    assert again.body("id1") == b"y" * 100
    again.close()


def test_one_process_per_directory(tmp_path: Path):
    journal = opened(tmp_path)
    with pytest.raises(JournalLocked, match="in use by another failover-proxy"):
        Journal(tmp_path).open()
    journal.close()
    opened(tmp_path).close()  # free again once the owner closed it


def hop(failure: Failure, status: int | None = None) -> FailedHop:
    return FailedHop("primary", failure, status)


@pytest.mark.parametrize(
    ("hops", "key", "expected"),
    [
        ([hop(Failure.CONNECTION_REFUSED)], False, True),
        ([hop(Failure.BREAKER_OPEN), hop(Failure.CONNECT_TIMEOUT)], False, True),
        ([hop(Failure.HTTP_5XX, 503)], False, True),
        ([hop(Failure.HTTP_429, 429)], False, True),
        ([hop(Failure.HTTP_5XX, 500)], False, False),  # it may have been applied
        ([hop(Failure.READ_TIMEOUT)], False, False),
        ([hop(Failure.CONNECTION_RESET)], False, False),
        ([hop(Failure.READ_TIMEOUT)], True, True),  # the key makes a replay harmless
    ],
)
def test_which_failed_writes_may_be_buffered(hops, key, expected):
    assert may_buffer("POST", hops, key) is expected


def test_reads_are_never_buffered():
    assert not may_buffer("GET", [hop(Failure.CONNECTION_REFUSED)], True)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (400, Verdict.DEAD),
        (404, Verdict.DEAD),
        (422, Verdict.DEAD),
        (408, Verdict.RETRY),
        (409, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (302, Verdict.DEAD),
    ],
)
def test_what_a_replayed_answer_means(status, expected):
    assert verdict(status) is expected


def test_replay_backoff_doubles_to_a_cap():
    assert [replay_backoff(n, 1.0, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_dead_letters_in_the_oldest_file_do_not_pin_the_disk(tmp_path: Path):
    journal = opened(tmp_path, segment_size=2000)
    for n in range(1, 16):  # the first file: mostly writes that will be dead letters
        journal.add([(write(n), b"d" * 100)])
    for n in range(1, 16):
        journal.resolve(b"D", f"id{n}", {"status": 400})
    for n in range(16, 400):  # then a long stream of writes that are all delivered
        journal.add([(write(n), b"x" * 100)])
        journal.resolve(b"A", f"id{n}")
        journal.compact()
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("journal-*.log"))
    live = sum(segment.live_bytes for segment in journal.segments)
    assert on_disk <= 2 * live + 2 * 2000  # bounded by what is live, not by history
    journal.close()
    again = opened(tmp_path, segment_size=2000)
    assert sorted(again.dead) == sorted(f"id{n}" for n in range(1, 16))
    again.close()
