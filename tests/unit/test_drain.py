"""Knowing when a drained node is quiet: the pure watch, the loop, and the nftables text."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence

import pytest

from anycastd.core.net import IPAddress
from anycastd.watch.drain import DrainReport, InMemoryMeter, MeterError, QuietWatch, Verdict, wait_quiet
from anycastd.watch.nft_meter import nft_ruleset, parse_counters
from tests.unit.fake_time import FakeTime


@pytest.mark.parametrize(
    ("readings", "verdicts", "packets"),
    [
        # (count, time) fed in order; quiet 1 s, timeout 5 s, started at 0
        ([(0, 0.0), (0, 0.5), (0, 1.0)], ["waiting", "waiting", "drained"], 0),
        ([(10, 0.0), (12, 0.5), (12, 1.0), (12, 1.5)], ["waiting", "waiting", "waiting", "drained"], 2),
        ([(0, 0.0), (1, 2.0), (2, 4.0), (3, 5.0)], ["waiting", "waiting", "waiting", "timed_out"], 3),
        # counters reset (the table was re-created): counted as traffic, never as quiet
        ([(50, 0.0), (60, 0.5), (3, 0.9), (3, 1.5), (3, 2.0)], ["waiting"] * 4 + ["drained"], 13),
    ],
)
def test_quiet_watch(readings: list[tuple[int, float]], verdicts: list[str], packets: int) -> None:
    watch = QuietWatch(quiet=1.0, timeout=5.0, started=0.0)
    assert [watch.feed(count, now).value for count, now in readings] == verdicts
    assert watch.packets == packets


ADDRS: list[IPAddress] = [ipaddress.ip_address("203.0.113.53")]


def test_wait_quiet_measures_until_the_count_stops() -> None:
    t = FakeTime()
    counts = iter([0, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9])

    def count(addresses: Sequence[IPAddress]) -> int:
        assert list(addresses) == ADDRS
        return next(counts)

    report = asyncio.run(
        wait_quiet(InMemoryMeter(count), ADDRS, quiet=1.0, timeout=10, fallback=5, clock=t.clock, sleep=t.sleep)
    )
    assert (report.verdict, report.method, report.packets) == (Verdict.DRAINED, "nftables", 9)
    assert report.waited == pytest.approx(1.2)  # last change at 0.2 s, then 1 s of quiet


def test_wait_quiet_falls_back_to_the_timer_and_says_so() -> None:
    t = FakeTime()
    report = asyncio.run(
        wait_quiet(
            InMemoryMeter(error="nft: not found"), ADDRS, quiet=1, timeout=30, fallback=5, clock=t.clock, sleep=t.sleep
        )
    )
    assert (report.verdict, report.method, report.packets, report.waited) == (Verdict.DRAINED, "timer", None, 5.0)
    assert "could not measure traffic (nft: not found); waited the fixed drain.fallback of 5 s" in report.note
    assert report.to_json()["drained"] is True


def test_nft_ruleset_counts_everything_but_loopback() -> None:
    text = nft_ruleset([ipaddress.ip_address("2001:db8::53"), ipaddress.ip_address("203.0.113.53")])
    assert text.splitlines()[:3] == ["table inet anycastd", "delete table inet anycastd", "table inet anycastd {"]
    assert '    iifname "lo" return' in text
    assert text.index("ip daddr 203.0.113.53 counter") < text.index("ip6 daddr 2001:db8::53 counter")


def test_parse_counters_reads_nft_json() -> None:
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "anycastd"}},
            {"rule": {"expr": [{"match": {}}, {"return": None}]}},
            {"rule": {"comment": "203.0.113.53", "expr": [{"match": {}}, {"counter": {"packets": 17, "bytes": 1}}]}},
        ]
    }
    assert parse_counters(json.dumps(listing)) == {"203.0.113.53": 17}
    with pytest.raises(MeterError, match="not its JSON ruleset"):
        parse_counters("Error: No such file or directory")


# Named by the mutants of `make mutation` they kill (docs/architecture.md#mutation-testing).


def test_a_report_as_json_is_the_documented_shape() -> None:
    """docs/operations.md's `withdraw --wait --json`: every key, the time rounded to the millisecond."""
    shaped = DrainReport(Verdict.TIMED_OUT, "nftables", 1.23456, 7, "still receiving").to_json()
    assert shaped == {
        "drained": False,
        "verdict": "timed_out",
        "method": "nftables",
        "waited": 1.235,
        "packets": 7,
        "note": "still receiving",
    }


@pytest.mark.parametrize(("counts", "verdict", "note"), [
    ([0] * 20, Verdict.DRAINED, "no packet for 1 s"),
    (list(range(0, 200, 1)), Verdict.TIMED_OUT, "still receiving after 2 s (20 packets since the withdrawal)"),
])  # fmt: skip
def test_the_report_says_why_it_ended(counts: list[int], verdict: Verdict, note: str) -> None:
    t = FakeTime()
    it = iter(counts)
    report = asyncio.run(
        wait_quiet(InMemoryMeter(lambda _: next(it)), ADDRS, quiet=1.0, timeout=2.0, fallback=5, clock=t.clock,
                   sleep=t.sleep)
    )  # fmt: skip
    assert (report.verdict, report.note) == (verdict, note)


def test_the_timer_fallback_waits_only_what_is_left_of_it(caplog: pytest.LogCaptureFixture) -> None:
    """The meter fails after 0.3 s of measuring: the fallback of 1 s waits the remaining 0.7 s, not more, and says
    so in the log; when measuring already took longer than the fallback, it waits no more at all."""
    t = FakeTime()
    reads = iter([0, 0, 0])

    def count(addresses: Sequence[IPAddress]) -> int:
        try:
            return next(reads)
        except StopIteration:
            raise MeterError("table gone") from None

    with caplog.at_level("WARNING", logger="anycastd.watch.drain"):
        report = asyncio.run(
            wait_quiet(InMemoryMeter(count), ADDRS, quiet=5.0, timeout=30, fallback=1.0, clock=t.clock,
                       sleep=t.sleep)
        )  # fmt: skip
    assert report.method == "timer" and report.waited == pytest.approx(1.0)
    assert caplog.messages == [report.note]
    t2 = FakeTime()
    reads = iter([0] * 30)
    late = asyncio.run(
        wait_quiet(InMemoryMeter(count), ADDRS, quiet=5.0, timeout=30, fallback=1.0, clock=t2.clock, sleep=t2.sleep)
    )
    assert late.method == "timer" and late.waited == pytest.approx(3.0)  # 30 readings at 0.1 s, then no wait
