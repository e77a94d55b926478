"""Streamed answers: when an answer is a stream, where its first event ends, and which
events are in-band errors."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from proxy.chain.streams import (
    ERROR_WATCH_LIMIT,
    ErrorWatch,
    FirstEvent,
    FirstEventScanner,
    StreamKind,
    in_band_error,
    media_type,
    stream_kind,
)

SSE = StreamKind.SSE
NDJSON = StreamKind.NDJSON
OTHER = StreamKind.OTHER

OPENAI_ERROR = b'{"error": {"message": "Rate limit reached", "type": "requests"}}'
OPENAI_CHUNK = b'{"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Hi"}}]}'


def scan(kind: StreamKind, *chunks: bytes) -> FirstEvent | None:
    """Feeds chunks until the scanner has its first event, as the proxy would."""
    scanner = FirstEventScanner(kind)
    for chunk in chunks:
        if (event := scanner.feed(chunk)) is not None:
            return event
    return None


def watch(kind: StreamKind, *chunks: bytes) -> list[str | None]:
    error_watch = ErrorWatch(kind)
    return [error_watch.feed(chunk) for chunk in chunks]


# When an answer is a stream


@pytest.mark.parametrize(
    ("content_type", "media"),
    [
        ("Text/Event-Stream; charset=utf-8", "text/event-stream"),
        ("  application/x-ndjson  ", "application/x-ndjson"),
        ("application/json;charset=utf-8", "application/json"),
        ("", ""),
        (None, ""),
    ],
)
def test_media_type_drops_parameters_and_case(content_type, media):
    assert media_type(content_type) == media


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("text/event-stream", SSE),
        ("text/event-stream; charset=utf-8", SSE),
        ("TEXT/EVENT-STREAM", SSE),
        ("application/x-ndjson", NDJSON),
        ("application/jsonl", NDJSON),
        ("multipart/x-mixed-replace; boundary=frame", OTHER),
        ("application/grpc-web", OTHER),
        ("application/grpc-web+proto", OTHER),
        ("application/grpc-web-text", OTHER),
        ("application/grpc-web-text+proto", OTHER),
        ("application/json", None),
        ("text/html", None),
        ("application/grpc", None),
        ("text/plain", None),
        (None, None),
    ],
)
def test_auto_streams_by_content_type(content_type, kind):
    assert stream_kind("auto", content_type, None, None) is kind


@pytest.mark.parametrize(
    ("accel_buffering", "kind"),
    [("no", OTHER), (" No ", OTHER), ("NO", OTHER), ("yes", None), ("", None), ("nope", None)],
)
def test_auto_streams_when_the_upstream_turns_buffering_off(accel_buffering, kind):
    assert stream_kind("auto", "application/json", accel_buffering, None) is kind


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("text/event-stream", OTHER),
        ("TEXT/Event-Stream", OTHER),
        ("application/json, text/event-stream;q=0.5", OTHER),
        ("text/event-stream; charset=utf-8; q=0.3", OTHER),
        ("text/event-stream;q=1", OTHER),
        ("text/event-stream;q=0", None),
        ("text/event-stream; q=0.0", None),
        ("text/event-stream;Q=0.000, application/json", None),
        ("application/json", None),
        ("*/*", None),
        ("text/*", None),
        ("text/event-streams", None),
        ("", None),
    ],
)
def test_auto_streams_when_the_request_asks_for_event_stream(accept, kind):
    assert stream_kind("auto", "application/json", None, accept) is kind


def test_the_kind_follows_the_content_type_whatever_chose_the_stream():
    assert stream_kind("auto", "text/event-stream", None, "text/event-stream") is SSE
    assert stream_kind("auto", "application/x-ndjson", "no", None) is NDJSON
    assert stream_kind("auto", None, "no", None) is OTHER
    assert stream_kind("stream", "text/event-stream", None, None) is SSE
    assert stream_kind("stream", "application/jsonl", None, None) is NDJSON


def test_buffer_mode_never_streams():
    assert stream_kind("buffer", "text/event-stream", "no", "text/event-stream") is None
    assert stream_kind("buffer", "application/x-ndjson", None, None) is None


def test_stream_mode_always_streams():
    assert stream_kind("stream", "application/json", None, None) is OTHER
    assert stream_kind("stream", None, "yes", "application/json") is OTHER


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="auto, buffer or stream"):
        stream_kind("fast", "text/event-stream", None, None)


# SSE: the first event that carries data


def test_sse_comments_and_keep_alives_do_not_commit():
    scanner = FirstEventScanner(SSE)
    assert scanner.feed(b": connected\n\n") is None
    assert scanner.feed(b":\n\n\n\n") is None
    assert scanner.feed(b": ping\r\n\r\n") is None
    assert scanner.feed(b"data: hello\n\n") == FirstEvent(data=b"hello", error=None)
    assert scanner.held == 41


def test_sse_events_with_only_id_or_retry_do_not_commit():
    assert scan(SSE, b"id: 7\n\n", b"retry: 3000\n\n", b"id: 8\nretry: 10\n\n") is None
    assert scan(SSE, b"id: 7\nretry: 3000\n\ndata: x\n\n") == FirstEvent(b"x", None)


def test_an_sse_event_commits_only_when_a_blank_line_ends_it():
    scanner = FirstEventScanner(SSE)
    assert scanner.feed(b"data: one\n") is None
    assert scanner.feed(b"data: two\n") is None
    assert scanner.feed(b"\n") == FirstEvent(data=b"one\ntwo", error=None)


@pytest.mark.parametrize(
    ("stream", "data"),
    [
        (b"data: a\ndata: b\n\n", b"a\nb"),
        (b"data: a\r\ndata: b\r\n\r\n", b"a\nb"),
        (b"data: a\rdata: b\r\r", b"a\nb"),
        (b"data: a\r\ndata: b\rdata: c\n\r\n", b"a\nb\nc"),
    ],
)
def test_sse_lines_end_in_crlf_lf_or_cr(stream, data):
    assert scan(SSE, stream) == FirstEvent(data=data, error=None)


def test_a_cr_ending_one_chunk_pairs_with_an_lf_starting_the_next():
    assert scan(SSE, b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == FirstEvent(b"a\nb", None)


@pytest.mark.parametrize(
    ("stream", "data"),
    [
        (b"data:x\n\n", b"x"),
        (b"data:  two spaces\n\n", b" two spaces"),
        (b"data: a: b\n\n", b"a: b"),
        (b"data\n\n", b""),
        (b"data:\ndata:\n\n", b"\n"),
        (b"event: message\ndata: x\nunknown: y\n\n", b"x"),
    ],
)
def test_sse_fields_split_at_the_first_colon_and_drop_one_space(stream, data):
    assert scan(SSE, stream) == FirstEvent(data=data, error=None)


def test_an_sse_field_name_is_case_sensitive():
    assert scan(SSE, b"Data: x\nDATA: y\n\n") is None


def test_a_bom_at_the_very_start_is_ignored():
    assert scan(SSE, b"\xef\xbb\xbfdata: x\n\n") == FirstEvent(b"x", None)
    assert scan(SSE, b"\xef", b"\xbb", b"", b"\xbf", b"data: x\n\n") == FirstEvent(b"x", None)


def test_a_bom_later_in_the_stream_is_part_of_the_field_name():
    assert scan(SSE, b": hi\n\xef\xbb\xbfdata: x\n\n") is None


SAMPLE = (
    b"\xef\xbb\xbf: stream opened\r\n"
    b"\r\n"
    b"id: 1\r\nretry: 2000\r\n\r\n"
    b"event: message\r\ndata: " + OPENAI_CHUNK + b"\r\ndata: second line\r\n\r\n"
    b"data: [DONE]\n\n"
)
SAMPLE_FIRST = FirstEvent(data=OPENAI_CHUNK + b"\nsecond line", error=None)


def test_the_first_event_is_found_whatever_byte_the_stream_splits_at():
    assert scan(SSE, SAMPLE) == SAMPLE_FIRST
    for offset in range(len(SAMPLE) + 1):
        assert scan(SSE, SAMPLE[:offset], SAMPLE[offset:]) == SAMPLE_FIRST, offset


def test_the_first_event_is_found_when_every_byte_is_its_own_chunk():
    scanner = FirstEventScanner(SSE)
    found = [
        (index, event)
        for index in range(len(SAMPLE))
        if (event := scanner.feed(SAMPLE[index : index + 1]))
    ]
    first_index = SAMPLE.index(b"second line\r\n\r\n") + len(b"second line\r\n\r") - 1
    assert found[0] == (first_index, SAMPLE_FIRST)


def test_after_the_first_event_the_scanner_keeps_answering_it():
    scanner = FirstEventScanner(SSE)
    first = scanner.feed(b"data: a\n\ndata: b\n\n")
    assert first == FirstEvent(b"a", None)
    assert scanner.feed(b"data: c\n\n") is first
    assert scanner.held == 27


# In-band errors in the first event


def test_an_error_event_first_fails_the_try():
    event = scan(SSE, b": ok\n\nevent: error\ndata: upstream overloaded\n\n")
    assert event == FirstEvent(
        data=b"upstream overloaded", error="the first event is an error (the event type is error)"
    )


def test_an_error_event_without_data_is_not_an_event():
    assert scan(SSE, b"event: error\n\n", b"data: fine\n\n") == FirstEvent(b"fine", None)


def test_an_openai_style_error_object_fails_the_try():
    event = scan(SSE, b"data: " + OPENAI_ERROR + b"\n\n")
    assert event == FirstEvent(
        data=OPENAI_ERROR,
        error='the first event is an error (a JSON "error" member: Rate limit reached)',
    )


def test_an_object_error_fails_the_try():
    data = b'{"object": "error", "message": "model is loading", "code": 503}'
    assert scan(SSE, b"data: " + data + b"\n\n") == FirstEvent(
        data=data, error='the first event is an error (a JSON "object": "error": model is loading)'
    )


def test_an_ollama_style_ndjson_error_line_fails_the_try():
    event = scan(NDJSON, b'{"error":"model \\"llama9\\" not found"}\n')
    assert event == FirstEvent(
        data=b'{"error":"model \\"llama9\\" not found"}',
        error='the first event is an error (a JSON "error" member: model "llama9" not found)',
    )


@pytest.mark.parametrize(
    "data",
    [
        b'{"error": null, "choices": []}',
        b'{"error": false}',
        b'{"error": ""}',
        b'{"error": {}}',
        b'{"error": []}',
        b'{"error": 0}',
        b'{"object": "chat.completion.chunk", "error": null}',
        b"[DONE]",
        b"error: upstream timed out",
        b'"error"',
        b'[{"error": "in a list"}]',
        b'{"error": "unterminated',
        b'{"errors": ["not the same member"]}',
        b'{"detail": {"error": "nested, not top-level"}}',
        b"",
    ],
)
def test_data_that_is_not_an_error_object(data):
    assert in_band_error(data) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"error": "boom"}', 'a JSON "error" member: boom'),
        (b' \r\n\t{"error": true}', 'a JSON "error" member'),
        (b'{"error": {"code": 500}}', 'a JSON "error" member'),
        (b'{"\\u0065rror": "escaped key"}', 'a JSON "error" member: escaped key'),
        (b'{"object": "error"}', 'a JSON "object": "error"'),
        (b'{"error": "tab\\there"}', 'a JSON "error" member: tab?here'),
        (
            json.dumps({"error": "x" * 100}).encode(),
            'a JSON "error" member: ' + "x" * 80 + "...",
        ),
    ],
)
def test_data_that_is_an_error_object(data, reason):
    assert in_band_error(data) == reason


# NDJSON and other streams


def test_ndjson_skips_blank_lines_and_strips_the_line_end():
    scanner = FirstEventScanner(NDJSON)
    assert scanner.feed(b"\n  \r\n\t\n") is None
    assert scanner.feed(b'{"response": "Hi"') is None
    assert scanner.feed(b', "done": false}\r') is None
    assert scanner.feed(b"\n") == FirstEvent(b'{"response": "Hi", "done": false}', None)


def test_ndjson_lines_end_only_at_lf():
    assert scan(NDJSON, b"a\rb\r\n") == FirstEvent(b"a\rb", None)


def test_ndjson_first_line_is_found_whatever_byte_the_stream_splits_at():
    stream = b'\n{"model": "llama3", "response": "Hi"}\r\n{"error": "later"}\n'
    expected = FirstEvent(b'{"model": "llama3", "response": "Hi"}', None)
    for offset in range(len(stream) + 1):
        assert scan(NDJSON, stream[:offset], stream[offset:]) == expected, offset


def test_other_streams_commit_at_their_first_non_empty_bytes():
    scanner = FirstEventScanner(OTHER)
    assert scanner.feed(b"") is None
    assert scanner.feed(b"--frame\r\n") == FirstEvent(b"--frame\r\n", None)
    assert scanner.held == 9


def test_other_streams_are_never_in_band_errors():
    assert scan(OTHER, b'{"error": "boom"}') == FirstEvent(b'{"error": "boom"}', None)


# After the commit: ErrorWatch for abort_on_error_event

LATER_ERROR = SAMPLE + b": ping\n\nevent: error\ndata: {}\n\n"


def test_the_watch_reports_nothing_for_a_good_stream():
    assert watch(SSE, SAMPLE) == [None]


def test_the_watch_finds_a_later_error_event_split_across_chunks():
    reason = "an error event in the stream (the event type is error)"
    assert watch(SSE, LATER_ERROR) == [reason]
    split = LATER_ERROR.index(b"event: error") + 3
    for offset in range(len(LATER_ERROR) + 1):
        expected = [None, reason] if offset < len(LATER_ERROR) else [reason, None]
        assert watch(SSE, LATER_ERROR[:offset], LATER_ERROR[offset:]) == expected, offset
    assert watch(SSE, LATER_ERROR[:split], LATER_ERROR[split:-1], b"\n") == [None, None, reason]
    bytewise = watch(SSE, *(LATER_ERROR[index : index + 1] for index in range(len(LATER_ERROR))))
    assert bytewise == [None] * (len(LATER_ERROR) - 1) + [reason]


def test_the_watch_finds_a_later_error_object():
    stream = b"data: " + OPENAI_CHUNK + b"\n\ndata: " + OPENAI_ERROR + b"\r\n\r\n"
    assert watch(SSE, stream[:20], stream[20:-2], stream[-2:]) == [
        None,
        None,
        'an error event in the stream (a JSON "error" member: Rate limit reached)',
    ]


def test_the_watch_finds_a_later_ndjson_error_line():
    chunks = [b'{"response": "Hi"}\n{"resp', b'onse": "!"}\n\n{"error": "out of', b' memory"}\n']
    assert watch(NDJSON, *chunks) == [
        None,
        None,
        'an error event in the stream (a JSON "error" member: out of memory)',
    ]


def test_the_watch_never_reports_for_other_streams():
    assert watch(OTHER, b'{"error": "boom"}\n\n', b"event: error\ndata: x\n\n") == [None, None]


def test_the_watch_reports_each_feed_with_an_error_once_found():
    reason = "an error event in the stream (the event type is error)"
    assert watch(
        SSE, b"event: error\ndata: a\n\n", b"data: ok\n\n", b"event: error\ndata: b\n\n"
    ) == [
        reason,
        None,
        reason,
    ]


def _padded_error(size: int) -> bytes:
    """An error object of exactly ``size`` bytes."""
    head = b'{"error": "too big", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_the_watch_reads_an_error_event_under_its_limit():
    data = _padded_error(60 * 1024)
    chunks = [b"data: " + data[:1000], data[1000:], b"\n\n"]
    assert watch(SSE, *chunks) == [
        None,
        None,
        'an error event in the stream (a JSON "error" member: too big)',
    ]


def test_the_watch_skips_an_event_over_its_limit_and_reads_the_next():
    big = b"data: " + _padded_error(ERROR_WATCH_LIMIT + 1) + b"\n\n"
    pieces = [big[start : start + 4096] for start in range(0, len(big), 4096)]
    assert watch(SSE, *pieces) == [None] * len(pieces)
    later = b"event: error\ndata: x\n\n"
    assert (
        watch(SSE, *pieces, later)[-1] == "an error event in the stream (the event type is error)"
    )


def test_the_watch_skips_an_event_whose_data_lines_add_up_over_its_limit():
    line = b"data: " + b"x" * 1000 + b"\n"
    stream = b'event: error\ndata: {"error": "hidden"}\n' + line * 70 + b"\n"
    assert watch(SSE, stream) == [None]
    assert watch(SSE, stream + b'data: {"error": "seen"}\n\n') == [
        'an error event in the stream (a JSON "error" member: seen)'
    ]


def test_the_watch_skips_a_long_line_fed_in_small_chunks_without_keeping_it():
    piece = b"x" * 1024
    error_watch = ErrorWatch(NDJSON)
    assert error_watch.feed(b'{"error": "huge", "pad": "') is None
    for _ in range(1024):  # a 1 MiB line with no end yet
        assert error_watch.feed(piece) is None
    assert error_watch.feed(b'"}\n') is None
    assert error_watch.feed(b'{"error": "next"}\n') == (
        'an error event in the stream (a JSON "error" member: next)'
    )


def test_an_event_with_one_line_over_the_limit_is_skipped_whole():
    long_line = b"data: " + b"x" * ERROR_WATCH_LIMIT + b"\n"
    stream = b"event: error\ndata: short\n" + long_line + b"data: short again\n\n"
    assert watch(SSE, stream[:5000], stream[5000:]) == [None, None]


@pytest.mark.parametrize("kind", [SSE, NDJSON])
def test_the_watch_keeps_no_more_than_its_limit_of_an_endless_line(kind):
    error_watch = ErrorWatch(kind)
    piece = b"x" * 4096
    tracemalloc.start()
    try:
        error_watch.feed(b"data: ")
        for _ in range(1024):  # 4 MiB with no line end
            error_watch.feed(piece)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 2 * ERROR_WATCH_LIMIT
