"""proxy.config.units: durations and sizes as people write them in config.yaml."""

from __future__ import annotations

import pytest

from proxy.config.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("24h", 86_400.0),
        ("7d", 604_800.0),
        (" 30 s ", 30.0),
        ("0s", 0.0),
        (0, 0.0),
        (0.0, 0.0),
    ],
)
def test_duration_is_read_in_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [5, 2.5, "5", "5 sec", "5S", "-5s", "1e3s", "", "s", None, [], "5s5"],
)
def test_duration_without_a_known_unit_is_refused_with_an_example(value):
    with pytest.raises(ValueError) as refused:
        parse_duration(value)
    assert str(refused.value) == f"expected a duration such as 250ms, 5s or 24h, got {value!r}"


def test_duration_refuses_a_boolean_by_name():
    with pytest.raises(ValueError, match="got a boolean"):
        parse_duration(False)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (512, 512),
        (0, 0),
        ("512", 512),
        ("512B", 512),
        ("64KiB", 65_536),
        ("1MiB", 1_048_576),
        ("1GiB", 1_073_741_824),
        ("1KB", 1000),
        ("2MB", 2_000_000),
        ("1GB", 1_000_000_000),
        ("1.5KiB", 1536),
        (" 8 KiB ", 8192),
    ],
)
def test_size_is_read_in_bytes_with_binary_and_decimal_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("value", [-1, 1.5, "64kib", "64 KiBs", "1TiB", "-1B", "", "KiB", None])
def test_size_with_an_unknown_unit_or_sign_is_refused_with_an_example(value):
    with pytest.raises(ValueError) as refused:
        parse_size(value)
    assert str(refused.value) == f"expected a size such as 64KiB or 1MiB, got {value!r}"


def test_size_refuses_a_boolean_by_name():
    with pytest.raises(ValueError, match="got a boolean"):
        parse_size(True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (5, "5s"),
        (90, "90s"),
        (300, "5m"),
        (5400, "90m"),
        (86_400, "1d"),
        (3 * 3600, "3h"),
    ],
)
def test_format_duration_picks_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["250ms", "5s", "15m", "24h", "7d", "0s", "0.5ms", "1.5ms"])
def test_a_formatted_duration_reads_back_as_the_same_duration(text):
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
