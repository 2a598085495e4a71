"""CSV to gzip pieces and back, in bounded memory, with counts and throttled progress."""

from __future__ import annotations

import gzip

import pytest

from pgdyno.errors import PgdynoError
from pgdyno.reports import stream as stream_module
from pgdyno.reports.results import SLICE_BYTES, gunzip
from pgdyno.reports.stream import PIECE_BYTES, GzipStream


def _rows(count: int) -> list[bytes]:
    return [b"id,name\n"] + [f"{i},{i * 7919 % 100003:x}-name\n".encode() for i in range(count)]


def test_pieces_are_bounded_and_decompress_to_the_csv():
    blocks = _rows(400_000)
    stream = GzipStream(iter(blocks))
    pieces = list(stream)
    assert stream.finished and len(pieces) > 1
    assert all(len(piece) <= PIECE_BYTES for piece in pieces)
    csv = b"".join(blocks)
    assert gzip.decompress(b"".join(pieces)) == csv  # standard gzip, readable by zcat
    assert b"".join(gunzip(pieces)) == csv
    assert stream.rows == 400_000
    assert stream.csv_bytes == len(csv)
    assert stream.stored_bytes == sum(map(len, pieces))


def test_final_row_count_comes_from_copy_not_from_line_ends():
    blocks = [b"note\n", b'"two\nlines"\n']
    stream = GzipStream(iter(blocks), final_rows=lambda: 1)
    list(stream)
    assert stream.rows == 1


def test_progress_is_published_while_streaming(monkeypatch):
    monkeypatch.setattr(stream_module, "PROGRESS_EVERY", 0.0)
    seen = []
    list(GzipStream(iter(_rows(200_000)), progress=seen.append))
    assert len(seen) >= 2
    assert seen[-1]["rows"] > seen[0]["rows"] > 0
    assert set(seen[0]) == {"rows", "bytes", "stored_bytes"}


def test_an_error_while_reading_is_kept_for_the_runner():
    def failing():
        yield b"a\n"
        raise RuntimeError("connection lost")

    stream = GzipStream(failing())
    with pytest.raises(RuntimeError):
        list(stream)
    assert isinstance(stream.error, RuntimeError) and not stream.finished


def test_gunzip_expands_in_bounded_slices_and_notices_truncation():
    packed = gzip.compress(b"0" * (50 * SLICE_BYTES))
    assert len(packed) < SLICE_BYTES
    slices = list(gunzip([packed]))
    assert len(slices) >= 50 and all(len(s) <= SLICE_BYTES for s in slices)
    with pytest.raises(PgdynoError, match="truncated"):
        list(gunzip([packed[: len(packed) // 2]]))
