"""The report's bytes on their way out: COPY's CSV, gzipped, cut into bounded pieces.

Memory stays flat whatever the size of the result: at any moment this holds one batch of CSV
(BATCH_BYTES) and one piece of compressed output (PIECE_BYTES), never the result. Rows and
bytes are counted as they pass, and progress is published at most every PROGRESS_EVERY seconds.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: CSV gathered from COPY's per-row messages before one call to the compressor.
BATCH_BYTES = 256 * 1024
#: Compressed bytes handed to the store at a time (one row of pgdyno.report_chunks).
PIECE_BYTES = 1024 * 1024
#: zlib level 1: on CSV it compresses nearly as well as the default level 6 at about twice the
#: speed, and a report dyno is billed by the second.
GZIP_LEVEL = 1
#: Seconds between progress updates.
PROGRESS_EVERY = 0.5

Progress = Callable[[dict[str, Any]], None]


class GzipStream:
    """Iterates the gzip pieces of the CSV `blocks` and counts what went through.

    Stores consume it (`for piece in stream`). An error raised while reading is kept in
    `error`, so the runner can report it even when a store's HTTP library wraps it.
    """

    def __init__(
        self,
        blocks: Iterable[bytes | memoryview],
        *,
        progress: Progress | None = None,
        final_rows: Callable[[], int] | None = None,
    ) -> None:
        self._blocks = blocks
        self._progress = progress
        self._final_rows = final_rows
        #: Data rows so far (counted by line ends, so a value with a newline counts twice until
        #: the end, when COPY's own count replaces it).
        self.rows = 0
        self.csv_bytes = 0
        self.stored_bytes = 0
        self.finished = False
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._pieces()
        except BaseException as exc:
            self.error = exc
            raise

    def _pieces(self) -> Iterator[bytes]:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip framing
        batch, out = bytearray(), bytearray()
        lines = 0
        next_progress = time.monotonic() + PROGRESS_EVERY
        for block in self._blocks:
            batch += block
            if len(batch) < BATCH_BYTES:
                continue
            lines += batch.count(b"\n")
            self.csv_bytes += len(batch)
            out += compressor.compress(batch)
            batch.clear()
            self.rows = max(lines - 1, 0)  # the header line is not a row
            if len(out) >= PIECE_BYTES:
                yield from self._cut(out)
            if self._progress is not None and time.monotonic() >= next_progress:
                self._progress(self.snapshot())
                next_progress = time.monotonic() + PROGRESS_EVERY
        lines += batch.count(b"\n")
        self.csv_bytes += len(batch)
        out += compressor.compress(batch)
        out += compressor.flush()
        self.rows = self._final_rows() if self._final_rows else max(lines - 1, 0)
        yield from self._cut(out, everything=True)
        self.finished = True

    def _cut(self, out: bytearray, everything: bool = False) -> Iterator[bytes]:
        while len(out) >= PIECE_BYTES or (everything and out):
            piece = bytes(out[:PIECE_BYTES])
            del out[:PIECE_BYTES]
            self.stored_bytes += len(piece)
            yield piece

    def snapshot(self) -> dict[str, Any]:
        """Progress fields: rows and CSV bytes so far, compressed bytes stored so far."""
        return {"rows": self.rows, "bytes": self.csv_bytes, "stored_bytes": self.stored_bytes}
