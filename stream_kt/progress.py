"""Progress bars that suit where they are written: tqdm's bar on a terminal, plain lines elsewhere.

tqdm redraws its bar with carriage returns, ten times a second; in a log file, a CI
console or a pipe that is one line growing without end.  ``progress_bar`` takes tqdm's
arguments and returns a tqdm bar where the stream is a terminal, else a
``PlainProgress``: the same calls (iterate, ``update``, ``set_postfix``, ``close``, ``n``)
writing one whole line every ``PLAIN_INTERVAL_S`` seconds, and a last one when a bar
that is kept (tqdm's ``leave``) closes.  Without tqdm (it comes with the ``demo`` extra),
a terminal gets the plain lines too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

try:
    from tqdm import tqdm
except ImportError:  # pip install stream-kt: no progress bars, plain lines
    tqdm = None

PLAIN_INTERVAL_S = 10.0


def progress_bar(
    iterable: Iterable[Any] | None = None, *, disable: bool = False, file: IO[str] | None = None, **options: Any
) -> Any:
    """tqdm(iterable, **options) on a terminal (or disabled), else ``PlainProgress`` with the same arguments."""
    stream = file if file is not None else sys.stderr
    if tqdm is not None and (disable or _is_terminal(stream)):
        return tqdm(iterable, disable=disable, file=stream, **options)
    return PlainProgress(iterable, file=stream, disable=disable, **options)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class PlainProgress:
    """A progress bar as plain lines: ``desc: 40% 4/10 [00:12<00:18, 3.00s/epoch, loss=0.52]``."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        unit_scale: bool = False,
        leave: bool = True,
        file: IO[str] | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
        position: int | None = None,  # tqdm's screen row: lines need none
        mininterval: float | None = None,  # tqdm's redraw interval: lines use interval_s
        disable: bool = False,  # no lines at all (tqdm's disable, where tqdm is not installed)
    ) -> None:
        if total is None and iterable is not None:
            total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit, self.unit_scale, self.leave = (
            iterable,
            total,
            desc or "",
            unit,
            unit_scale,
            leave,
        )
        self.file = file if file is not None else sys.stderr
        self.interval_s = interval_s
        self.n: float = 0
        self.postfix = ""
        self.closed = False
        self.started = self.last_line = time.monotonic()
        self.disabled = disable

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "PlainProgress(total=...) is updated, not iterated"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self.last_line >= self.interval_s:
            self._write_line()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in {**(ordered_dict or {}), **values}.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave:
            self._write_line()

    def line(self) -> str:
        """The bar's state as one line, in tqdm's words (no bar: there is no redrawing it)."""
        elapsed = time.monotonic() - self.started
        known_total = self.total is not None and self.total > 0
        bar_format = (
            "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
            if known_total
            else None
        )
        return tqdm.format_meter(
            self.n,
            self.total if known_total else None,
            elapsed,
            prefix=self.desc,
            unit=self.unit,
            unit_scale=self.unit_scale,
            postfix=self.postfix or None,
            bar_format=bar_format,
        )

    def _write_line(self) -> None:
        self.last_line = time.monotonic()
        if self.disabled:
            return
        try:
            self.file.write(self.line() + "\n")
            self.file.flush()
        except ValueError:  # the stream was closed under us (interpreter exit): progress is not worth an error
            pass
