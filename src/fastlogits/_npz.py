"""``.npz`` members for the command line, checked as hostile input.

Every member is read once in full through ``zipfile`` before it is used: that pass checks the
CRC-32 and the sizes recorded in the zip (and that the local header names the member the
directory lists), in pieces of a few MB, so its memory stays bounded whatever the member's size.

- A member stored uncompressed (``np.savez``) is then memory-mapped in place: its data starts
  after the local file header (30 bytes + name + extra field) and the .npy header. The bytes
  the .npy header describes must be exactly the bytes the member holds.
- A compressed member (``np.savez_compressed``) is inflated in the same pass, piece by piece,
  into an anonymous scratch file (beside the input, else in the system's temporary directory)
  that is then mapped: memory stays bounded, and the scratch file needs as much free disk as
  the array (reserved before inflating; a full disk is reported before any work). The .npy
  header, read from the inflating stream, must describe exactly the bytes the member inflates
  to, so a member that claims more (a zip bomb) is refused before it is inflated.
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from typing import IO, Optional

import numpy as np

from ._atomic import FileError
from ._npy import copy_to_scratch, data_nbytes, map_data, one_line, read_header, size_error

_PIECE = 1 << 22
# what a corrupt zip member raises from zipfile and zlib
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, struct.error)


def open_npz(path: str, key: Optional[str]) -> np.ndarray:
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise FileError(f"{path}: not a valid .npz (zip) file ({one_line(exc)})") from None
    with zf:
        names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if key is None:
            if len(names) != 1:
                raise FileError(f"{path}: holds arrays {', '.join(names) or '(none)'}; choose one with --key")
            key = names[0]
        if key not in names:
            raise FileError(f"{path}: no array named {key!r}; it holds {', '.join(names) or 'nothing'}")
        info = zf.getinfo(key + ".npy")
        name = f"{path}[{key}]"
        if info.flag_bits & 0x1:
            raise FileError(f"{name}: the member is encrypted")
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                _check_member(zf, info)
                return _map_stored(path, info, name)
            return _inflate(zf, info, path, name)
        except FileError:
            raise
        except _ZIP_ERRORS as exc:
            raise FileError(f"{name}: corrupt zip member ({one_line(exc)})") from None


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read the member through zipfile: it raises on a bad CRC-32, a short member or a local
    header that does not match the directory."""
    if info.compress_size != info.file_size:
        raise zipfile.BadZipFile(f"stored member of {info.file_size} bytes takes {info.compress_size} bytes")
    with zf.open(info) as member:
        while member.read(_PIECE):
            pass


def _data_start(f: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where a member's bytes begin: after its local file header."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return int(info.header_offset) + 30 + int(name_len) + int(extra_len)


def _map_stored(path: str, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    with open(path, "rb") as f:
        start = _data_start(f, info)
        if start + info.file_size > os.fstat(f.fileno()).st_size:
            raise zipfile.BadZipFile("the member runs past the end of the file")
        f.seek(start)
        header = read_header(f, name)
        data = f.tell()
        holds = start + info.file_size - data
        if data_nbytes(header) != holds:
            raise size_error(name, header, max(holds, 0))
        return map_data(f, data, header)


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, name: str) -> np.ndarray:
    with zf.open(info) as member:
        header = read_header(member, name)
        holds = info.file_size - member.tell()
        if data_nbytes(header) != holds:
            raise size_error(name, header, max(holds, 0))
        arr = copy_to_scratch(member, header, path)
        if member.read(1):  # also makes zipfile check the CRC-32 at the end
            raise zipfile.BadZipFile("the member is longer than recorded")
    return arr
