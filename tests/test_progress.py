"""Progress bars: tqdm on a terminal; plain, periodic lines anywhere else (a log file, CI, a pipe)."""

from __future__ import annotations

import io

from tqdm import tqdm

from stream_kt.progress import PlainProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_it_is_tqdm_and_elsewhere_plain_lines() -> None:
    assert isinstance(progress_bar(range(3), file=Terminal()), tqdm)
    assert isinstance(progress_bar(range(3), file=io.StringIO()), PlainProgress)
    assert isinstance(progress_bar(range(3), file=io.StringIO(), disable=True), tqdm)  # disabled: tqdm's no-op


def test_plain_lines_come_every_interval_and_once_more_when_a_kept_bar_closes(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("stream_kt.progress.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = PlainProgress(total=300, desc="train dkt", unit="epoch", file=out, interval_s=10.0)
    bar.update(100)  # 0 s in: no line yet
    clock[0] += 12.0
    bar.set_postfix(loss="0.5123", valid_auc="0.7001")
    bar.update(100)  # 12 s in: a line
    clock[0] += 3.0
    bar.update(100)
    bar.close()  # kept: the last state
    bar.close()
    lines = out.getvalue().splitlines(keepends=True)
    assert "\r" not in out.getvalue() and all(line.endswith("\n") for line in lines)
    assert [line.split(" [")[0] for line in lines] == ["train dkt:  67% 200/300", "train dkt: 100% 300/300"]
    assert lines[-1].rstrip().endswith("loss=0.5123, valid_auc=0.7001]")


def test_a_bar_not_kept_writes_only_its_periodic_lines_and_iterating_counts(monkeypatch) -> None:
    out = io.StringIO()
    assert list(PlainProgress(range(5), desc="epoch 1", unit="batch", leave=False, file=out, interval_s=3600)) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert out.getvalue() == ""
    bar = PlainProgress(iter(range(4)), desc="scoring", file=out, interval_s=3600)  # no length: counts without a total
    assert list(bar) == [0, 1, 2, 3] and bar.n == 4
    assert out.getvalue().startswith("scoring: 4it [")
