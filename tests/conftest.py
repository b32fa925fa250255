"""Shared fixtures: tiny GPT-2 and Llama models built from configs, the tiny coconut-train config,
TensorBoard scalars of a run, and the path to ../shared/data."""

import os
import urllib.error
from pathlib import Path

# Tests compare numbers run against run (the same seed twice, a resumed run against an uninterrupted
# one): the thread count is fixed here, for this process and the runs it starts, because the
# automatic count follows the machine's load and changes the order of floating-point sums
# (docs/runs.md, "Reproducibility"). Set before torch starts its thread pool.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.exists(), reason="../shared/data is absent (benchmark files are staged only on dev and CI machines)"
)


def tiny_cfg(output_dir: Path, *overrides: str):
    """coconut-train on debug=fast (a tiny GPT-2, a few batches) writing into `output_dir`, with
    stages 0 and 1 of the curriculum."""
    import coconut.commands  # noqa: F401, PLC0415 (registers ${coconut.project_root:} for paths.root_dir)
    from coconut import CONFIG_DIR  # noqa: PLC0415 (import the package only when used)

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="train",
            overrides=["debug=fast", f"paths.output_dir={output_dir}", "curriculum.max_latent_stage=1", *overrides],
        )


def eval_cfg(output_dir: Path, *overrides: str, config: str = "eval"):
    """coconut-eval's (or coconut-export's, `config="export"`) config writing into `output_dir`."""
    import coconut.commands  # noqa: F401, PLC0415 (registers ${coconut.project_root:} for paths.root_dir)
    from coconut import CONFIG_DIR  # noqa: PLC0415 (import the package only when used)

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config, overrides=[f"paths.output_dir={output_dir}", *overrides])


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars of a run: tag -> [(step, value), ...]."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# Architectures that change the logits after the LM head in their own forward (scaled, soft-capped
# hard enough to matter at random init), one with ALiBi positions built from the mask (Bloom), and
# one whose forward calls a part of its base model (OPT: self.model.decoder).
RESCALING_FAMILIES = {
    "cohere": {"logit_scale": 0.25},
    "granite": {"logits_scaling": 4.0},
    "gemma2": {"final_logit_softcapping": 0.5, "head_dim": 8},
}
OTHER_FAMILIES = {**RESCALING_FAMILIES, "bloom": {}, "opt": {"ffn_dim": 64}}


def tiny_lm(family: str, vocab_size: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    if family in OTHER_FAMILIES:
        config = AutoConfig.for_model(
            family,
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            n_head=4,
            n_layer=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            **OTHER_FAMILIES[family],
        )
        return AutoModelForCausalLM.from_config(config)
    if family == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_positions=128,
                bos_token_id=0,
                eos_token_id=0,
                pad_token_id=0,
            )
        )
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
    )


@pytest.fixture(params=["gpt2", "llama"])
def family(request) -> str:
    return request.param


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """The data preparation's downloads fail as on a machine without network; returns the URLs
    asked for, in order."""
    from coconut.data import prepare  # noqa: PLC0415 (import the package only when used)

    calls = []

    def fail(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(prepare, "urlopen", fail)
    return calls
