"""Progress lines: done/total, rate, ETA, and a line at least every `every_s` seconds (a fake clock: no timing)."""

from __future__ import annotations

from neuronforge.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)


def test_a_line_says_done_total_rate_and_eta() -> None:
    clock, log = Clock(), Log()
    progress = Progress("corpus_embeddings", "chunks", 1000, log, clock=clock)
    progress.advance(250)
    clock.now += 10
    assert progress.line() == "corpus_embeddings: 250/1,000 chunks (25%), 25.0 chunks/s, 10s elapsed, ETA 30s"


def test_skipped_work_counts_as_done_but_not_in_the_rate() -> None:
    clock = Clock()
    progress = Progress("sparse_index", "chunks", 2000, None, clock=clock)
    progress.advance(1000, skipped=True)  # shards already on disk
    progress.advance(100)
    clock.now += 20
    assert progress.rate() == 5.0
    assert "1,100/2,000 chunks (55%)" in progress.line() and "ETA 3m00s" in progress.line()


def test_an_approximate_total_says_so_and_a_note_follows() -> None:
    clock = Clock()
    progress = Progress("x", "chunks", None, None, clock=clock)
    progress.set_total(3600, approximate=True)
    progress.set_note("657/1,187 documents")
    progress.advance(360)
    clock.now += 60
    assert (
        progress.line() == "x: 360/~3,600 chunks (10%), 6.0 chunks/s, 1m00s elapsed, ETA ~9m00s — 657/1,187 documents"
    )


def test_lines_come_every_interval_and_no_more_often() -> None:
    clock, log = Clock(), Log()
    progress = Progress("chat", "conversations", 9, log, every_s=10, clock=clock)
    assert not progress.maybe_log()  # nothing before 10 s
    clock.now += 9.9
    assert not progress.maybe_log()
    clock.now += 0.1
    assert progress.maybe_log() and len(log.lines) == 1  # even though nothing advanced: the step is alive
    assert progress.line().endswith("ETA ?")
    progress.advance(3)
    assert not progress.maybe_log()  # advancing does not add lines within the interval
    clock.now += 10
    assert progress.maybe_log() and "3/9 conversations (33%)" in log.lines[-1]


def test_the_ticker_thread_writes_and_the_exit_closes(monkeypatch) -> None:
    log = Log()
    with Progress("t", "items", 2, log, every_s=0.05) as progress:
        progress.advance(2)
        import time

        deadline = time.monotonic() + 5
        while not log.lines and time.monotonic() < deadline:
            time.sleep(0.01)
    assert log.lines and log.lines[-1].endswith("— done") and "2/2 items (100%)" in log.lines[-1]


def test_a_step_with_nothing_to_report_writes_nothing() -> None:
    log = Log()
    with Progress("source_model", "steps", None, log):
        pass
    assert log.lines == []


def test_durations_read_like_a_clock() -> None:
    assert [duration(s) for s in (0, 12.4, 185, 3720)] == ["0s", "12s", "3m05s", "1h02m"]


def test_a_percentage_of_weighted_phases_reads_as_percent_done() -> None:
    from neuronforge.progress import PERCENT

    clock = Clock()
    progress = Progress("smollm2/source_model", PERCENT, 100, None, clock=clock)
    progress.set_note("de-quantizing the weights")
    progress.advance(80)
    clock.now += 80
    assert progress.line() == "smollm2/source_model: 80% done, 1m20s elapsed, ETA 20s — de-quantizing the weights"


def test_slow_rates_keep_two_significant_digits() -> None:
    clock = Clock()
    progress = Progress("chat", "conversations", 9, None, clock=clock)
    progress.advance(1)
    clock.now += 15
    assert "0.067 conversations/s" in progress.line()
