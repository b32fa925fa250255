"""SIM-CoT step supervision (coconut/core/step_supervision.py): which step each group of thoughts
writes, the loss and its gradient against a plain step-by-step computation of their equations,
training with it off equal to training without it, and end to end (coconut-train
step_supervision.weight=1.0 with method=coconut and method=codi, then coconut-eval and
coconut-export on the checkpoint)."""

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import ROOT, eval_cfg, scalars, tiny_cfg, tiny_lm

from coconut.commands.build import build_curriculum, build_method, build_training
from coconut.commands.config import validate_config
from coconut.commands.evaluate import run_evaluation
from coconut.commands.export import export
from coconut.commands.train import train
from coconut.core.codi import codi_loss
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.step_supervision import StepDecoder, step_loss
from coconut.core.thought_projection import MLPProjection, ProjectionConfig
from coconut.core.tokens import SpecialIds
from coconut.data.dataset import StageDataset
from coconut.data.sequences import TokenizedSample, step_texts
from coconut.training.datamodule import _collate_sequences

START, END, LATENT, PAUSE, EOS, SEP = 60, 61, 62, 63, 0, 3
IDS = SpecialIds(start_latent=START, end_latent=END, latent=LATENT, pause=PAUSE, eos=EOS, pad=EOS)


def sample(question, steps, answer):
    """Steps as the records write them (each + "\n" = SEP) and alone (the decoder's targets)."""
    return TokenizedSample(
        question,
        [[*s, SEP] for s in steps],
        [*answer, EOS],
        answer_prefix=2,
        step_ids=tuple(map(tuple, steps)),
        step_separator=(SEP,),
    )


# Questions of different lengths (left padding), steps of different lengths and counts (right
# padding; a merged last group; a record with fewer steps than groups).
SAMPLES = [
    sample([5, 6, 7], [[10, 11], [12, 13, 14], [15]], [20, 21, 30]),
    sample([8, 9, 5, 6, 7], [[16, 17], [18]], [20, 21, 31, 32]),
    sample([9, 8], [[19], [22, 23], [24, 25], [26]], [20, 21, 33]),
    sample([7, 5], [[27]], [20, 21, 34]),
]
CURRICULUM = Curriculum(max_latent_stage=2, c_thought=2, pad_latent_to_max=True)
COCONUT = Method("coconut")
CODI = Method("codi", stage="final", num_latent=1, self_distillation=True)


def batch_of(method: Method, stage: int, samples=SAMPLES) -> dict:
    data = StageDataset(samples, stage=stage, method=method, curriculum=CURRICULUM, ids=IDS, step_texts=True)
    items = [data[i] for i in range(len(data))]
    return _collate_sequences(items, IDS.latent, IDS.pad, teacher=method.self_distillation)


def test_each_group_of_thoughts_writes_the_step_it_replaced():
    # COCONUT, final stage, max_latent_stage 2: step 0, then every later step joined by "\n"; a
    # record with one step writes its answer from the second group (their pseudo thought).
    final = [step_texts(s, COCONUT, CURRICULUM, 4) for s in SAMPLES]
    assert final == [
        ((10, 11, EOS), (12, 13, 14, SEP, 15, EOS)),
        ((16, 17, EOS), (18, EOS)),
        ((19, EOS), (22, 23, SEP, 24, 25, SEP, 26, EOS)),
        ((27, EOS), (20, 21, 34, EOS)),
    ]
    assert step_texts(SAMPLES[2], COCONUT, CURRICULUM, 2) == ((19, EOS),)  # stage 1: one group of c = 2
    assert step_texts(SAMPLES[2], COCONUT, CURRICULUM, 0) == ()  # stage 0: no thoughts
    # CODI, num_latent 1: two groups of one thought over the teacher's steps (the last dropped);
    # groups past them have no target.
    assert [step_texts(s, CODI, CURRICULUM, 1) for s in SAMPLES] == [
        ((10, 11, EOS), (12, 13, 14, EOS)),
        ((16, 17, EOS), ()),
        ((19, EOS), (22, 23, SEP, 24, 25, EOS)),
        ((), ()),
    ]
    batch = batch_of(COCONUT, 3)
    assert batch["step_texts"].shape == (4, 2, 8) and batch["step_texts"][1, 1].tolist() == [18, EOS] + [-1] * 6


def reference(model, decoder, method: Method, samples, stage: int, loss_level: str) -> torch.Tensor:
    """Their equations (Coconut/coconut.py:716-785, CODI/src/model.py:463-736), one record and one
    group at a time, no padding, no cache: each thought the projected last-layer state over
    everything before it; the decoder reads [the group's thoughts ; E(step)] from position 1
    (COCONUT) or 0 (CODI) and is scored on the step's tokens and eos."""
    lm, embed = model.lm, model.lm.get_input_embeddings()
    codi = method.num_latent is not None
    c, first = (1, 0) if codi else (CURRICULUM.c_thought, 1)
    sums, rows, tokens = {}, {}, {}
    for s in samples:
        n = method.num_latent if codi else CURRICULUM.plan(stage, len(s.steps)).thoughts
        targets = step_texts(s, method, CURRICULUM, n)
        embeds, thoughts = embed(torch.tensor(s.question + [START])), []
        for _ in range(n + (1 if codi else 0)):  # CODI: the last thought's own projection too
            last = lm(inputs_embeds=embeds[None], output_hidden_states=True).hidden_states[-1][0, -1]
            thoughts.append(model.thought_projection(last))
            embeds = torch.cat([embeds, thoughts[-1][None]])
        for j, target in enumerate(targets):
            if not target:
                continue
            x = torch.cat([torch.stack(thoughts[j * c : (j + 1) * c]), embed(torch.tensor(target))])
            positions = torch.arange(first, first + len(x))[None]
            logits = decoder.lm(inputs_embeds=x[None], position_ids=positions).logits[0]
            nll = -logits[c - 1 : -1].log_softmax(-1)[range(len(target)), list(target)].sum()
            sums[j] = sums.get(j, 0.0) + nll
            rows[j], tokens[j] = rows.get(j, 0) + 1, tokens.get(j, 0) + len(target)
    norm = rows if loss_level == "sample" else tokens
    return sum(sums[j] / norm[j] for j in sums) / len(sums)


def models(codi: bool):
    lm = tiny_lm("gpt2").double().eval()  # eval: no dropout, so a plain computation can match
    projection = MLPProjection(32, ProjectionConfig("mlp", prj_dim=48), dtype=torch.float64) if codi else None
    model = ContinuousThoughtLM(lm, LATENT, projection)
    decoder = StepDecoder(tiny_lm("gpt2", seed=1).double().eval())  # not the LM's weights: which one reads shows
    return model, decoder


def grads(modules, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    for m in modules:
        m.zero_grad()
    loss.backward()
    named = ((f"{i}.{k}", p) for i, m in enumerate(modules) for k, p in m.named_parameters())
    return {k: p.grad.clone() for k, p in named if p.grad is not None}


@pytest.mark.parametrize(
    "method, stage, loss_level",
    [(COCONUT, 3, "sample"), (COCONUT, 1, "sample"), (COCONUT, 3, "token"), (CODI, 0, "token"), (CODI, 0, "sample")],
)
def test_the_loss_and_its_gradient_equal_the_equations_step_by_step(method, stage, loss_level):
    codi = method.num_latent is not None
    model, decoder = models(codi)
    batch = batch_of(method, stage)
    if codi:  # the student's states as CODI's loss leaves them for the training step
        hidden = codi_loss(model, batch, method).hidden
    else:
        hidden = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).hidden_states
    term = step_loss(
        model, decoder, batch["input_ids"], hidden, batch["step_texts"], 1 if codi else CURRICULUM.c_thought,
        extra_thought=codi, loss_level=loss_level, first_position=0 if codi else 1,
    )  # fmt: skip
    ours = grads((model, decoder), term.loss)
    expected = reference(model, decoder, method, SAMPLES, stage, loss_level)
    torch.testing.assert_close(term.loss.double(), expected)
    theirs = grads((model, decoder), expected)
    assert ours.keys() == theirs.keys()
    for name, grad in theirs.items():
        torch.testing.assert_close(ours[name], grad, msg=name)
    # The gradient reaches the reasoning model through the thoughts (not detached), beyond its
    # embedding table (which also embeds the step's tokens).
    assert ours["0.lm.transformer.h.0.attn.c_attn.weight"].abs().sum() > 0
    assert ours["1.lm.transformer.h.0.attn.c_attn.weight"].abs().sum() > 0  # and the decoder learns


def test_stage_zero_adds_nothing():
    model, decoder = models(False)
    batch = batch_of(COCONUT, 0)
    hidden = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).hidden_states
    term = step_loss(model, decoder, batch["input_ids"], hidden, batch["step_texts"], 2)
    assert term.groups == 0 and float(term.loss) == 0.0


def test_step_supervision_needs_continuous_thoughts(tmp_path):
    cfg = tiny_cfg(tmp_path, "method=cot", "step_supervision.weight=1.0")
    with pytest.raises(ConfigError, match="decodes continuous thoughts"):
        validate_config(cfg)


# -- off: the training step of before ---------------------------------------------------------------
BASE = "b553af1"  # the branch's base: the training step before step supervision existed


def old_lit_module(tmp_path: Path):
    """lit_module.py as it was at BASE, imported beside today's; None where git or the commit is absent."""
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASE}:coconut/training/lit_module.py"], capture_output=True, text=True
    )
    if shown.returncode:
        return None
    path = tmp_path / "old_lit_module.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("old_lit_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["coconut", "codi"])
def test_off_is_the_training_step_of_before(method, tmp_path):
    old = old_lit_module(tmp_path)
    if old is None:
        pytest.skip(f"the base commit {BASE} is not in this checkout's history")
    cfg = tiny_cfg(tmp_path, f"method={method}", "curriculum.start_stage=1")  # stage 1: thoughts in the batch
    config = validate_config(cfg)
    built = build_training(cfg, build_method(cfg), build_curriculum(cfg))
    assert not hasattr(built.module, "step_decoder") and built.module.step_supervision is None
    datamodule = built.datamodule
    datamodule.trainer = None
    batch = next(iter(datamodule.train_dataloader()))
    assert "step_texts" not in batch and (batch["input_ids"] == built.ids.latent).any()
    before = old.CoconutLitModule(
        built.model, built.tokenizer, optimizer=built.module.optimizer_factory, codi=built.method,
        config=built.module.hparams["config"],
    )  # fmt: skip
    assert [n for n, _ in before.named_parameters()] == [n for n, _ in built.module.named_parameters()]
    for module in (before, built.module):
        module.log = lambda *a, **k: None
    built.model.eval()  # the same (no) dropout mask in both
    new_loss = built.module.training_step(batch, 0)
    new = grads((built.model,), new_loss)
    old_loss = before.training_step(batch, 0)
    assert torch.equal(new_loss, old_loss)
    for name, grad in grads((built.model,), old_loss).items():
        assert torch.equal(new[name], grad), name
    assert config.step_supervision.weight == 0.0


# -- end to end ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["coconut", "codi"])
def supervised_run(request, tmp_path_factory) -> tuple[str, Path]:
    run = tmp_path_factory.mktemp(request.param)
    train(tiny_cfg(run, f"method={request.param}", "step_supervision.weight=1.0", "trainer.max_epochs=2", "test=false"))
    return request.param, run


def test_train_logs_the_step_loss_and_checkpoints_the_decoder(supervised_run):
    method, run = supervised_run
    logged = scalars(run)
    for tag in ("train/loss", "train/step_loss", "train/step_groups", "val/acc"):
        assert tag in logged, f"{tag} missing; have {sorted(logged)}"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    decoder = [k for k in saved["state_dict"] if k.startswith("step_decoder.")]
    assert decoder and all(not k.startswith("model.step_decoder") for k in saved["state_dict"])


def test_eval_and_export_read_the_checkpoint_without_the_decoder(supervised_run, tmp_path):
    method, run = supervised_run
    ckpt = run / "checkpoints" / "last.ckpt"
    data = ["data=arithmetic", "data.sizes.train=64", "data.sizes.val=16", "data.sizes.test=16"]
    data += ["data.max_new_tokens=24", "legibility.measure=false"]
    original = run_evaluation(eval_cfg(tmp_path / "original", f"ckpt_path={ckpt}", *data))
    assert original["method"] == method
    out = tmp_path / "exported"
    export(eval_cfg(tmp_path / "log", f"ckpt_path={ckpt}", f"out={out}", config="export"))
    exported = json.dumps(sorted(p.name for p in out.iterdir()))
    weights = torch.load(ckpt, weights_only=False)["state_dict"]
    n_model = sum(v.numel() for k, v in weights.items() if k.startswith("model."))
    n_saved = sum(p.stat().st_size for p in out.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    assert n_saved < 1.5 * 4 * n_model, f"the export holds more than the model: {exported}"
    back = run_evaluation(eval_cfg(tmp_path / "back", f"ckpt_path=hf:{out}", *data))
    assert back["tokens"] == original["tokens"] and back["accuracy"] == original["accuracy"]


# -- against their code (InternLM/SIM-CoT), where a copy of it is at hand ---------------------------------
SIMCOT_MIRROR = Path("/work/.mirror/InternLM+SIM-CoT/repo")  # a bare clone, as the `fetch` tool leaves it
# Their CODI + SIM-CoT code finds a GSM8K-Aug step by GPT-2's own ids: "<<" (16791, " <<" 9959) to
# ">>" (4211), so this check needs GPT-2's vocabulary size (a tiny model of it).
OPEN, CLOSE, GPT2_VOCAB, GPT2_EOS = 16791, 4211, 50257, 50256


def simcot_codi_source(tmp_path: Path) -> Path | None:
    """CODI/src/model.py of InternLM/SIM-CoT from the bare mirror; None where it is absent."""
    if not SIMCOT_MIRROR.is_dir():
        return None
    shown = subprocess.run(
        ["git", f"--git-dir={SIMCOT_MIRROR}", "show", "HEAD:CODI/src/model.py"], capture_output=True, text=True
    )
    if shown.returncode:
        return None
    path = tmp_path / "simcot_codi_model.py"
    path.write_text(shown.stdout)
    return path


def their_codi(source: Path, lm, decoder, method: Method, monkeypatch):
    """Their CODI module with SIM-CoT's decoder (use_decoder True, no decoder_path: a second
    from_pretrained of the same model), built by their own __init__: `peft` is stubbed,
    from_pretrained hands over `lm`, then `decoder`."""
    import transformers.training_args  # noqa: F401, PLC0415 (asks for peft before the stub is in)

    peft = types.ModuleType("peft")
    peft.get_peft_model = peft.PeftModel = peft.PeftConfig = None
    monkeypatch.setitem(sys.modules, "peft", peft)
    spec = importlib.util.spec_from_file_location("simcot_codi_model", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded = iter([lm, decoder])
    monkeypatch.setattr(
        module, "AutoModelForCausalLM", types.SimpleNamespace(from_pretrained=lambda *a, **k: next(loaded))
    )
    tokenizer = types.SimpleNamespace(pad_token_id=GPT2_VOCAB, eos_token_id=GPT2_EOS)  # their [PAD]: the first new id
    monkeypatch.setattr(module, "AutoTokenizer", types.SimpleNamespace(from_pretrained=lambda *a, **k: tokenizer))
    model_args = types.SimpleNamespace(
        model_name_or_path="gpt2", full_precision=True, train=True, use_decoder=True, decoder_path=None
    )
    training_args = types.SimpleNamespace(
        bf16=False, num_latent=method.num_latent, use_lora=False, use_prj=True, prj_dim=48, prj_dropout=0.0,
        prj_no_ln=False, print_loss=False, ref_loss_factor=method.ref_loss_factor,
        distill_loss_div_std=method.distill_loss_div_std, distill_loss_type=method.distill_loss_type,
        distill_loss_factor=method.distill_loss_factor, fix_attn_mask=False, restore_from="",
        print_ref_model_stats=False, explain_loss_factor=0.5,
    )  # fmt: skip
    return module.CODI(model_args, training_args, lora_config=None)


def test_codi_with_step_supervision_equals_their_code(tmp_path, monkeypatch):
    """Their CODI + SIM-CoT (CODI/src/model.py, use_decoder True) and ours on the same tiny GPT-2,
    decoder and batch: the step term, the total loss and every gradient (reasoning model, thought
    projection, decoder). Their COCONUT + SIM-CoT (Coconut/coconut.py) cannot run here: it unpacks
    the returned cache as (key, value) pairs (`for k, v in kv_cache`, coconut.py:361-367), which
    transformers 5's DynamicCache no longer yields ("too many values to unpack"); the step-by-step
    test above covers that variant."""
    from test_codi import official_batch  # noqa: PLC0415 (their collator's batch, as the CODI checks build it)

    source = simcot_codi_source(tmp_path)
    if source is None:
        pytest.skip(f"InternLM/SIM-CoT is not here: fetch it to {SIMCOT_MIRROR}")
    lm = tiny_lm("gpt2", vocab_size=GPT2_VOCAB).double().eval()
    decoder = tiny_lm("gpt2", vocab_size=GPT2_VOCAB, seed=1).double().eval()  # their fresh copy: GPT-2's vocabulary
    method = Method("codi", stage="final", num_latent=2, self_distillation=True)
    codi = their_codi(source, lm, decoder, method, monkeypatch)
    codi.prj.double()
    ids = SpecialIds(codi.bot_id, codi.eot_id, LATENT, PAUSE, GPT2_EOS, GPT2_EOS)

    # Steps written as GSM8K-Aug's <<...>>, joined by nothing (as their merge joins them); the
    # teacher drops the last; row 0 has more steps than groups (merged), row 1 fewer (no target).
    def record(steps, answer):
        return TokenizedSample(
            [5, 6, 7], [[*s, SEP] for s in steps], [20, 21, *answer, GPT2_EOS], answer_prefix=2,
            step_ids=tuple(map(tuple, steps)), step_separator=(),
        )  # fmt: skip

    samples = [
        record(
            [[OPEN, 10, 11, CLOSE], [OPEN, 12, CLOSE], [OPEN, 13, 14, CLOSE], [OPEN, 15, CLOSE], [OPEN, 9, CLOSE]], [30]
        ),
        record([[OPEN, 16, 17, CLOSE], [OPEN, 18, CLOSE]], [31, 32]),
    ]
    theirs = codi(**official_batch(samples, codi, ids))
    their_grads = grads((codi,), theirs["loss"])
    projection = MLPProjection(32, ProjectionConfig("mlp", prj_dim=48), dtype=torch.float64)
    projection.load_state_dict(codi.prj.state_dict())
    model = ContinuousThoughtLM(lm, LATENT, projection)
    data = StageDataset(samples, stage=0, method=method, curriculum=CURRICULUM, ids=ids, step_texts=True)
    batch = _collate_sequences([data[i] for i in range(len(data))], ids.latent, ids.pad, teacher=True)
    terms = codi_loss(model, batch, method)
    term = step_loss(
        model, StepDecoder(decoder), batch["input_ids"], terms.hidden, batch["step_texts"], 1,
        extra_thought=True, loss_level="token", first_position=0,
    )  # fmt: skip
    assert term.groups == 3  # the third group: only row 0 has a target
    torch.testing.assert_close(0.5 * term.loss.double(), theirs["explain_loss"])
    total = terms.loss + 0.5 * term.loss
    torch.testing.assert_close(total, theirs["loss"])
    ours = grads((model, StepDecoder(decoder)), total)
    renamed = {
        k.replace("0.codi.", "0.lm.", 1)
        .replace("0.prj.", "0.thought_projection.", 1)
        .replace("0.decoder.", "1.lm.", 1): g
        for k, g in their_grads.items()
    }
    assert renamed.keys() == ours.keys()
    for name, grad in renamed.items():
        torch.testing.assert_close(ours[name], grad, msg=name)
