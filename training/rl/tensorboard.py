"""TensorBoard event files for the trainer's metrics, with no TensorBoard dependency.

TensorBoard reads ``events.out.tfevents.*`` files: TFRecord-framed ``Event`` protocol buffers.
We only need scalars, so the few protobuf fields involved are encoded here by hand (the
format is stable and documented in TensorFlow's ``event.proto`` / ``summary.proto``):

* ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string),
  ``summary`` (5, message), ``session_log`` (7, message);
* ``Summary``: repeated ``value`` (1, message); ``Summary.Value``: ``tag`` (1, string),
  ``simple_value`` (2, float);
* ``SessionLog``: ``status`` (1, enum; START = 1).
* TFRecord: ``uint64 length``, ``uint32 masked_crc32c(length)``, ``data``,
  ``uint32 masked_crc32c(data)``, little-endian.

A resumed run opens a new file that starts with a ``SessionLog START`` at the resume step:
TensorBoard then drops points of the earlier files at or after that step, so a crash after
the last checkpoint leaves no duplicate points (as ``torch.utils.tensorboard``'s
``purge_step`` does).
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _event(step: int, *, wall_time: float | None = None, file_version: str | None = None,
           scalars: dict[str, float] | None = None, session_start: bool = False) -> bytes:
    body = _field(1, 1) + struct.pack("<d", time.time() if wall_time is None else wall_time)
    body += _field(2, 0) + _varint(step)
    if file_version is not None:
        body += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode())
                              + _field(2, 5) + struct.pack("<f", value))
            for tag, value in scalars.items())
        body += _length_delimited(5, values)
    if session_start:
        body += _length_delimited(7, _field(1, 0) + _varint(1))
    return body


class ScalarWriter:
    """Appends scalar points to a new TensorBoard event file in ``folder``.

    ``start_step``: for a resumed run, the first step it will write; points of earlier files at
    or after it are dropped by TensorBoard (see the module docstring).
    """

    def __init__(self, folder: str | os.PathLike, start_step: int | None = None):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        path = folder / name
        n = 0
        while path.exists():  # two writers in one second (a quick resume)
            n += 1
            path = folder / f"{name}.{n}"
        self.path = path
        self._file = path.open("ab")
        self._write(_event(0, file_version="brain.Event:2"))
        if start_step is not None:
            self._write(_event(start_step, session_start=True))
        self.flush()

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + data
                         + struct.pack("<I", _masked_crc(data)))

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        """One point per tag at ``step``; non-numeric and non-finite values are skipped."""
        scalars = {}
        for tag, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                scalars[tag] = float(value)
        if scalars:
            self._write(_event(step, scalars=scalars))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


__all__ = ["ScalarWriter", "crc32c"]
