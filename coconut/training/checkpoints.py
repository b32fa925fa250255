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


def _flat(node, prefix: str) -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}").items()}
    return {prefix: node}


def require_fits(path: str | Path, module: torch.nn.Module, model_cfg: dict, key: str = "ckpt_path") -> None:
    """Raises CheckpointError unless the weights saved in `path` load into `module` (what Lightning
    does when it resumes): one message naming the model settings the checkpoint was trained with
    that this run's `model_cfg` changes, the first tensors that differ, and the two ways on:
    the checkpoint's own config, or `init_from=` (its weights, a new run)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    saved = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        return  # not a Lightning checkpoint: Lightning says so
    own = module.state_dict()
    shapes = [
        f"{name}: saved {tuple(saved[name].shape)}, this run {tuple(tensor.shape)}"
        for name, tensor in own.items()
        if name in saved and tuple(saved[name].shape) != tuple(tensor.shape)
    ]
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if not (shapes or missing or unexpected):
        return
    trained = ((checkpoint.get("hyper_parameters") or {}).get("config") or {}).get("model") or {}
    theirs, ours = _flat(trained, "model"), _flat(model_cfg, "model")
    changed = [
        f"{k.split('.', 1)[1]}: {theirs[k]} (this run: {ours.get(k)})" for k in theirs if theirs[k] != ours.get(k)
    ]
    changed += [f"{k.split('.', 1)[1]}: unset (this run: {ours[k]})" for k in ours if k not in theirs]
    differs = shapes[:2] or [
        f"missing {', '.join(missing[:2])}" if missing else f"unexpected {', '.join(unexpected[:2])}"
    ]
    recorded = Path(path).resolve().parent.parent / ".hydra" / "config.yaml"
    raise CheckpointError(
        f"{key}={path} was trained with another model, so its weights do not fit this run's ("
        + ("; ".join(changed[:6]) + "; " if changed else "")
        + f"{'; '.join(differs)}). Fix: to continue that run, give the config it was trained with ("
        + (f"{recorded}: " if recorded.is_file() else "")
        + f"these model.* values); to start a new run from its weights, give init_from={path} instead of {key}"
    )
