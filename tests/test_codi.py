"""CODI (coconut/core/codi.py): its loss against a plain step-by-step computation of the official
code's equations, against the official code itself where a copy of it is at hand, and end to end
(coconut-train method=codi, then coconut-eval and coconut-export on its checkpoint)."""

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import eval_cfg, scalars, tiny_cfg, tiny_lm
from torch import nn

from coconut.commands.evaluate import run_evaluation
from coconut.commands.export import export
from coconut.commands.train import train
from coconut.core.codi import codi_loss
from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import MLPProjection, ProjectionConfig
from coconut.core.tokens import SpecialIds
from coconut.data.dataset import StageDataset
from coconut.data.sequences import TokenizedSample
from coconut.training.datamodule import _collate_sequences

START, END, LATENT, PAUSE, EOS = 60, 61, 62, 63, 0
IDS = SpecialIds(start_latent=START, end_latent=END, latent=LATENT, pause=PAUSE, eos=EOS, pad=EOS)
METHOD = Method(
    "codi", stage="final", num_latent=3, self_distillation=True, distill_loss_factor=2.0, ref_loss_factor=0.5
)
# Questions of different lengths (left padding), chains and answers of different lengths (right
# padding); each answer is a 2-token prefix ("The answer is:"), the value, eos.
SAMPLES = [
    TokenizedSample([5, 6, 7], [[10, 11], [12, 13, 14], [15]], [20, 21, 30, EOS], answer_prefix=2),
    TokenizedSample([8, 9, 5, 6, 7], [[16, 17], [18]], [20, 21, 31, 32, EOS], answer_prefix=2),
    TokenizedSample([9, 8], [[19], [22, 23], [24, 25], [26]], [20, 21, 33, EOS], answer_prefix=2),
]


def codi_batch(samples=SAMPLES, method=METHOD, ids=IDS) -> dict:
    data = StageDataset(samples, stage=0, method=method, curriculum=Curriculum(), ids=ids)
    return _collate_sequences([data[i] for i in range(len(data))], ids.latent, ids.pad, teacher=True)


def codi_model(seed: int = 0, dtype=torch.float64) -> ContinuousThoughtLM:
    lm = tiny_lm("gpt2", seed=seed).to(dtype).eval()  # eval: no dropout, so a plain computation can match
    projection = MLPProjection(lm.config.n_embd, ProjectionConfig("mlp", prj_dim=48), dtype=dtype)
    return ContinuousThoughtLM(lm, LATENT, projection)


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, 0.5 * x**2, x.abs() - 0.5)


def reference_loss(model: ContinuousThoughtLM, samples=SAMPLES, method=METHOD, detach_teacher: bool = True):
    """The official code's equations (zhenyi4/codi src/model.py:262-400), one record at a time, no
    padding, no cache: each thought is the projected last-layer state over everything before it."""
    lm, embed = model.lm, model.lm.get_input_embeddings()
    student_nll, student_tokens, teacher_nll, teacher_tokens = 0.0, 0, 0.0, 0
    s_layers, t_layers = [], []
    for sample in samples:
        # student: question, bot, thoughts, eot, answer
        prompt = torch.tensor(sample.question + [START])
        embeds = embed(prompt)
        for _ in range(method.num_latent):
            last = lm(inputs_embeds=embeds[None], output_hidden_states=True).hidden_states[-1][0, -1]
            embeds = torch.cat([embeds, model.thought_projection(last)[None]])
        answer = [END, *sample.answer]
        embeds = torch.cat([embeds, embed(torch.tensor(answer))])
        out = lm(inputs_embeds=embeds[None], output_hidden_states=True)
        start = len(prompt) + method.num_latent  # the eot column
        logits = out.logits[0, start:-1]  # eot ... predicts the answer
        student_nll = student_nll - logits.log_softmax(-1)[range(len(answer) - 1), answer[1:]].sum()
        student_tokens += len(answer) - 1
        at = start + sample.answer_prefix  # eot + the prefix: its last token
        s_layers.append([h[0, at] for h in out.hidden_states])
        # teacher: question, the chain but its last step, answer; the question unlabelled
        chain = [t for step in sample.steps[:-1] for t in step]
        ids = sample.question + chain + sample.answer
        out = lm(input_ids=torch.tensor(ids)[None], output_hidden_states=True)
        first = len(sample.question)  # the first labelled token
        logits = out.logits[0, first - 1 : -1]
        teacher_nll = teacher_nll - logits.log_softmax(-1)[range(len(ids) - first), ids[first:]].sum()
        teacher_tokens += len(ids) - first
        at = len(sample.question) + len(chain) + sample.answer_prefix - 1
        t_layers.append([h[0, at] for h in out.hidden_states])
    layers = len(s_layers[0])
    distill = 0.0
    for layer in range(layers):
        s = torch.stack([row[layer] for row in s_layers])  # (B, D)
        t = torch.stack([row[layer] for row in t_layers])
        t = t.detach() if detach_teacher else t
        n = t.numel()
        std = (((t - t.mean()) ** 2).sum() / (n - 1)).sqrt()
        distill = distill + smooth_l1(s - t).mean() / std
    distill = distill / layers
    student, teacher = student_nll / student_tokens, teacher_nll / teacher_tokens
    total = student + method.distill_loss_factor * distill + method.ref_loss_factor * teacher
    return total, student, teacher, distill


def grads(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_the_loss_and_its_gradient_equal_the_equations_step_by_step():
    model = codi_model()
    batch = codi_batch()
    assert batch["input_ids"][:, batch["distill_column"]].diag().tolist() == [21, 21, 21]  # the prefix's last token
    assert batch["teacher_input_ids"][:, batch["teacher_distill_column"]].diag().tolist() == [21, 21, 21]
    ours = codi_loss(model, batch, METHOD)
    total, student, teacher, distill = reference_loss(model)
    for got, want in ((ours.student, student), (ours.teacher, teacher), (ours.distill, distill), (ours.loss, total)):
        torch.testing.assert_close(got, want)
    assert ours.distill > 0 and ours.teacher > 0
    got, want = grads(model, ours.loss), grads(model, reference_loss(model)[0])
    assert got.keys() == want.keys() and any(k.startswith("thought_projection.") for k in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_no_gradient_flows_through_the_teachers_side_of_the_distillation():
    model = codi_model(seed=1)
    batch = codi_batch()
    got = grads(model, codi_loss(model, batch, METHOD).distill)
    detached = grads(model, reference_loss(model)[3])
    through_teacher = grads(model, reference_loss(model, detach_teacher=False)[3])
    for name in detached:
        torch.testing.assert_close(got[name], detached[name], msg=name)
    # the test can tell: letting the gradient through the teacher changes it
    assert any(not torch.allclose(detached[n], through_teacher[n]) for n in detached)


def test_sequences_and_prompts_of_codi():
    data = StageDataset(SAMPLES, stage=0, method=METHOD, curriculum=Curriculum(), ids=IDS)
    item = data[0]
    assert item["input_ids"] == [5, 6, 7, START, LATENT, LATENT, LATENT, END, 20, 21, 30, EOS]
    assert item["labels"] == [-100] * 8 + [20, 21, 30, EOS]
    assert item["teacher_input_ids"] == [5, 6, 7, 10, 11, 12, 13, 14, 20, 21, 30, EOS]  # the last step dropped
    assert item["teacher_labels"] == [-100] * 3 + item["teacher_input_ids"][3:]
    assert (item["distill_index"], item["teacher_distill_index"]) == (9, 9)
    with_last = Method(**{**vars(METHOD), "include_last_cot": True})
    assert StageDataset(SAMPLES, stage=0, method=with_last, curriculum=Curriculum(), ids=IDS)[0][
        "teacher_input_ids"
    ] == [5, 6, 7, 10, 11, 12, 13, 14, 15, 20, 21, 30, EOS]
    from coconut.data.sequences import build_prompt  # noqa: PLC0415

    # whatever the stage and the curriculum: num_latent thoughts
    for stage in (0, 1, 5):
        assert build_prompt(SAMPLES[2], stage, METHOD, Curriculum(max_latent_stage=1), IDS) == [
            9, 8, START, LATENT, LATENT, LATENT, END
        ]  # fmt: skip


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"stage": "curriculum"}, "self_distillation"),
        ({"num_latent": None}, "self_distillation"),
        ({"num_latent": 0}, "num_latent"),
        ({"distill_loss_type": "kl"}, "distill_loss_type"),
        ({"ref_loss_factor": -1.0}, "ref_loss_factor"),
    ],
)
def test_bad_codi_values_are_named(fields, match):
    from coconut.core.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=match):
        Method(**{**vars(METHOD), **fields})


# -- against the official code (zhenyi4/codi), where a copy of it is at hand --------------------------
CODI_MIRROR = Path("/work/.mirror/zhenyi4+codi/repo")  # a bare clone, as the `fetch` tool leaves it


def official_source(tmp_path: Path) -> Path | None:
    """src/model.py of zhenyi4/codi: from $CODI_SRC (a checkout) or the bare mirror; None if neither."""
    if os.environ.get("CODI_SRC"):
        path = Path(os.environ["CODI_SRC"]) / "src" / "model.py"
        return path if path.is_file() else None
    if not CODI_MIRROR.is_dir():
        return None
    shown = subprocess.run(
        ["git", f"--git-dir={CODI_MIRROR}", "show", "HEAD:src/model.py"], capture_output=True, text=True
    )
    if shown.returncode:
        return None
    path = tmp_path / "codi_model.py"
    path.write_text(shown.stdout)
    return path


def official_codi(source: Path, lm, method: Method, prj_dim: int, monkeypatch):
    """Their CODI module around `lm` (its vocabulary grows by their pad, bot and eot), built by their
    own __init__: `peft` (LoRA, not used) is stubbed, from_pretrained hands over `lm`."""
    import transformers.training_args  # noqa: F401, PLC0415 (asks for peft before the stub is in)

    peft = types.ModuleType("peft")
    peft.get_peft_model = peft.PeftModel = peft.PeftConfig = None
    monkeypatch.setitem(sys.modules, "peft", peft)
    spec = importlib.util.spec_from_file_location("codi_official_model", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "AutoModelForCausalLM", types.SimpleNamespace(from_pretrained=lambda *a, **k: lm))
    monkeypatch.setattr(module, "AutoTokenizer", types.SimpleNamespace(from_pretrained=lambda *a, **k: tokenizer))
    tokenizer = types.SimpleNamespace(pad_token_id=EOS)
    model_args = types.SimpleNamespace(model_name_or_path="gpt2", full_precision=True, train=True)
    training_args = types.SimpleNamespace(
        bf16=False, num_latent=method.num_latent, use_lora=False, use_prj=True, prj_dim=prj_dim, prj_dropout=0.0,
        prj_no_ln=False, print_loss=False, ref_loss_factor=method.ref_loss_factor,
        distill_loss_div_std=method.distill_loss_div_std, distill_loss_type=method.distill_loss_type,
        distill_loss_factor=method.distill_loss_factor, fix_attn_mask=False, restore_from="",
        print_ref_model_stats=False,
    )  # fmt: skip
    return module.CODI(model_args, training_args, lora_config=None)


def official_batch(samples, codi, ids: SpecialIds) -> dict:
    """Their collator's batch (train.py:166-216, 337-362, --remove_eos True) of `samples`."""
    pad = nn.utils.rnn.pad_sequence
    questions = [torch.tensor(s.question + [codi.bot_id]) for s in samples]
    assert len({len(q) for q in questions}) == 1, "their latents attend to left padding (fix_attn_mask false)"
    answers = [torch.tensor([codi.eot_id, *s.answer]) for s in samples]
    refs = [torch.tensor(s.question + [t for step in s.steps[:-1] for t in step] + s.answer) for s in samples]
    ref_labels = [torch.tensor([-100] * len(s.question) + r[len(s.question) :].tolist()) for s, r in zip(samples, refs)]
    return {
        "encoder_input_ids": torch.stack(questions),
        "encoder_attention_mask": torch.ones(len(samples), len(questions[0]), dtype=torch.bool),
        "decoder_input_ids": pad(answers, batch_first=True, padding_value=ids.pad),
        "labels": pad(answers, batch_first=True, padding_value=-100),
        "ref_input_ids": pad(refs, batch_first=True, padding_value=ids.pad),
        "ref_labels": pad(ref_labels, batch_first=True, padding_value=-100),
        "ref_attention_mask": pad(refs, batch_first=True, padding_value=ids.pad).ne(ids.pad),
        # the answer's value: after the prefix (their "The answer is:")
        "model_answer_position": torch.tensor([1 + s.answer_prefix for s in samples]),
        "ref_answer_position": torch.tensor([len(r) - len(s.answer) + s.answer_prefix for s, r in zip(samples, refs)]),
    }


@pytest.mark.parametrize("loss_type", ["smooth_l1", "l2"])
def test_the_loss_and_gradients_equal_the_official_codes(loss_type, tmp_path, monkeypatch):
    source = official_source(tmp_path)
    if source is None:
        pytest.skip(f"zhenyi4/codi is not here: set CODI_SRC to a checkout, or fetch it to {CODI_MIRROR}")
    lm = tiny_lm("gpt2").double().eval()  # eval: no dropout (their teacher runs twice, each with its own mask)
    method = Method(**{**vars(METHOD), "distill_loss_type": loss_type})
    codi = official_codi(source, lm, method, prj_dim=48, monkeypatch=monkeypatch)
    codi.prj.double()
    ids = SpecialIds(codi.bot_id, codi.eot_id, LATENT, PAUSE, EOS, EOS)  # their bot and eot as our markers
    samples = [TokenizedSample([5, 6, 7], s.steps, s.answer, answer_prefix=2) for s in SAMPLES]  # no left padding
    theirs = codi(**official_batch(samples, codi, ids))["loss"]
    their_grads = grads(codi, theirs)
    projection = MLPProjection(lm.config.n_embd, ProjectionConfig("mlp", prj_dim=48), dtype=torch.float64)
    projection.load_state_dict(codi.prj.state_dict())
    model = ContinuousThoughtLM(lm, LATENT, projection)
    ours = codi_loss(model, codi_batch(samples, method, ids), method)
    torch.testing.assert_close(ours.loss, theirs)
    our_grads = grads(model, ours.loss)
    renamed = {
        k.replace("codi.", "lm.", 1).replace("prj.", "thought_projection.", 1): g for k, g in their_grads.items()
    }
    assert renamed.keys() == our_grads.keys()
    for name, grad in renamed.items():
        torch.testing.assert_close(our_grads[name], grad, msg=name)


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codi_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("codi")
    train(tiny_cfg(run, "method=codi", "trainer.max_epochs=1", "test=false"))
    return run


def test_train_logs_codis_terms_and_saves_its_projection(codi_run):
    logged = scalars(codi_run)
    for tag in ("train/loss", "train/student_loss", "train/teacher_loss", "train/distill_loss", "val/acc"):
        assert tag in logged, f"{tag} missing; have {sorted(logged)}"
    assert not any(tag.startswith("val/legibility/") for tag in logged)  # no step alignment to read
    saved = torch.load(codi_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["coconut"]["thought_projection"]["name"] == "mlp"
    assert "model.thought_projection.ln.weight" in saved["state_dict"]


def test_eval_answers_through_six_thoughts_and_says_which_metrics_do_not_apply(codi_run, tmp_path):
    report = run_evaluation(eval_cfg(tmp_path, f"ckpt_path={codi_run / 'checkpoints' / 'last.ckpt'}"))
    assert report["method"] == "codi" and report["tokens"]["thoughts_mean"] == 6
    legibility = report["legibility"]
    for name in ("decode_top1", "probe", "reasoning", "loss"):
        assert legibility[name] is None and "no step" in legibility["not_applicable"][f"legibility.{name}"]
    assert {"frontier", "intervention"} <= legibility["not_applicable"].keys()
    assert set(legibility["ablation"]) == {"zeros", "mean", "other"}  # the ablations still apply
    text = (tmp_path / "report.md").read_text()
    assert "does not apply: legibility.decode_top1, legibility.decode_top5" in text
    assert not any("n/a" in line and "decode_top1" in line for line in text.splitlines())
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(len(r["decoded_thoughts"]) == 6 and r["legibility"] is None for r in rows)


def test_export_reads_back_with_the_same_answers(codi_run, tmp_path):
    out = tmp_path / "exported"
    ckpt = codi_run / "checkpoints" / "last.ckpt"
    export(eval_cfg(tmp_path / "log", f"ckpt_path={ckpt}", f"out={out}", config="export"))
    assert json.loads((out / "coconut.json").read_text())["n_thoughts"] == 6
    data = ["data=arithmetic", "data.sizes.train=64", "data.sizes.val=16", "data.sizes.test=16"]
    data += ["data.max_new_tokens=24", "legibility.measure=false"]
    original = run_evaluation(eval_cfg(tmp_path / "original", f"ckpt_path={ckpt}", *data))
    back = run_evaluation(eval_cfg(tmp_path / "back", f"ckpt_path=hf:{out}", *data))
    assert back["method"] == "codi" and back["tokens"] == original["tokens"]
    assert back["accuracy"] == original["accuracy"]
