"""Files written so that they appear complete or not at all, and let no one else in.

- :class:`AtomicFile`: a temporary file created by ``mkstemp`` beside the destination (mode
  0600, ``O_EXCL``, so nothing planted at its name is followed), written through the descriptor
  ``mkstemp`` returned (never reopened by name), given its final mode with ``fchmod``, flushed
  to disk with ``fsync`` and renamed over the destination with ``os.replace`` (after checking
  that its name still names the file written: someone who can write the directory may have
  swapped it, and the data would be lost without a word). Any failure or
  signal on the way (see ``_signals``) removes the temporary file and leaves a previous file at
  the destination untouched. A destination that is a symlink is replaced, never written through.
- The final mode: an existing regular file at the destination keeps its permission bits (as
  ``np.save`` into an existing file would: the rename replaces the inode, so they are copied);
  a new file gets ``0o666 & ~umask``, as ``open()``/``np.save`` give.
- :func:`reserve` allocates the bytes a file will hold before they are written
  (``posix_fallocate``), so a full disk is reported before any work as an ``OSError`` (ENOSPC);
  where it is not available the writes themselves report it. Nothing is written through a
  memory map: a full disk under a sparse mapping would arrive as SIGBUS.
- :func:`scratch_file`: an anonymous temporary file (``O_TMPFILE`` or unlinked at once), so it
  can never be left behind, whatever ends the process.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from types import TracebackType
from typing import IO, Iterable, Iterator, Optional, Tuple, Type

import numpy as np

from ._signals import deferred_signals


class FileError(OSError):
    """A file cannot be used (malformed, truncated, unreadable, a full disk): an OSError, as
    NumPy's and h5py's own errors for such files; reported by the command line as one line,
    exit status 2. The message names the file and what is wrong; ``errno`` is None."""


def os_error(path: str, exc: OSError) -> FileError:
    """An OSError as a FileError naming ``path`` (no errno or filename repeated)."""
    return FileError(f"{path}: {exc.strerror or exc}")


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:  # Linux >= 4.7: read without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode(path: str) -> int:
    """The permission bits the file written at ``path`` gets (see the module notes)."""
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode) & 0o777
    return 0o666 & ~_umask()


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (any spelling, symlink or hard link)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def reserve(f: IO[bytes], nbytes: int) -> None:
    """Allocate ``nbytes`` bytes for ``f`` now (raises OSError such as ENOSPC or EFBIG)."""
    if nbytes <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(f.fileno(), 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise  # unsupported here: the writes will report a full disk themselves


def write_array(f: IO[bytes], a: np.ndarray) -> None:
    """Write the bytes of ``a`` in C order with write() (no copy when ``a`` is contiguous)."""
    data = np.ascontiguousarray(a).reshape(-1).view(np.uint8).data
    while len(data):
        n = f.write(data)
        data = data[n if n is not None else 0:]


def scratch_file(near: Optional[str], nbytes: int) -> Tuple[IO[bytes], str]:
    """An anonymous temporary file (read-write) with ``nbytes`` reserved, and its directory:
    that of the file ``near`` if it has room, else the system's temporary directory (FileError
    if neither has). The file disappears when it is closed and no longer mapped."""
    places = ([os.path.dirname(os.path.abspath(near))] if near else []) + [tempfile.gettempdir()]
    for i, directory in enumerate(places):
        try:
            f = tempfile.TemporaryFile(dir=directory)
        except OSError as exc:
            if i + 1 < len(places):
                continue
            raise scratch_error(directory, exc) from None
        try:
            reserve(f, nbytes)
        except OSError as exc:
            f.close()
            if i + 1 < len(places):
                continue
            raise scratch_error(directory, exc) from None
        return f, directory
    raise AssertionError("unreachable: the last place raises")


def scratch_error(directory: str, exc: OSError) -> FileError:
    return FileError(f"cannot write a scratch copy of the data in {directory}: {exc.strerror or exc}")


@contextlib.contextmanager
def scratch_errors(directory: str) -> Iterator[None]:
    """An OSError writing a scratch file (a full disk) as one FileError naming where."""
    try:
        yield
    except OSError as exc:
        raise scratch_error(directory, exc) from None


def check_destination(path: str, inputs: Iterable[str] = (), what: str = "--out") -> str:
    """The directory of a destination that can be written: it exists, ``path`` is not a
    directory, nor the same file as any of ``inputs`` (any spelling, symlink or hard link)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileError(f"{what}: {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise FileError(f"{what}: {path} is a directory; give a file name")
    for src in inputs:
        if same_file(path, src):
            raise FileError(f"{what}: {path} is the input file {src}; write the result to another file")
    return directory


class AtomicFile:
    """``with AtomicFile(path) as f: f.write(...)``: ``path`` appears complete when the block
    ends normally, and nothing appears (a previous file stays) when it ends with an exception.

    ``inputs`` are paths the destination must not be (the same file by any name): writing the
    result over its own input is refused with FileError before anything is created.
    """

    def __init__(self, path: str, *, inputs: Iterable[str] = (), what: str = "--out"):
        self.path = path
        self.directory = check_destination(path, inputs, what)
        self.mode = output_mode(path)
        self.tmp: Optional[str] = None
        self.file: Optional[IO[bytes]] = None

    def __enter__(self) -> IO[bytes]:
        try:
            with deferred_signals():  # the name is ours to remove from the moment it exists
                fd, self.tmp = tempfile.mkstemp(dir=self.directory, prefix=".fastlogits-", suffix=".part")
                self.file = os.fdopen(fd, "w+b")
            if hasattr(os, "fchmod"):
                os.fchmod(self.file.fileno(), self.mode)
        except BaseException as exc:
            self._discard()
            if isinstance(exc, OSError) and not isinstance(exc, FileError):
                raise os_error(self.path, exc) from None
            raise
        return self.file

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is not None:
            self._discard()
            if isinstance(exc, OSError) and not isinstance(exc, FileError) and exc.filename is None:
                # writing the descriptor failed
                raise os_error(self.path, exc) from None
            return
        try:
            with deferred_signals():
                self._commit()
        except FileError:
            self._discard()
            raise
        except OSError as err:
            self._discard()
            raise os_error(self.path, err) from None
        except BaseException:
            self._discard()
            raise

    def _commit(self) -> None:
        assert self.file is not None and self.tmp is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        if not _names_file(self.tmp, self.file):
            raise FileError(f"{self.path}: the temporary file {self.tmp} was replaced by another file "
                            f"during the run (someone else writes into {self.directory}); nothing was written")
        self.file.close()
        os.replace(self.tmp, self.path)
        self.tmp = None
        _sync_directory(self.directory)

    def _discard(self) -> None:
        with deferred_signals():
            if self.file is not None:
                try:
                    self.file.close()
                except OSError:
                    pass  # a failed flush of what is being thrown away
            if self.tmp is not None:
                try:
                    os.remove(self.tmp)
                except OSError:
                    pass
            self.file = self.tmp = None


def _names_file(path: str, f: IO[bytes]) -> bool:
    """Whether ``path`` (not followed if a symlink) is still the file open as ``f``."""
    try:
        a, b = os.lstat(path), os.fstat(f.fileno())
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _sync_directory(directory: str) -> None:
    """Make the rename durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
