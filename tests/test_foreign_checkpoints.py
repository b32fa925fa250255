"""coconut-eval on checkpoints it did not write: a state dict saved the way the official
facebookresearch/coconut run.py saves it (the Coconut wrapper's, `base_causallm.`-prefixed; or the
bare model's, as its CoT / No-CoT runs save), a Hugging Face save_pretrained folder, and a file of
the wrong kind. Tiny models built here, answers checked against independent reference loops."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from coconut import CONFIG_DIR
from coconut.commands.checks import CheckpointError
from coconut.commands.evaluate import run_evaluation
from coconut.core.errors import ConfigError
from coconut.core.tokenizer import build_tokenizer
from coconut.core.tokens import SPECIAL_TOKENS, add_special_tokens
from coconut.data.synthetic import generate_arithmetic

ROOT = Path(__file__).resolve().parent.parent
DATA = ["data=arithmetic", "data.sizes.train=6", "data.sizes.val=6", "data.sizes.test=6", "data.max_new_tokens=12"]
MAX_NEW = 12


class OfficialCoconut(nn.Module):
    """The parameters of facebookresearch/coconut's `Coconut` wrapper, named as it names them: the
    base model as `base_causallm` and its input embeddings again as `embedding`."""

    def __init__(self, base_causallm):
        super().__init__()
        self.base_causallm = base_causallm
        self.embedding = base_causallm.get_input_embeddings()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny GPT-2 base model folder without the COCONUT tokens (like `gpt2` on the hub)."""
    folder = tmp_path_factory.mktemp("base")
    records = generate_arithmetic(300, num_steps=3, operand_max=9, result_max=20, seed=0)
    tokenizer = build_tokenizer((t for r in records for t in (r.question, *r.steps, "### " + r.answer)), 300)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256, bos_token_id=eos, eos_token_id=eos
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def as_run_py_builds_it(base: Path, coconut: bool):
    """Model and tokenizer as the official run.py builds them from `model_id`, then 'trained' (its
    weights moved) so that a loader that skipped the checkpoint would answer differently."""
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.add_tokens("<|start-latent|>")
    tokenizer.add_tokens("<|end-latent|>")
    tokenizer.add_tokens("<|latent|>")
    if coconut:  # CoT / No-CoT runs skip this: their embeddings keep the base vocabulary
        model.resize_token_embeddings(len(tokenizer))
        target = tokenizer.convert_tokens_to_ids("<<")
        with torch.no_grad():
            for name in ("<|latent|>", "<|start-latent|>", "<|end-latent|>"):
                token = tokenizer.convert_tokens_to_ids(name)
                model.get_input_embeddings().weight[token] = model.get_input_embeddings().weight[target]
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval(), tokenizer


def eval_cfg(output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="eval",
            overrides=[f"paths.output_dir={output_dir}", "legibility.ablations=[]", *DATA, *overrides],
        )


def samples(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


@torch.no_grad()
def official_generate(model, prompt: list[int], latent_id: int, eos: int, feedback: bool = True) -> list[int]:
    """The official semantics, one question, no cache: each <|latent|> input embedding becomes the
    last hidden state of the position before it, computed over everything before; then greedy
    decoding over the whole sequence. (`<|latent|>` is never written, as coconut-eval rules.)
    `feedback=False`: the <|latent|> token's own embedding instead (what the test must tell apart)."""
    embeds = model.get_input_embeddings()(torch.tensor([prompt])).clone()  # (1, T, D)
    for position in [i for i, t in enumerate(prompt) if t == latent_id and feedback]:
        hidden = model(inputs_embeds=embeds[:, :position], output_hidden_states=True).hidden_states[-1]
        embeds[0, position] = hidden[0, -1]
    tokens = []
    for _ in range(MAX_NEW):
        logits = model(inputs_embeds=embeds).logits[0, -1]
        logits[latent_id] = float("-inf")
        token = int(logits.argmax())
        if token == eos:
            break
        tokens.append(token)
        embeds = torch.cat([embeds, model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return tokens


@torch.no_grad()
def hf_generate(model, prompt: list[int], eos: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=eos
    )[0, len(prompt) :].tolist()
    return out[: out.index(eos)] if eos in out else out


def test_an_official_coconut_checkpoint_answers_as_the_official_semantics(base, tmp_path):
    model, tokenizer = as_run_py_builds_it(base, coconut=True)
    path = tmp_path / "checkpoint_6"
    torch.save(OfficialCoconut(model).state_dict(), path)  # run.py: torch.save(parallel_model.state_dict(), ...)
    assert any(k.startswith("base_causallm.") for k in torch.load(path)) and "embedding.weight" in torch.load(path)
    report = run_evaluation(
        eval_cfg(tmp_path / "eval", f"ckpt_path={path}", f"model.pretrained={base}", "n_thoughts=2")
    )
    assert report["checkpoint_kind"] == "official" and report["method"] == "coconut"
    assert report["tokens"]["thoughts_mean"] == 2 and report["n"] == 6
    latent = tokenizer.convert_tokens_to_ids("<|latent|>")
    start, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|start-latent|>", "<|end-latent|>"))
    differs = 0
    for row in samples(tmp_path / "eval"):
        prompt = tokenizer(row["question"] + "\n")["input_ids"] + [start, latent, latent, end]
        expected = official_generate(model, prompt, latent, tokenizer.eos_token_id)
        assert row["generated"] == tokenizer.decode(expected, skip_special_tokens=True)
        without = official_generate(model, prompt, latent, tokenizer.eos_token_id, feedback=False)
        differs += row["generated"] != tokenizer.decode(without, skip_special_tokens=True)
    assert differs > 0  # the comparison tells fed-back thoughts from plain tokens
    # the thoughts of a stage: stage 2 at c_thought 2 capped at max_latent_stage 1 -> 2 thoughts
    staged = run_evaluation(
        eval_cfg(
            tmp_path / "staged",
            f"ckpt_path={path}",
            f"model.pretrained={base}",
            "stage=2",
            "curriculum.c_thought=2",
            "curriculum.max_latent_stage=1",
        )
    )
    assert staged["tokens"]["thoughts_mean"] == 2 and staged["accuracy"] == report["accuracy"]
    generated = [r["generated"] for r in samples(tmp_path / "eval")]
    assert [r["generated"] for r in samples(tmp_path / "staged")] == generated
    # a save that kept DDP's `module.` prefix loads the same
    ddp = tmp_path / "checkpoint_ddp"
    torch.save({"module." + k: v for k, v in torch.load(path).items()}, ddp)
    again = run_evaluation(eval_cfg(tmp_path / "ddp", f"ckpt_path={ddp}", f"model.pretrained={base}", "n_thoughts=2"))
    assert [r["generated"] for r in samples(tmp_path / "ddp")] == generated
    assert again["accuracy"] == report["accuracy"]
    # without a thought count: one message saying what to give
    with pytest.raises(ConfigError, match="n_thoughts=<count>"):
        run_evaluation(eval_cfg(tmp_path / "none", f"ckpt_path={path}", f"model.pretrained={base}"))


def test_an_official_cot_checkpoint_and_a_hugging_face_folder_answer_as_plain_generation(base, tmp_path):
    model, tokenizer = as_run_py_builds_it(base, coconut=False)
    path = tmp_path / "checkpoint_3"
    torch.save(model.state_dict(), path)  # the CoT run's bare model, unprefixed, base vocabulary
    cot = run_evaluation(eval_cfg(tmp_path / "cot", f"ckpt_path={path}", f"model.pretrained={base}"))
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    hf = run_evaluation(eval_cfg(tmp_path / "hf_eval", f"ckpt_path=hf:{folder}"))
    assert cot["checkpoint_kind"] == "official" and hf["checkpoint_kind"] == "hf"
    assert cot["method"] == hf["method"] == "cot" and cot["tokens"]["thoughts_mean"] == 0
    eos, untrained, differs = tokenizer.eos_token_id, AutoModelForCausalLM.from_pretrained(base).eval(), 0
    for run in ("cot", "hf_eval"):
        for row in samples(tmp_path / run):
            prompt = tokenizer(row["question"] + "\n")["input_ids"]
            assert row["generated"] == tokenizer.decode(hf_generate(model, prompt, eos), skip_special_tokens=True), run
            differs += row["generated"] != tokenizer.decode(
                hf_generate(untrained, prompt, eos), skip_special_tokens=True
            )
    assert differs > 0  # the saved weights were loaded, not the base model's
    no_cot = run_evaluation(eval_cfg(tmp_path / "no_cot", f"ckpt_path=hf:{folder}", "method=no_cot"))
    assert no_cot["method"] == "no_cot" and no_cot["accuracy"] == hf["accuracy"]  # same prompts here


def test_the_special_tokens_of_a_hugging_face_tokenizer_are_kept(base, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": list(reversed(SPECIAL_TOKENS))})  # other ids
    model.resize_token_embeddings(len(tokenizer))
    folder = tmp_path / "with_tokens"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    report = run_evaluation(eval_cfg(tmp_path / "eval", f"ckpt_path=hf:{folder}", "method=coconut", "n_thoughts=1"))
    assert report["tokens"]["thoughts_mean"] == 1
    from coconut.commands.load import load_any  # noqa: PLC0415

    loaded = load_any(f"hf:{folder}", eval_cfg(tmp_path / "x", "method=coconut", "n_thoughts=1"))
    assert loaded.model.latent_token_id == ids["<|latent|>"] == len(tokenizer) - 3
    assert {t: loaded.tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS} == ids
    assert loaded.model.lm.get_input_embeddings().weight.shape[0] == len(tokenizer)  # nothing added


def test_a_checkpoint_of_the_wrong_kind_gets_one_message(base, tmp_path):
    def refused(path: str, *overrides: str) -> str:
        with pytest.raises((CheckpointError, ConfigError)) as error:
            run_evaluation(eval_cfg(tmp_path / "out", f"ckpt_path={path}", *overrides))
        return str(error.value)

    notes = tmp_path / "notes.json"
    notes.write_text('{"not": "a checkpoint"}')
    message = refused(str(notes))
    assert "found a file torch.load cannot read" in message and "expected a .ckpt written by coconut-train" in message
    message = refused(str(base))
    assert "found a Hugging Face model folder" in message and f"ckpt_path=hf:{base}" in message
    model, _ = as_run_py_builds_it(base, coconut=True)
    official = tmp_path / "checkpoint_1"
    torch.save(OfficialCoconut(model).state_dict(), official)
    message = refused(str(official), "n_thoughts=2")
    assert "found a state dict of the official Coconut wrapper" in message and "model.pretrained=" in message
    other = tmp_path / "other_base"  # another architecture size: the shapes do not fit
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=16, n_layer=1, n_head=2)).save_pretrained(other)
    AutoTokenizer.from_pretrained(base).save_pretrained(other)
    message = refused(str(official), f"model.pretrained={other}", "n_thoughts=2")
    assert "do not fit model.pretrained" in message and "expected" in message
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "dict.pt")
    message = refused(str(tmp_path / "dict.pt"))
    assert "found a dict with keys epoch, weights" in message
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    message = refused(f"hf:{empty}")
    assert "found a folder without config.json" in message and "expected a Hugging Face save_pretrained" in message
    message = refused(f"hf:{official}")
    assert "found a file" in message
    # on the command line: the one message, exit code 2, no traceback
    cli = subprocess.run(
        [sys.executable, "-m", "coconut.cli.evaluate", f"ckpt_path={official}", f"hydra.run.dir={tmp_path / 'cli'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "found a state dict of the official Coconut wrapper" in cli.stdout + cli.stderr


def test_pause_is_added_after_the_official_tokens(base):
    """The official three keep run.py's ids; <pause> comes after them, so the saved rows line up."""
    _, official = as_run_py_builds_it(base, coconut=True)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    for token in ("<|start-latent|>", "<|end-latent|>", "<|latent|>"):
        tokenizer.add_tokens(token)
    add_special_tokens(tokenizer)
    for token in ("<|start-latent|>", "<|end-latent|>", "<|latent|>"):
        assert tokenizer.convert_tokens_to_ids(token) == official.convert_tokens_to_ids(token)
    assert tokenizer.convert_tokens_to_ids("<pause>") == len(official)


def test_a_bare_state_dict_with_a_thought_count_is_refused_rather_than_guessed(base, tmp_path):
    """A Coconut wrapper's state dict with `base_causallm.` stripped looks like a CoT run's bare model:
    with n_thoughts= and no method= the evaluation would guess CoT and pad its prompts with untrained
    <pause> rows. It asks for the method instead; with method=coconut it answers as the official code."""
    model, tokenizer = as_run_py_builds_it(base, coconut=True)
    state = OfficialCoconut(model).state_dict()
    stripped = {k.removeprefix("base_causallm."): v for k, v in state.items() if k.startswith("base_causallm.")}
    path = tmp_path / "checkpoint_stripped"
    torch.save(stripped, path)
    args = [f"ckpt_path={path}", f"model.pretrained={base}", "n_thoughts=2", *DATA, "legibility.ablations=[]"]
    done = subprocess.run(
        [sys.executable, "-m", "coconut.cli.evaluate", *args, f"hydra.run.dir={tmp_path / 'guessed'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if f"ckpt_path={path}" in line and "n_thoughts=2" in line]
    assert "cannot say which method trained it" in line and "Fix: method=coconut" in line
    assert not (tmp_path / "guessed" / "report.json").exists()
    report = run_evaluation(eval_cfg(tmp_path / "coconut", *args[:3], "method=coconut"))
    assert report["method"] == "coconut" and report["tokens"]["thoughts_mean"] == 2
