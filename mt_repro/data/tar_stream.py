"""The bounded tar stream under the readers of published dataset tarballs (CIFAR-10/100's
python tarballs, STL-10's binary one): members are read in memory, never extracted, from a
stream that refuses what a published tarball cannot hold before ``tarfile`` allocates it.

* ``open_tar_stream``: the file's tar stream (gzip, bzip2, xz or uncompressed, told by its first
  bytes), behind ``BoundedTarStream``;
* ``BoundedTarStream``: no single read larger than ``CHUNK`` (``tarfile`` reads a header's name
  or PAX record whole, as large as it declares) and no position past ``ARCHIVE_BYTES`` of
  decompressed data;
* ``refuse_unsafe_member``: links, devices and names leaving the archive mean it is not the
  published tarball, whatever the reader would have read of it;
* ``tar_members``: the ``TarFile`` over that stream, with damage found while reading it (a cut
  archive, a broken compressed stream, a header larger than memory) said in one line.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mt_repro.core.errors import BadInput
from mt_repro.core.limits import ARCHIVE_BYTES, MiB

CHUNK = 1 * MiB        # members are read this much at a time; tarfile's own reads are smaller
_COMPRESSED = ((b"\x1f\x8b", gzip.GzipFile), (b"BZh", bz2.BZ2File), (b"\xfd7zXZ\x00", lzma.LZMAFile))


class BoundedTarStream(io.RawIOBase):
    """A decompressed tar stream that ``tarfile`` reads and seeks in, within the bounds the
    module names. ``what`` names the published tarball in errors ("the CIFAR-10 python tarball")."""

    def __init__(self, stream, raw, path: Path, what: str):
        self._stream, self._raw, self._path, self._what = stream, raw, path, what

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > CHUNK:
            amount = "unbounded size" if size is None or size < 0 else f"{size:,} bytes"
            raise BadInput(f"{self._path.name}: a tar header declares a record of {amount} (names and "
                           f"PAX records take a few hundred): not {self._what}, refused")
        self._within(self._stream.tell() + size)
        return self._stream.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._stream.tell()
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a tar stream is only read forward")
        self._within(offset)
        return self._stream.seek(offset)

    def tell(self) -> int:
        return self._stream.tell()

    def _within(self, position: int) -> None:
        ARCHIVE_BYTES.check(position, f"{self._path.name} (decompressed)")

    def close(self) -> None:
        try:
            if self._stream is not self._raw:
                self._stream.close()
        finally:
            self._raw.close()
            super().close()


def open_tar_stream(path: Path, what: str) -> BoundedTarStream:
    """The tar stream of ``path`` (gzip, bzip2, xz or none), behind ``BoundedTarStream``."""
    raw = open(path, "rb")
    try:
        magic = raw.read(6)
        raw.seek(0)
        for prefix, opener in _COMPRESSED:
            if magic.startswith(prefix):
                return BoundedTarStream(opener(fileobj=raw) if opener is gzip.GzipFile else opener(raw),
                                        raw, path, what)
        return BoundedTarStream(raw, raw, path, what)
    except BaseException:
        raw.close()
        raise


def refuse_unsafe_member(path: Path, member: tarfile.TarInfo) -> None:
    """``BadInput`` for a member that is a link, a device or FIFO, or whose name leaves the
    archive (absolute, or through ``..``, with either separator)."""
    if member.name.startswith(("/", "\\")) or ".." in Path(member.name).parts or ".." in member.name.split("\\"):
        raise BadInput(f"{path.name}: member {member.name!r} points outside the archive: refused")
    if member.issym() or member.islnk():
        raise BadInput(f"{path.name}: member {member.name!r} is a link (to {member.linkname!r}): refused")
    if not (member.isfile() or member.isdir()):
        raise BadInput(f"{path.name}: member {member.name!r} is not a regular file: refused")


@contextmanager
def tar_members(path: Path, *, what: str, kind: str, redownload: str) -> Iterator[tarfile.TarFile]:
    """``path``'s members as ``tarfile`` reads them from ``open_tar_stream``; what goes wrong
    while the caller reads them is a ``BadInput`` naming ``kind`` ("CIFAR-10") and the file to
    download again."""
    try:
        with open_tar_stream(path, what) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
            yield tar
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise BadInput(f"{path.name} is not a readable {kind} tarball ({_one_line(exc)}); "
                       f"re-download {redownload}") from None
    except MemoryError:
        raise BadInput(f"{path.name}: a header of it declares more than this machine's memory: "
                       f"not {what}, refused") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
