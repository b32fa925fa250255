"""Reading a user's checkpoint: the one place that `torch.load`s a .ckpt given on the command line
(`ckpt_path=`, `init_from=`, scripts/bench_generate.py --ckpt), and the completeness check run
before Lightning loads one to resume.

A checkpoint is a zip archive (`torch.save`). One cut off mid-copy or half downloaded lacks the
archive's end record; one with damaged bytes fails a member's CRC-32. Either is reported as one
message naming the file, saying it is not a complete checkpoint, and naming the complete
checkpoints beside it (`last.ckpt`, `stage{k}-best.ckpt`) that could be used instead, rather than
torch's `PytorchStreamReader failed reading zip archive` traceback.
"""

from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path

import torch

from coconut.core.errors import CheckpointError

_CHUNK = 1 << 24


def incomplete_reason(path: str | Path) -> str | None:
    """Why `path` is not a complete torch checkpoint, or None when it is: a zip archive whose
    members all read back with their recorded CRC-32 (members saved without one are not read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not any(m.filename.endswith("data.pkl") for m in members):
                return "the archive holds no data.pkl, so it is not a torch checkpoint"
            for member in members:
                if member.CRC == 0 and member.file_size > 0:
                    continue  # torch.serialization.config.save.compute_crc32=False wrote no CRC
                with archive.open(member) as f:
                    while f.read(_CHUNK):
                        pass
    except zipfile.BadZipFile as error:
        if "CRC" in str(error):
            return f"its bytes are damaged ({error})"
        return "it is cut off or is not a checkpoint at all (no zip end record: a copy stopped mid-write?)"
    except (EOFError, OSError, ValueError) as error:
        return f"it is cut off or damaged ({type(error).__name__}: {error})"
    return None


def complete_neighbours(path: str | Path) -> list[Path]:
    """The other complete .ckpt files in `path`'s folder, newest first."""
    path = Path(path)
    others = [p for p in path.parent.glob("*.ckpt") if p.resolve() != path.resolve() and p.is_file()]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [p for p in others if incomplete_reason(p) is None]


def require_complete(path: str | Path, key: str = "ckpt_path", *, label: str | None = None, fix: str | None = None):
    """Raises CheckpointError when `path` is not a complete checkpoint: one line naming it (`key`={path},
    or `label`), why, the complete checkpoints beside it, and `fix` (default: use one of them as `key`)."""
    reason = incomplete_reason(path)
    if reason is None:
        return
    neighbours = complete_neighbours(path)
    if neighbours:
        listed = ", ".join(
            f"{p} (saved {time.strftime('%Y-%m-%d %H:%M', time.localtime(p.stat().st_mtime))})" for p in neighbours
        )
        beside = f"Complete checkpoints beside it: {listed}"
        fix = fix or f"give one of them as {key}=<file>, or copy or download this one again"
    else:
        beside = "No complete checkpoint lies beside it"
        fix = fix or "copy or download it again"
    raise CheckpointError(f"{label or f'{key}={path}'} is not a complete checkpoint: {reason}. {beside}. Fix: {fix}")


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """`torch.load` of a user's checkpoint on the CPU; a missing, incomplete or unreadable file is a
    CheckpointError naming `key`={path}."""
    if not Path(path).is_file():
        raise CheckpointError(f"{key}={path}: no such file; give a .ckpt written by coconut-train")
    require_complete(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(
            f"{key}={path} could not be read as a checkpoint ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "Fix: give a .ckpt written by coconut-train"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{key}={path} holds a {type(checkpoint).__name__}, not a coconut-train checkpoint")
    return checkpoint
