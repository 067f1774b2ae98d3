"""The SQLite journal's files: checked before SQLite opens them, and opened to read only.

SQLite treats a write-ahead log whose header does not check out as empty and forgets what lived
only there; this refuses such a log loudly. It never hands a damaged log to SQLite and never
changes a file.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path
from urllib.parse import quote

WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-endian / big-endian
WAL_VERSION = 3007000
WAL_HEADER = 32
FRAME_HEADER = 24


def connect_read_only(path: Path) -> sqlite3.Connection:
    """The journal at `path` opened to read, creating nothing: what `check`, a dry run's look at
    earlier runs, and `liquidator journal`, `status` and `cancel` read. Without a write-ahead log
    beside it (no run has it open) SQLite is told the file is immutable, since a plain read-only
    open of a WAL journal would create its -wal and -shm files."""
    live = path.with_name(path.name + "-wal").exists()
    where = quote(str(path))
    uri = f"file:{where}?mode=ro" if live else f"file:{where}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def wal_problem(db_path: Path) -> str | None:
    """What is wrong with the journal's write-ahead log, or None when it is sound or absent."""
    wal = db_path.with_name(db_path.name + "-wal")
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{wal}: cannot be read: {exc.strerror}"
    if not data:
        return None  # emptied by the last checkpoint
    if len(data) < WAL_HEADER:
        return f"{wal}: {len(data)} bytes, shorter than a log header"
    magic, version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC or version != WAL_VERSION:
        return f"{wal}: not a SQLite write-ahead log (its header is overwritten)"
    big_endian = magic & 1 == 1
    if _checksum(data[:24], (0, 0), big_endian) != (c1, c2):
        return f"{wal}: its header's checksum does not match (the header is damaged)"
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return f"{wal}: page size {page_size} in its header is impossible"
    return _frames_problem(wal, data, page_size, (salt1, salt2), (c1, c2), big_endian)


def _frames_problem(
    wal: Path,
    data: bytes,
    page_size: int,
    salts: tuple[int, int],
    checksum: tuple[int, int],
    big_endian: bool,
) -> str | None:
    """A frame of this log generation after a broken one: committed frames would be cut off.

    A torn last frame (a crash while appending) is normal and harmless: its commit never
    returned. Frames of an older generation carry other salts and are ignored, as SQLite does.
    """
    size = FRAME_HEADER + page_size
    offset, broken = WAL_HEADER, None
    while offset + size <= len(data):
        header = data[offset : offset + FRAME_HEADER]
        frame_salts = struct.unpack(">2I", header[8:16])
        if frame_salts == salts:
            expected = struct.unpack(">2I", header[16:24])
            if broken is None:
                computed = _checksum(header[:8], checksum, big_endian)
                computed = _checksum(
                    data[offset + FRAME_HEADER : offset + size], computed, big_endian
                )
                if computed == expected:
                    checksum = computed
                else:
                    broken = offset
            else:
                return f"{wal}: the frame at byte {broken} is damaged and later frames follow it"
        offset += size
    return None


def _checksum(data: bytes, start: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum over 8-byte pairs of 32-bit words."""
    s0, s1 = start
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1
