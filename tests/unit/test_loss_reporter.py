"""LossReporter: kernel-side losses on stderr at once, then rate-limited, and all counted by exit."""

from __future__ import annotations

import re

from otel_tcplife.cli import LossReporter


class Counters:
    """Stands in for CoreProbe.counters(): the kernel's running totals."""

    def __init__(self) -> None:
        self.totals = {"lost": 0, "untracked": 0}

    def counters(self) -> dict[str, int]:
        return dict(self.totals)


def lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_losses_are_reported_at_once_then_at_most_once_per_interval_and_summed_at_exit(capsys):
    probe = Counters()
    reporter = LossReporter(probe, log_interval=3600)
    probe.totals["lost"] = 5
    reporter.check(final=False)  # before the first check is due: nothing read yet
    assert lines(capsys) == []
    reporter.next_check = 0
    reporter.check()
    assert lines(capsys) == ["otel-tcplife: warning: 5 closed sessions lost: ring buffer full "
                             "(total 5; try a larger --ring-buffer-size)"]
    for total in (12, 20, 31):  # sustained overload: checks every second, no line each time
        probe.totals["lost"] = total
        reporter.next_check = 0
        reporter.check()
    probe.totals["untracked"] = 2  # another kind has its own line
    reporter.next_check = 0
    reporter.check()
    assert lines(capsys) == ["otel-tcplife: warning: 2 sessions untracked: socket table full (total 2)"]
    probe.totals["lost"] = 40
    reporter.check(final=True)  # exit: what was held back, summed, with the latest total
    assert lines(capsys) == ["otel-tcplife: warning: 35 closed sessions lost: ring buffer full "
                             "(total 40; try a larger --ring-buffer-size)"]


def test_every_loss_is_in_some_line(capsys):
    probe = Counters()
    reporter = LossReporter(probe, log_interval=0.0)  # no holding back: a line per growth
    for total in (3, 3, 10, 11):
        probe.totals["lost"] = total
        reporter.next_check = 0
        reporter.check()
    reporter.check(final=True)
    counts = [int(re.match(r"otel-tcplife: warning: (\d+) closed", line).group(1)) for line in lines(capsys)]
    assert counts == [3, 7, 1]
