"""NIfTI files checked against their own header before any voxel is read.

A NIfTI header says how many voxels follow and of which type, and readers believe it: a 480-byte
file claiming 2048x2048x512 voxels made nibabel allocate 4.7 GB before it noticed the file was
short, and a header claiming 32767^3 voxels ended ``cohort check`` with a bare ``MemoryError``.
Here every file is vetted from its header alone (a few hundred bytes), before any voxel is read:

* the file must be a regular file (not ``/dev/zero``, a FIFO, a ``/proc`` entry) named ``.nii``
  or ``.nii.gz``, and a single-file NIfTI-1 or NIfTI-2 (``n+1`` / ``n+2`` magic);
* the voxel count (product of the header's dimensions) must not exceed a cap: ``max_voxels``
  (``cohort.max_voxels`` in a study, ``--max-voxels`` on ``cohort check``), else the environment
  variable ``SALIENT_MAX_VOXELS``, else :data:`DEFAULT_MAX_VOXELS` (1024^3 voxels: a 1024x1024
  matrix with 1024 slices, or 512x512 with 4096 slices, more than any clinical CT series);
* an uncompressed ``.nii`` must be at least as long as the header's offset plus its voxel bytes;
* a ``.nii.gz`` is decompressed as a stream into a buffer the size the header promises, and
  reading stops as soon as more bytes come out than promised (a small gzip that inflates to GBs
  costs no more memory than the header's claim) or when fewer arrive (truncated).

Every refusal is a :class:`NiftiError` (a ``ValueError``) naming the file and the numbers, so
callers list it as a problem of that subject and go on with the next one.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling
from salient.platform.errors import CohortError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MAX_VOXELS_ENV",
    "NiftiError",
    "NiftiHeader",
    "NiftiTooLargeError",
    "read_header",
    "read_nifti",
    "resolve_max_voxels",
]

#: Default voxel cap per file: 1024^3 (2 GiB as int16). Real CT series are far smaller.
DEFAULT_MAX_VOXELS = 1024**3
#: Environment variable that overrides the default cap (a study's ``cohort.max_voxels`` wins).
MAX_VOXELS_ENV = "SALIENT_MAX_VOXELS"
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 20  # compressed bytes read per step
_OUT_CHUNK = 8 << 20  # decompressed bytes per step: the only copy besides the buffer itself
_HEADER_BYTES = {348: (nib.Nifti1Header, b"n+1", 352), 540: (nib.Nifti2Header, b"n+2", 544)}


class NiftiError(ValueError):
    """A file that cannot be used as a NIfTI volume; the message names the file."""


class NiftiTooLargeError(NiftiError):
    """A header that claims more voxels than the cap allows."""


@dataclass(frozen=True)
class NiftiHeader:
    """What a header promises, checked for plausibility (see :func:`read_header`)."""

    path: Path
    header: nib.Nifti1Header  # a Nifti2Header is a subclass
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # byte offset of the first voxel
    n_voxels: int
    compressed: bool

    @property
    def data_bytes(self) -> int:
        return self.n_voxels * self.dtype.itemsize

    @property
    def file_bytes(self) -> int:
        """Bytes of the (decompressed) file up to the last voxel."""
        return self.offset + self.data_bytes


def resolve_max_voxels(max_voxels: int | None = None) -> int:
    """The voxel cap in force: the argument, else ``$SALIENT_MAX_VOXELS``, else the default.

    Args:
        max_voxels: an explicit cap (``cohort.max_voxels``); must be >= 1 when given.
    """
    if max_voxels is not None:
        if isinstance(max_voxels, bool) or not isinstance(max_voxels, int) or max_voxels < 1:
            raise CohortError(f"max_voxels must be a positive integer, got {max_voxels!r}")
        return max_voxels
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise CohortError(f"environment variable {MAX_VOXELS_ENV} must be a positive integer, got {text[:40]!r}")
    return value


def _open_head(path: Path, compressed: bool) -> bytes:
    """The first 540 bytes of the (decompressed) file: enough for either header version."""
    try:
        if compressed:
            with gzip.open(path, "rb") as fh:
                return fh.read(540)
        with path.open("rb") as fh:
            return fh.read(540)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise NiftiError(f"unreadable or corrupt NIfTI {path.name}: {type(exc).__name__}: {exc}") from None


def read_header(path: str | Path, max_voxels: int | None = None) -> NiftiHeader:
    """Vet a NIfTI file from its header alone (reads at most 540 decompressed bytes).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_voxels: voxel cap (see :func:`resolve_max_voxels`).

    Raises:
        FileNotFoundError: the file does not exist.
        NiftiTooLargeError: the header claims more voxels than the cap.
        NiftiError: anything else that makes the file unusable (not a regular file, not NIfTI,
            a bad dimension or data type, an uncompressed file shorter than its header claims).
    """
    path = Path(path)
    cap = resolve_max_voxels(max_voxels)
    name = path.name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"missing file {path}") from None
    except OSError as exc:
        raise NiftiError(f"cannot access {name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: not a regular file")
    lower = name.lower()
    if not (lower.endswith(".nii") or lower.endswith(".nii.gz")):
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: only .nii and .nii.gz files are read")
    compressed = lower.endswith(".gz")
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
    except OSError as exc:
        raise NiftiError(f"cannot read {name}: {exc.strerror or exc}") from None
    if compressed != (magic == _GZIP_MAGIC):
        what = "is not gzip-compressed" if compressed else "is gzip-compressed"
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: the file {what} but named {name!r}")
    head = _open_head(path, compressed)
    if len(head) < 348:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: {len(head)} bytes, shorter than a NIfTI header")
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    version = next((s for s in (348, 540) if s in sizes), None)
    if version is None or len(head) < version:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: not a NIfTI-1 or NIfTI-2 header")
    klass, magic_expected, min_offset = _HEADER_BYTES[version]
    try:
        header = klass.from_fileobj(io.BytesIO(head[:version]), check=False)
        dims = [int(d) for d in header["dim"]]
        dtype = np.dtype(header.get_data_dtype())
        offset = int(header.get_data_offset())
    except Exception as exc:  # nibabel raises several types for a malformed header
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: bad header: {type(exc).__name__}: {exc}") from None
    found_magic = bytes(header["magic"]).rstrip(b"\x00")
    if found_magic != magic_expected:
        raise NiftiError(
            f"unreadable or corrupt NIfTI {name}: magic {found_magic!r}, expected {magic_expected!r} "
            "(a single-file NIfTI)"
        )
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: header dim[0] = {ndim}, must be 1..7")
    shape = tuple(dims[1 : ndim + 1])
    if min(shape) < 1:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: header dimensions {shape} must all be >= 1")
    n_voxels = math.prod(shape)
    if n_voxels > cap:
        raise NiftiTooLargeError(
            f"{name}: header claims {'x'.join(map(str, shape))} = {n_voxels:,} voxels, above the cap of "
            f"{cap:,} (cohort.max_voxels, --max-voxels or {MAX_VOXELS_ENV}); refused before reading"
        )
    if offset < min_offset:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: vox_offset {offset} lies inside the header")
    info = NiftiHeader(path, header, shape, dtype, offset, n_voxels, compressed)
    if not compressed and st.st_size < info.file_bytes:
        raise NiftiError(
            f"unreadable or corrupt NIfTI {name}: truncated: the header promises {info.data_bytes:,} voxel bytes "
            f"({'x'.join(map(str, shape))} {dtype}) from offset {offset}, the file has {st.st_size:,} bytes"
        )
    return info


def _inflate(info: NiftiHeader) -> np.ndarray:
    """Decompress a .nii.gz into a buffer of exactly ``info.file_bytes``; refuse more or fewer.

    ``np.empty`` only reserves address space: pages are committed as bytes arrive, so a header
    that over-promises costs only what the stream really holds.
    """
    name, expected = info.path.name, info.file_bytes
    try:
        buf = np.empty(expected, dtype=np.uint8)
    except MemoryError:
        raise NiftiError(f"{name}: cannot allocate the {expected:,} bytes its header promises") from None
    pos = 0
    inflater = zlib.decompressobj(wbits=31)  # gzip framing, CRC and length checked by zlib
    try:
        with info.path.open("rb") as fh:
            pending, file_done = b"", False
            while True:
                if not pending and not file_done:
                    pending = fh.read(_READ_CHUNK)
                    file_done = not pending
                # Bounded output per call; what zlib holds back stays in unconsumed_tail (or its
                # state, drained by calling again with no new input once the file has ended).
                out = inflater.decompress(pending, min(expected - pos + 1, _OUT_CHUNK))
                pending = inflater.unconsumed_tail
                if pos + len(out) > expected:
                    raise NiftiError(
                        f"unreadable or corrupt NIfTI {name}: decompresses to more than the {expected:,} bytes its "
                        "header promises; reading stopped there"
                    )
                buf[pos : pos + len(out)] = np.frombuffer(out, dtype=np.uint8)
                pos += len(out)
                if inflater.eof:  # end of a gzip member: skip zero padding, then maybe another member
                    rest = inflater.unused_data.lstrip(b"\x00")
                    while not rest and not file_done:
                        chunk = fh.read(_READ_CHUNK)
                        file_done = not chunk
                        rest = chunk.lstrip(b"\x00")
                    if not rest:
                        break
                    pending, inflater = rest, zlib.decompressobj(wbits=31)
                elif file_done and not pending and not out:
                    break  # the file ended inside a member: truncated (reported below)
    except (OSError, zlib.error) as exc:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: {type(exc).__name__}: {exc}") from None
    if pos < expected:
        raise NiftiError(
            f"unreadable or corrupt NIfTI {name}: truncated: decompresses to {pos:,} of the {expected:,} bytes its "
            "header promises"
        )
    if not inflater.eof:
        raise NiftiError(f"unreadable or corrupt NIfTI {name}: truncated: the gzip stream ends before its trailer")
    return buf


def read_nifti(path: str | Path, max_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume after :func:`read_header` has vetted it.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_voxels: voxel cap (see :func:`resolve_max_voxels`).

    Returns:
        ``(data, affine)``: the array in the header's shape (x, y, z[, ...]), scaled by the
        header's slope/intercept as nibabel does, and the 4x4 voxel-to-world affine.
    """
    info = read_header(path, max_voxels)
    if info.compressed:
        raw = _inflate(info)
    else:
        try:
            raw = np.fromfile(info.path, dtype=np.uint8, count=info.file_bytes)
        except (OSError, ValueError) as exc:
            raise NiftiError(f"unreadable or corrupt NIfTI {info.path.name}: {exc}") from None
        except MemoryError:
            raise NiftiError(f"{info.path.name}: cannot allocate the {info.file_bytes:,} bytes it holds") from None
        if raw.size < info.file_bytes:  # the file shrank since read_header
            raise NiftiError(f"unreadable or corrupt NIfTI {info.path.name}: truncated")
    data = np.frombuffer(raw, dtype=info.dtype, count=info.n_voxels, offset=info.offset).reshape(info.shape, order="F")
    slope, inter = info.header.get_slope_inter()
    if slope is not None:
        data = apply_read_scaling(data, slope, inter)
    return data, np.asarray(info.header.get_best_affine())
