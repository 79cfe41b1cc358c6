"""A run's metrics, one row per iteration: ``metrics.csv`` always, TensorBoard event files
(``tensorboard/``) through ``torch.utils.tensorboard`` when the ``tensorboard`` package is
installed (the ``[tensorboard]`` extra).

A resumed run opens its event file with ``purge_step`` at the first iteration it trains, so
TensorBoard drops the earlier files' points past the checkpoint (a crashed run logged them) and
shows one point per iteration, as ``metrics.csv`` (cut back by
:func:`training.rl.run_folder.truncate_metrics`) holds one row.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("learned_schedules.training")

FIRST_COLUMNS = ["iteration", "lr"]
LAST_COLUMNS = ["eval_reward", "seconds"]
"""``metrics.csv`` columns around the algorithm's own metrics."""


def metric_columns(path: Path, metrics: dict[str, Any]) -> list[str]:
    """The CSV's columns: an existing file's header (a resumed run), else from ``metrics``."""
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            header = next(csv.reader(f), None)
        if header:
            return header
    names = [k for k in metrics if k not in FIRST_COLUMNS + LAST_COLUMNS]
    return FIRST_COLUMNS + names + LAST_COLUMNS


def append_row(path: Path, columns: list[str], row: dict[str, Any]) -> None:
    """Append one row to a CSV file (its header first when the file is new or empty)."""
    new = not path.exists() or not path.stat().st_size
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in columns})


class _Board:
    """TensorBoard scalars through ``torch.utils.tensorboard.SummaryWriter``: one ``Summary``
    per row (all of an iteration's tags in one event: a tenth of ``add_scalar``'s cost per
    tag, which is felt on the testbed's millisecond iterations)."""

    def __init__(self, folder: Path, purge_step: int | None):
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        self._summary = Summary
        self._writer = SummaryWriter(str(folder), purge_step=purge_step)

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        if not values:
            return
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=value)
                                       for tag, value in values.items()])
        self._writer._get_file_writer().add_summary(summary, step)

    def close(self) -> None:
        self._writer.close()


def open_tensorboard(folder: Path, purge_step: int | None = None) -> _Board | None:
    """TensorBoard event files in ``folder`` (``purge_step``: see the module docstring), or
    None, said once in one line, when the ``tensorboard`` package is not installed."""
    try:
        return _Board(folder, purge_step)
    except ImportError:
        log.info("TensorBoard is not installed: metrics go to metrics.csv only (pip install "
                 "'learned-schedules[tensorboard]' to get event files too).")
        return None


class MetricsLog:
    """``write(row)`` after every iteration, ``close()`` at the end; files are opened with the
    first row. ``purge_step``: a resumed run's first iteration (see the module docstring)."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        self.csv_path = run_dir / "metrics.csv"
        self.board_dir = run_dir / "tensorboard"
        self.purge_step = purge_step
        self._columns: list[str] | None = None
        self._board: _Board | None = None
        self._board_opened = False

    def write(self, row: dict[str, Any]) -> None:
        """One row: every key a CSV column (the columns are fixed by the first row or an
        existing header); every finite number but ``iteration`` a TensorBoard scalar at step
        ``row["iteration"]``."""
        self._columns = self._columns or metric_columns(self.csv_path, row)
        append_row(self.csv_path, self._columns, row)
        if not self._board_opened:
            self._board_opened = True
            self._board = open_tensorboard(self.board_dir, self.purge_step)
        if self._board is None:
            return
        self._board.add_scalars(int(row["iteration"]), {
            tag: float(value) for tag, value in row.items()
            if tag != "iteration" and not isinstance(value, bool)
            and isinstance(value, (int, float)) and math.isfinite(value)})

    def close(self) -> None:
        """Flush and close the event file; a failure here (a full disk) is a warning only:
        ``metrics.csv`` holds every row."""
        board, self._board = self._board, None
        if board is None:
            return
        try:
            board.close()
        except Exception as exc:  # never hides the error that ended the run
            log.warning("TensorBoard event file in %s not completed: %s", self.board_dir,
                        getattr(exc, "strerror", None) or exc)


__all__ = ["FIRST_COLUMNS", "LAST_COLUMNS", "MetricsLog", "append_row", "metric_columns",
           "open_tensorboard"]
