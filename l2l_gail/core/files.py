"""Safe file I/O: atomic writes (an interrupted write never destroys the last good copy) and
weights-only loads (a file from anyone is never run).

Lives in the core so that the core (which saves learned rules) imports nothing from the rest of
the package; :mod:`l2l_gail.runs` re-exports both for the run directories.
"""

from __future__ import annotations

import errno
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from l2l_gail.errors import L2LError, first_line


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic on POSIX, so readers see either the old file or the new one, and the
    data is flushed to disk first, so that a crash cannot leave an empty file under the new
    name. If the write fails, the temporary file is removed and ``path`` keeps its previous
    content. ``write``'s return value is ignored (``Path.write_text`` returns a count).

    Raises:
        L2LError: the write failed for lack of space or another I/O error (an ``OSError``, or
            the ``RuntimeError`` torch's file writer raises instead); other errors propagate.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        _fsync(tmp)  # on disk before the rename: a crash must not leave a renamed empty file
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        failure = _write_failure(exc, path.parent)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if failure is None:
            raise
        reason, full = failure
        raise L2LError(f"cannot write {path}: {reason}; existing files are unchanged (a run keeps its "
                       f"last checkpoint); {'free some space' if full else 'fix that'} and run the "
                       "command again (a training run continues with --resume)") from exc


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's) data to disk; a delayed write failure (ENOSPC on
    some file systems) surfaces here as an ``OSError``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A failed write with less free space than this left on its file system is taken as a full disk.
_FULL_BELOW = 64 * 2**20
# torch.save's errors on a full disk (torch 2.13, writing to /dev/full): "[enforce fail at
# inline_container.cc:672] . unexpected pos 704 vs 598" when a record is cut short, "basic_ios::clear:
# iostream error" when the stream fails at the end; older versions: "PytorchStreamWriter failed ...".
_TORCH_WRITE_ERRORS = ("inline_container.cc", "iostream error", "PytorchStreamWriter")


def _write_failure(exc: BaseException, folder: Path) -> tuple[str, bool] | None:
    """Why a write failed and whether the disk is full, if ``exc`` is an I/O failure; None for
    any other error (a bug, an interrupt), which must propagate unchanged."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full ({exc.strerror})", True
        return str(exc) or type(exc).__name__, False
    # torch.save reports a failed write (ENOSPC included) as a RuntimeError of its C++ writer,
    # with no errno: the free space left tells a full disk from another failure.
    text = str(exc).strip()
    if isinstance(exc, RuntimeError) and any(form in text for form in _TORCH_WRITE_ERRORS):
        first = first_line(exc)
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return f"torch could not write the file ({first})", False
        if free < _FULL_BELOW:
            return f"the disk is full ({free / 2**20:.1f} MiB free; torch: {first})", True
        return f"torch could not write the file ({first})", False
    return None


def safe_torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of a file that may come from anyone: tensors and plain data only.

    ``weights_only=True`` makes torch's unpickler refuse every class and function reference, so
    a planted ``__reduce__`` payload is never called. This turns that refusal into a one-line
    error; a damaged file (truncated, zero-filled) raises torch's own exception, for the caller
    to word.

    Raises:
        L2LError: the file is a well-formed pickle that asks for more than tensors and plain
            data (a class or function reference, say).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # Damaged bytes are refused by the same unpickler ("Unsupported operand 0" for zeros):
        # only a pickle that parses to its end was written to be refused.
        if "Weights only load failed" not in str(exc) or not _parses(Path(path)):
            raise
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"a reference to {found.group(1)}" if found else "opcodes torch's safe loader refuses"
        raise L2LError(f"refusing to load {path}: its pickle holds {what} (an l2l_gail file holds only "
                       "tensors and plain data), and unpickling it could run code; use only files "
                       "written by l2l_gail that come from a source you trust") from exc


def _parses(path: Path) -> bool:
    """Whether the pickle of a torch file (``data.pkl`` in its zip, else the file itself) is
    well formed; read with :mod:`pickletools`, which never executes it."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
            data = archive.read(name)
    except (zipfile.BadZipFile, StopIteration):
        data = path.read_bytes()  # torch's legacy format: a sequence of pickles
    try:
        for _ in pickletools.genops(data):
            pass
    except Exception:  # pickletools raises ValueError and others for malformed bytes
        return False
    return True
