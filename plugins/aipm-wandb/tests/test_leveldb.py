"""The tolerant ``.wandb`` log reader: CRCs, framing, truncation and corruption."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from aipm_wandb import leveldb as L
from hypothesis import given, settings
from hypothesis import strategies as st

# Published CRC-32C check values (RFC 3720 B.4 and the "123456789" check string).
VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("data,expected", VECTORS)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert L._crc32c_py(data) == expected
    assert L.crc32c(data) == expected


def test_crc32c_matches_google_crc32c_on_random_data() -> None:
    google_crc32c = pytest.importorskip("google_crc32c", reason="independent CRC-32C")
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 100, 4096):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert L._crc32c_py(data) == google_crc32c.value(data)


def _write_log(records: list[bytes], crc: str = "ieee") -> bytes:
    """An independent writer of the format (spec of the module docstring), for tests."""
    def checksum(t: int, payload: bytes) -> int:
        body = bytes([t]) + payload
        if crc == "ieee":
            return zlib.crc32(body) & 0xFFFFFFFF
        c = L._crc32c_py(body)
        return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    out = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, 0))
    for rec in records:
        first, rest = True, rec
        while True:
            left = 32768 - len(out) % 32768
            if left < 7:
                out += bytes(left)
                continue
            room = left - 7
            chunk, rest = rest[:room], rest[room:]
            last = not rest
            t = (1 if last else 2) if first else (4 if last else 3)
            out += struct.pack("<IHB", checksum(t, chunk), len(chunk), t) + chunk
            first = False
            if last:
                break
    return bytes(out)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 70000), min_size=0, max_size=6),
       crc=st.sampled_from(["ieee", "crc32c-masked"]))
def test_roundtrip_synthetic_logs(sizes: list[int], crc: str) -> None:
    rng = np.random.default_rng(len(sizes))
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    scan = L.LogScan("mem")
    got = list(L.read_records(_write_log(records, crc), scan))
    assert got == records
    assert scan.problem is None
    if records:
        assert scan.crc == crc


def test_truncation_yields_prefix_and_reports() -> None:
    rng = np.random.default_rng(3)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
               for n in (10, 40000, 5, 33000, 100)]
    data = _write_log(records)
    ends = []  # byte offset where each record's last chunk ends
    for i in range(1, len(records) + 1):
        ends.append(len(_write_log(records[:i])))
    for cut in sorted(set(rng.integers(8, len(data), 60).tolist()) | set(ends[:-1])):
        scan = L.LogScan("mem")
        got = list(L.read_records(data[:cut], scan))
        complete = sum(1 for e in ends if e <= cut)
        assert got == records[:complete], cut
        if cut in ends:
            assert scan.problem is None
        else:
            assert scan.problem is not None
            assert "truncated" in scan.problem or "multi-chunk" in scan.problem


def test_corrupt_byte_stops_at_damage() -> None:
    records = [b"a" * 100, b"b" * 100, b"c" * 100]
    data = bytearray(_write_log(records))
    data[7 + 107 + 7 + 50] ^= 0xFF  # inside the second record's payload
    scan = L.LogScan("mem")
    assert list(L.read_records(bytes(data), scan)) == records[:1]
    assert scan.problem and "checksum" in scan.problem
    assert scan.offset == 7 + 107


def test_not_a_wandb_log() -> None:
    scan = L.LogScan("mem")
    assert list(L.read_records(b"PK\x03\x04 not a log", scan)) == []
    assert scan.problem and "not a W&B" in scan.problem


def test_zero_padded_tail_is_clean() -> None:
    data = _write_log([b"x" * 10]) + bytes(500)  # preallocated, never written
    scan = L.LogScan("mem")
    assert list(L.read_records(data, scan)) == [b"x" * 10]
    assert scan.problem is None


def test_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys, aipm_wandb.leveldb, aipm_wandb.plugin; "
            "print([m for m in ('wandb','pandas','google.protobuf') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"


@settings(max_examples=60, deadline=None)
@given(pos_frac=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255))
def test_any_corrupted_byte_yields_a_prefix_never_raises(pos_frac: float, xor: int) -> None:
    rng = np.random.default_rng(5)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
               for n in (50, 40000, 3, 700, 33000, 12)]
    data = bytearray(_write_log(records))
    pos = int(pos_frac * len(data))
    data[pos] ^= xor
    scan = L.LogScan("mem")
    got = list(L.read_records(bytes(data), scan))
    assert got == records[:len(got)]
    if len(got) < len(records):
        assert scan.problem is not None
