"""Errors that mean "the input is wrong", not "the program is wrong".

The command-line entry points print these as one message naming the problem and the fix, without
a traceback; anything else is a bug and keeps its traceback.
"""

import errno
import os
from pathlib import Path


class UserInputError(Exception):
    """Bad data, configuration or checkpoint given by the user."""


class ConfigError(UserInputError, ValueError):
    """A configuration value out of range or an unknown choice; the message names the key."""


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be used as asked: missing, incomplete, not from coconut-train, or
    trained differently."""


class OutputError(UserInputError):
    """An output folder or file that cannot be written: read-only, not a folder, or its disk full.
    The message names the folder and says where to write instead."""


# errno values that say the disk, not the program, stopped a write.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def writable_folder(folder: str | os.PathLike, named: str) -> None:
    """Raises OutputError unless `folder` can be written: a file can be made in it or, while it does
    not exist, in the nearest folder above it that does; nothing is left behind (the probe file is
    removed, no folder is made). `named` is the setting that chose it (`hydra.run.dir=<folder>`)."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    probe = existing / f".coconut-write-probe-{os.getpid()}"
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        what = named if named.endswith(str(folder)) else f"{named}: {folder}"
        raise OutputError(
            f"{what} cannot be written ({error.strerror or error}); nothing was written. "
            "Fix: give a folder this user can write to, on a disk with free space"
        ) from None
