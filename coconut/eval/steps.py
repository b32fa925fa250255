"""Written steps judged by their key content. The key content of a reasoning step (`step_key`, one
rule per task family) lives in `coconut.data.step_keys`, where training's legibility objective reads
it too.

A written step is correct when its key content equals the reference step's (`steps_match`).
"""

from __future__ import annotations

from coconut.data.step_keys import step_key

__all__ = ["step_key", "steps_match", "written_steps"]


def written_steps(generated_text: str) -> list[str]:
    """The reasoning steps a model wrote before its answer line (one per line, as trained)."""
    before_answer = generated_text.split("###", 1)[0]
    return [line.strip() for line in before_answer.split("\n") if line.strip()]


def steps_match(written: str, reference: str) -> bool:
    key = step_key(reference)
    return key is not None and step_key(written) == key
