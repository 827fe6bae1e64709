"""A tolerant reader for W&B's ``.wandb`` transaction log (LevelDB log framing).

Format (as written by wandb-core 0.19-0.31, ``core/pkg/leveldb``; verified on files the
installed SDK writes, see the tests):

* a 7-byte file header: ident ``b":W&B"``, magic ``0xBEE1`` (uint16 LE), version (uint8);
  the header occupies the first 7 bytes of block 0;
* the file is cut in 32 KiB blocks; a chunk never crosses a block boundary; a block
  tail shorter than a chunk header (7 bytes) is zero padding;
* a chunk: checksum (uint32 LE), length (uint16 LE), type (uint8: 1 FULL, 2 FIRST,
  3 MIDDLE, 4 LAST), then ``length`` payload bytes;
* the checksum covers the type byte and the payload. wandb-core writes plain CRC-32
  (IEEE, ``zlib.crc32``) unmasked (its ``CRCAlgoIEEE``); upstream LevelDB uses masked
  CRC-32C (Castagnoli). The reader detects which one the first chunk uses.

Unlike a strict reader, :func:`read_records` yields every intact record that precedes
the damage of a truncated or corrupt log, then stops and reports what went wrong in
:attr:`LogScan.problem` (the caller turns it into a warning). It never raises on bad data.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_CHUNK = struct.Struct("<IHB")
_FILE_HEADER = struct.Struct("<4sHB")

# -- CRC-32C (Castagnoli), table driven ----------------------------------------------------


def _make_table(poly: int) -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_table(0x82F63B78)


def _crc32c_py(data: bytes, crc: int = 0) -> int:
    """Pure-Python CRC-32C (records are small, so a byte loop is enough)."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC32C_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


try:  # pragma: no cover - depends on the environment
    from crc32c import crc32c as _crc32c_fast  # type: ignore[import-not-found]

    def crc32c(data: bytes, crc: int = 0) -> int:
        """CRC-32C (Castagnoli) of ``data``; uses the ``crc32c`` package when installed."""
        return int(_crc32c_fast(data, crc))
except ImportError:
    crc32c = _crc32c_py


def mask_crc(crc: int) -> int:
    """LevelDB's checksum masking: rotate right by 15 and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _crc_ieee(type_and_data: bytes) -> int:
    return zlib.crc32(type_and_data) & 0xFFFFFFFF


def _crc_leveldb(type_and_data: bytes) -> int:
    return mask_crc(crc32c(type_and_data))


CRC_ALGOS = {"ieee": _crc_ieee, "crc32c-masked": _crc_leveldb}


@dataclass
class LogScan:
    """What a scan found: the header version, the CRC used and the first problem (if any)."""

    path: str
    version: int | None = None
    crc: str | None = None
    records: int = 0
    problem: str | None = None  # None: the log was read to its end cleanly
    offset: int | None = None  # byte offset of the problem


def read_header(data: bytes | mmap.mmap) -> tuple[bytes, int, int]:
    if len(data) < HEADER_SIZE:
        raise ValueError("file shorter than the 7-byte W&B header")
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise ValueError(f"not a W&B transaction log (header {data[:7]!r})")
    return ident, magic, version


def read_records(data: bytes | mmap.mmap, scan: LogScan) -> Iterator[bytes]:
    """Yield each complete record payload of a ``.wandb`` log held in ``data``.

    Stops at the first damage (short chunk, bad checksum, broken FIRST/LAST sequence) and
    records it in ``scan.problem`` / ``scan.offset``; everything before it was yielded.
    """
    try:
        _, _, scan.version = read_header(data)
    except ValueError as e:
        scan.problem, scan.offset = str(e), 0
        return
    pos = HEADER_SIZE
    n = len(data)
    pending: list[bytes] | None = None
    crc_fn = None
    while True:
        left_in_block = BLOCK_SIZE - (pos % BLOCK_SIZE)
        if left_in_block < HEADER_SIZE:  # block trailer: zero padding
            pos += left_in_block
            continue
        if pos >= n:
            if pending is not None:
                scan.problem, scan.offset = "log ends inside a multi-chunk record", pos
            return
        if pos + HEADER_SIZE > n:
            scan.problem, scan.offset = "log ends inside a chunk header (truncated)", pos
            return
        checksum, length, ctype = _CHUNK.unpack_from(data, pos)
        if checksum == 0 and length == 0 and ctype == 0:
            # zeroed space: a preallocated/unflushed tail; valid only if all zero to EOF
            rest = bytes(data[pos:])
            if rest.count(0) == len(rest):
                if pending is not None:
                    scan.problem, scan.offset = "log ends inside a multi-chunk record", pos
                return
            scan.problem, scan.offset = "zeroed chunk followed by data (corrupt)", pos
            return
        start, end = pos + HEADER_SIZE, pos + HEADER_SIZE + length
        if end > pos + left_in_block:
            scan.problem, scan.offset = "chunk length crosses a block boundary (corrupt)", pos
            return
        if end > n:
            scan.problem, scan.offset = "log ends inside a chunk (truncated)", pos
            return
        body = data[pos + HEADER_SIZE - 1:end]  # type byte + payload
        if crc_fn is None:
            for name, fn in CRC_ALGOS.items():
                if fn(body) == checksum:
                    crc_fn, scan.crc = fn, name
                    break
        if crc_fn is None or crc_fn(body) != checksum:
            scan.problem, scan.offset = "checksum mismatch (corrupt chunk)", pos
            return
        payload = data[start:end]
        pos = end
        if ctype == FULL and pending is None:
            scan.records += 1
            yield payload
        elif ctype == FIRST and pending is None:
            pending = [payload]
        elif ctype == MIDDLE and pending is not None:
            pending.append(payload)
        elif ctype == LAST and pending is not None:
            pending.append(payload)
            scan.records += 1
            yield b"".join(pending)
            pending = None
        else:
            scan.problem, scan.offset = f"unexpected chunk type {ctype} (corrupt)", pos
            return
