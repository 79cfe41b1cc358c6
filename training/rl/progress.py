"""Training progress: a live bar on a terminal, a readable line every few seconds in a log."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("learned_schedules.training")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """``update(iteration, metrics)`` after every iteration; ``close()`` at the end.

    On a terminal: a tqdm bar with the first two metrics. Otherwise (a log file, CI, a pipe):
    one log line every ``interval`` seconds and one at the end (``iteration i/N (p%), metrics,
    it/s, ETA``), never a line per iteration and no carriage returns.
    """

    def __init__(self, total: int, start: int = 0, desc: str = "train",
                 interval: float = 10.0, terminal: bool | None = None):
        self.total, self.start, self.desc, self.interval = total, start, desc, interval
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._t0 = self._last = time.monotonic()
        self._done = start
        self._metrics: dict[str, Any] = {}
        self._bar = None
        if self.terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc=desc, unit="it",
                             dynamic_ncols=True, smoothing=0.1, mininterval=0.1)

    def update(self, iteration: int, metrics: dict[str, Any]) -> None:
        self._done, self._metrics = iteration, metrics
        shown = {k: f"{v:.3g}" for k, v in list(metrics.items())[:2]
                 if isinstance(v, (int, float))}
        if self._bar is not None:
            self._bar.update(iteration - self._bar.n)
            self._bar.set_postfix(shown, refresh=False)  # the bar refreshes on its own clock
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The log line for the current state."""
        now = time.monotonic() if now is None else now
        done = self._done - self.start
        rate = done / max(now - self._t0, 1e-9)
        left = (self.total - self._done) / rate if rate > 0 else float("inf")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in list(self._metrics.items())[:3]
                          if isinstance(v, (int, float)))
        eta = _duration(left) if left != float("inf") else "?"
        return (f"{self.desc}: iteration {self._done}/{self.total} "
                f"({100 * self._done / max(self.total, 1):.0f}%){', ' + shown if shown else ''}"
                f", {rate:.2f} it/s, ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._done > self.start:
            log.info("%s", self.line())


__all__ = ["Progress"]
