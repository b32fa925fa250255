"""CoLaR (coconut/core/colar.py): its loss against a plain step-by-step computation of the official
code's equations (xiaomi-research/colar src/models/colar.py:67-265) in float64 with its gradient,
against their own forward where a copy of their code is at hand, generation with the compression
factor chosen at inference, and end to end (coconut-train method=colar, then coconut-eval with another
c and coconut-export on its checkpoint)."""

import importlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import lightning
import pytest
import torch
from conftest import eval_cfg, scalars, tiny_cfg, tiny_lm
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from coconut.commands.evaluate import run_evaluation
from coconut.commands.export import export
from coconut.commands.train import train
from coconut.core import colar
from coconut.core.colar import colar_loss
from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import build_thought_projection
from coconut.core.tokenizer import build_tokenizer
from coconut.core.tokens import SpecialIds
from coconut.data.collate import collate_prompts
from coconut.data.dataset import PromptDataset, StageDataset
from coconut.data.sequences import TokenizedSample, colar_sequence
from coconut.eval.evaluator import answer_batch
from coconut.training.datamodule import _collate_prompts, _collate_sequences

START, END, LATENT, PAUSE, EOS = 60, 61, 62, 63, 0
IDS = SpecialIds(start_latent=START, end_latent=END, latent=LATENT, pause=PAUSE, eos=EOS, pad=EOS)
SPEED = {1: [40, 41], 2: [40, 42], 3: [40, 43]}  # "(Thinking speed: c)"
# Questions, chains and answers of different lengths; chains whose length is not a multiple of c.
SAMPLES = [
    TokenizedSample([5, 6, 7], [[10, 11], [12, 13, 14], [15]], [20, 30, EOS], speed=SPEED),
    TokenizedSample([8, 9, 5, 6, 7], [[16, 17], [18]], [20, 31, 32, EOS], speed=SPEED),
    TokenizedSample([9, 8], [[19], [22, 23], [24, 25], [26]], [20, 33, EOS], speed=SPEED),
]


def colar_method(**overrides) -> Method:
    return Method("colar", stage="final", **{"max_compression_factor": [1, 2, 3], **overrides})


def colar_batch(method: Method, samples=SAMPLES, seed: int = 0) -> dict:
    data = StageDataset(samples, stage=0, method=method, curriculum=Curriculum(), ids=IDS, seed=seed, mix_stages=True)
    return _collate_sequences([data[i] for i in range(len(data))], IDS.latent, IDS.pad)


def colar_model(seed: int = 0, deterministic: bool = False, dtype=torch.float64) -> ContinuousThoughtLM:
    lm = tiny_lm("gpt2", seed=seed).to(dtype).eval()  # eval: no dropout, so a plain computation can match
    head = build_thought_projection(
        {"name": "latent_policy", "lp_intermediate_size": 24, "lp_deterministic": deterministic}, lm
    )
    return ContinuousThoughtLM(lm, LATENT, head)


def reference_loss(model: ContinuousThoughtLM, batch: dict, method: Method) -> torch.Tensor:
    """Their equations one row at a time, no padding: the inputs written out (question, speed, "###",
    each group's sum over sqrt(count) + 1e-5, "###", answer), one forward on inputs_embeds, the
    cross-entropy of every labelled next token summed by hand, the head's NLL or MSE against the next
    input over sigma, one rsample drawn for all rows in row order. A row at c = 1 keeps its embeddings
    (colar.py:98-100); above it, "###" is the first group's one token, over 1 + 1e-5."""
    emb, head = model.lm.transformer.wte.weight, model.thought_projection
    nll_sum, count, means, stds, golds = 0.0, 0, [], [], []
    for b in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][b].bool()
        ids, labels = batch["input_ids"][b][real], batch["labels"][b][real]
        groups = [g[g >= 0] for g in batch["colar_groups"][b] if (g >= 0).any()]
        rows, n = [], 0
        for token in ids.tolist():
            if token == LATENT:
                g = groups[n]
                denominator = math.sqrt(len(g)) if method.sqrt_mean else len(g)
                total = sum(emb[t] for t in g.tolist())
                rows.append(total if batch["colar_factors"][b] == 1 else total / (denominator + 1e-5))
                n += 1
            elif token == START and batch["colar_factors"][b] > 1:  # "###" alone in the first group
                rows.append(emb[token] / (1 + 1e-5))
            else:
                rows.append(emb[token])
        inputs = torch.stack(rows)  # (T, D)
        hidden = model.lm.transformer(inputs_embeds=inputs[None]).last_hidden_state[0]  # (T, D)
        logits = model.lm.lm_head(hidden)  # (T, V)
        for t in range(len(ids) - 1):
            if labels[t + 1] != -100:
                nll_sum = nll_sum - torch.log_softmax(logits[t], -1)[labels[t + 1]]
                count += 1
        for t in range(len(ids) - 1):
            if ids[t] == START or ids[t] == LATENT:
                x = head.fc(hidden[t])
                means.append(head.mean(x))
                stds.append(head.log_std(x).exp() if not head.deterministic else torch.full_like(means[-1], 1e-9))
                golds.append(inputs[t + 1].detach() / head.embeds_std)
    ce = nll_sum / count
    mean, std, gold = torch.stack(means), torch.stack(stds), torch.stack(golds)  # (N, D) each
    if method.embed_modeling_loss == "nll":
        per_dim = 0.5 * ((gold - mean) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)
    else:
        torch.manual_seed(7)
        sample = mean + std * torch.randn_like(mean)
        per_dim = (sample - gold) ** 2
    return method.ce_weight * ce + method.embed_modeling_weight * per_dim.mean(-1).mean()


def grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("embed_modeling_loss, sqrt_mean", [("mse", True), ("nll", True), ("mse", False)])
def test_the_loss_and_its_gradient_equal_the_equations_step_by_step(embed_modeling_loss, sqrt_mean):
    method = colar_method(embed_modeling_loss=embed_modeling_loss, sqrt_mean=sqrt_mean, embed_modeling_weight=0.7)
    model = colar_model()
    for seed in range(3):  # different factors and labels drawn per sample
        batch = colar_batch(method, seed=seed)
        torch.manual_seed(7)  # the rsample's noise: the same draws as the reference's
        ours = colar_loss(model, batch, method).loss
        expected = reference_loss(model, batch, method)
        torch.testing.assert_close(ours, expected)
        ours_grads, expected_grads = grads(model, ours), grads(model, expected)
        assert ours_grads.keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            torch.testing.assert_close(ours_grads[name], grad, msg=name)


def test_sequences_group_the_chain_c_tokens_at_a_time():
    method = colar_method(max_compression_factor=[2])
    item = StageDataset(SAMPLES, stage=0, method=method, curriculum=Curriculum(), ids=IDS, mix_stages=True)[0]
    # chain 10 11 12 13 14 15 in groups of 2: three latents, each labelled with one of its tokens
    assert item["colar_groups"] == ((10, 11), (12, 13), (14, 15))
    assert item["input_ids"] == [5, 6, 7, 40, 42, START, LATENT, LATENT, LATENT, END, 20, 30, EOS]
    labels = item["labels"]
    assert labels[:5] == [-100] * 5 and labels[5] == START and labels[9:] == [END, 20, 30, EOS]
    assert all(label in group for label, group in zip(labels[6:9], item["colar_groups"]))
    # the prompt stops after <|start-latent|>, with the speed of inference
    prompt = PromptDataset([None], SAMPLES[:1], stage=0, method=colar_method(compression_factor=3),
                           curriculum=Curriculum(), ids=IDS)[0]["prompt"]  # fmt: skip
    assert prompt == [5, 6, 7, 40, 43, START]


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"max_compression_factor": 0}, "max_compression_factor"),
        ({"max_compression_factor": [2], "compression_factor": 0}, "compression_factor"),
        ({"max_compression_factor": 2, "embed_modeling_loss": "l1"}, "embed_modeling_loss"),
        ({"max_compression_factor": 2, "stage": "curriculum"}, "stage=final"),
    ],
)
def test_bad_colar_values_are_named(fields, match):
    with pytest.raises(Exception, match=match):
        Method("colar", **{"stage": "final", **fields})


# -- against the official code (xiaomi-research/colar), where a copy of it is at hand ----------------------
COLAR_MIRROR = Path("/work/.mirror/xiaomi-research+colar/repo")  # a bare clone, as the `fetch` tool leaves it


def official_package(tmp_path: Path, monkeypatch):
    """Their src/ as the package `colar_official` (from $COLAR_SRC, a checkout, or the bare mirror),
    its one `peft` import removed (LoRA is off); None if neither is here."""
    checkout = os.environ.get("COLAR_SRC")
    if checkout and (Path(checkout) / "src" / "models" / "colar.py").exists():
        shutil.copytree(Path(checkout) / "src", tmp_path / "colar_official")
    elif (COLAR_MIRROR / "HEAD").exists():
        archive = subprocess.run(["git", f"--git-dir={COLAR_MIRROR}", "archive", "HEAD", "src"], capture_output=True)
        if archive.returncode:
            return None
        subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
        (tmp_path / "src").rename(tmp_path / "colar_official")
    else:
        return None
    base = tmp_path / "colar_official" / "models" / "model_base.py"  # peft is not installed here; LoRA is off
    base.write_text(base.read_text().replace("from peft import LoraConfig, get_peft_model", "LoraConfig = None"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module("colar_official.models.colar")


def official_colar(module, lm, tokenizer, head, method: Method, loss: str):
    """Their LitCoLaR around `lm`, `tokenizer` and our head's weights, built without its __init__ (which
    loads a model from a workspace path); their config keys, their templates (model_base.py:41-46)."""
    ours = module.LitCoLaR.__new__(module.LitCoLaR)
    lightning.LightningModule.__init__(ours)
    latent_cot_config = {
        "ce_weight": method.ce_weight,
        "embed_modeling_weight": method.embed_modeling_weight,
        "embed_modeling_loss": loss,
        "entropy_weight": 0,
        "pred_embed_forward_weight": 0,
        "max_compression_factor": str(method.max_compression_factor[0]),  # a string: c drawn from {c}
        "sqrt_mean": method.sqrt_mean,
    }
    ours.model_kwargs = OmegaConf.create({"latent_cot_config": latent_cot_config, "do_rl": False})
    ours.tokenizer, ours.llm, ours.embedding = tokenizer, lm, lm.get_input_embeddings()
    ours.question_template, ours.speed_template = "Question: {} Let's think step by step:", "(Thinking speed: {})"
    ours.thinking_separator, ours.steps_template, ours.answer_template = "###", "{}", "Answer:{}"
    ours.thinking_separator_id = tokenizer.convert_tokens_to_ids("###")
    ours.latent_policy = module.LatentPolicy(lm.config.n_embd, head.mean.in_features, head.deterministic).double()
    ours.latent_policy.load_state_dict(head.state_dict())
    ours.embeds_std = head.embeds_std
    return ours


@pytest.mark.parametrize("c, loss", [(1, "nll"), (2, "nll"), (3, "nll"), (2, "mse")])
def test_the_loss_and_gradients_equal_the_official_codes(c, loss, tmp_path, monkeypatch):
    """Their LitCoLaR.forward (src/models/colar.py:67-265) on text, ours on the same tokens: the same
    loss and gradients. Their label draw (torch.multinomial) is replaced by the group's first real token
    in both; mse uses their deterministic head (std 1e-9), whose rsample is the mean to 1e-9. One row a
    batch, and for c > 1 chains whose length is not a multiple of c: otherwise their layout opens the
    steps with pad columns, and the "###" label is predicted from one (coconut/core/colar.py, "Not followed")."""
    module = official_package(tmp_path, monkeypatch)
    if module is None:
        pytest.skip(f"xiaomi-research/colar is not here: set COLAR_SRC to a checkout, or fetch it to {COLAR_MIRROR}")
    first = lambda mask: mask.long().argmax(-1, keepdim=True)  # noqa: E731 (B, G, c) -> (B, G, 1)
    monkeypatch.setattr(module, "sample_indices_from_attention_mask_3d", first)
    texts = [
        ("3 + 4 * 2", "4 * 2 = 8 3 + 8 = 11", "11"),
        ("12 - 5", "12 - 5 = 7", "7"),
        ("1+1", "1 + 1 = 2 so", "2"),
        ("2 * 3", "2 * 3 = 6", "6"),
        ("9 - 1 - 1", "9 - 1 = 8 8 - 1 = 7", "7"),
        ("5+5", "5 + 5 = 10", "10"),
    ]
    tokenizer = build_tokenizer([t for row in texts for t in row] + ["Question: Let's think step by step:"], 300)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens(["###", "<|latent|>"])  # ours only: their code never writes it (its row: no gradient)
    tokenizer.batch_encode_plus = tokenizer.__call__  # gone in transformers 5; the same call
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4)
    lm = GPT2LMHeadModel(config).double().eval()
    method = colar_method(max_compression_factor=[c], compression_factor=c, embed_modeling_loss=loss)
    head = build_thought_projection({"name": "latent_policy", "lp_intermediate_size": 24,
                                     "lp_deterministic": loss == "mse", "embeds_std": 0.1}, lm)  # fmt: skip
    theirs = official_colar(module, lm, tokenizer, head, method, loss)
    latent = tokenizer.convert_tokens_to_ids("<|latent|>")
    model = ContinuousThoughtLM(lm, latent, head)
    sep = tokenizer.convert_tokens_to_ids("###")
    ids = SpecialIds(start_latent=sep, end_latent=sep, latent=latent, pause=-1, eos=tokenizer.eos_token_id,
                     pad=tokenizer.pad_token_id)  # fmt: skip
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    checked = 0
    for rows in [[row] for row in texts]:
        if c > 1 and len(encode(rows[0][1])) % c == 0:  # their layout would open the steps with a pad group
            continue
        checked += 1
        samples = [
            TokenizedSample(encode(f"Question: {q} Let's think step by step:(Thinking speed: {c})"), [encode(s)],
                            encode(f"Answer:{a}") + [tokenizer.eos_token_id], speed={c: []})
            for q, s, a in rows
        ]  # fmt: skip
        data = StageDataset(samples, stage=0, method=method, curriculum=Curriculum(), ids=ids)
        items = [data[i] for i in range(len(data))]
        for item, sample in zip(items, samples):  # the group's first token, as `first` draws theirs
            item["labels"] = colar_sequence(sample, c, ids).labels
        batch = _collate_sequences(items, ids.latent, ids.pad)
        expected = theirs.forward({"question": [q for q, _, _ in rows], "steps": [s for _, s, _ in rows],
                                   "answer": [a for _, _, a in rows], "idx": torch.arange(len(rows))})  # fmt: skip
        ours = colar_loss(model, batch, method)
        # Their cross-entropy is transformers' own, which casts the logits to float32: float32 tolerances.
        close = {"rtol": 1e-5, "atol": 1e-6}
        torch.testing.assert_close(ours.ce, expected["ce_loss"].double(), **close)
        torch.testing.assert_close(ours.latent, expected["embed_modeling_loss"])
        torch.testing.assert_close(ours.loss, expected["total_loss"].double(), **close)
        ours_grads, expected_grads = grads(model, ours.loss), grads(theirs, expected["total_loss"])
        expected_grads = {k.replace("latent_policy.", "thought_projection.").replace("llm.", "lm."): v
                          for k, v in expected_grads.items()}  # fmt: skip
        assert ours_grads.keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            torch.testing.assert_close(ours_grads[name], grad.double(), msg=name, **close)
    assert checked >= 2


# -- generation -------------------------------------------------------------------------------------------
def test_generation_feeds_latents_until_the_lm_head_ends_them(monkeypatch):
    """Row 0's LM head says <|end-latent|> after its 2nd latent, row 1's after its 3rd: the prompts grow
    by 2 and 3 latents and <|end-latent|>; the latents fed are the head's mean on the hidden state
    before each, computed one after another; the forward passes are the question, one per latent,
    <|end-latent|> with the first token, one per further token."""
    model = colar_model(dtype=torch.float32)
    method = colar_method(compression_factor=2, max_n_latent_forward=5)
    stops = {0: 2, 1: 3}
    calls = {"n": 0}
    real_greedy = colar.greedy_token

    def scripted(m, hidden):  # the model's own token, but <|end-latent|> exactly where `stops` says
        calls["n"] += 1
        token = real_greedy(m, hidden).masked_fill(real_greedy(m, hidden) == END, 1)
        for row, n in stops.items():
            if calls["n"] == n:
                token[row] = END
        return token

    monkeypatch.setattr(colar, "greedy_token", scripted)
    records = [type("R", (), {"answer": "1"})()] * 2
    data = PromptDataset(records, SAMPLES[:2], stage=0, method=method, curriculum=Curriculum(), ids=IDS)
    batch = _collate_prompts([data[0], data[1]], IDS.pad, colar=(END, method.max_n_latent_forward))
    answers = answer_batch(
        model, type("T", (), {"eos_token_id": EOS, "decode": lambda self, t, **k: "1"})(), batch, records,
        answer_kind="auto", max_new_tokens=4, thought_ids=(LATENT, PAUSE),
    )  # fmt: skip
    assert [a.thought_positions for a in answers] == [2, 3]
    for answer, sample in zip(answers, SAMPLES[:2]):
        prompt = sample.question + SPEED[2] + [START]
        assert answer.forward_passes == 1 + answer.thought_positions + 1 + answer.emitted - 1
        # the latents by hand: the head's mean times sigma on the last hidden state, one after another
        embeds = model.embed(torch.tensor([prompt]))
        with torch.no_grad():
            for n in range(answer.thought_positions):
                hidden = model.decoder(inputs_embeds=embeds).last_hidden_state[:, -1:]
                latent = model.thought_projection(hidden)
                torch.testing.assert_close(answer.thoughts[n], latent[0, 0])
                embeds = torch.cat([embeds, latent], 1)


def test_latent_counts_stop_at_the_cap():
    model = colar_model(dtype=torch.float32)
    batch = collate_prompts([[5, 6, 40, 42, START], [8, 40, 42, START]], IDS.pad)
    counts = colar.latent_counts(model, batch, END, 3)
    assert all(1 <= n <= 3 for n in counts)


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def colar_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("colar")
    overrides = ["method=colar", "method.max_compression_factor=[1,2]", "method.compression_factor=2"]
    train(tiny_cfg(run, *overrides, "method.max_n_latent_forward=6", "trainer.max_epochs=1", "test=false"))
    return run


def test_train_logs_colars_terms_and_saves_its_head(colar_run):
    logged = scalars(colar_run)
    for tag in ("train/loss", "train/ce_loss", "train/latent_loss", "val/acc", "val/loss"):
        assert tag in logged, f"{tag} missing; have {sorted(logged)}"
    saved = torch.load(colar_run / "checkpoints" / "last.ckpt", weights_only=False)
    head = saved["coconut"]["thought_projection"]
    assert head["name"] == "latent_policy" and head["embeds_std"] > 0
    assert "model.thought_projection.log_std.weight" in saved["state_dict"]


def test_eval_at_another_factor_and_says_which_metrics_do_not_apply(colar_run, tmp_path):
    ckpt = colar_run / "checkpoints" / "last.ckpt"
    overrides = ["method=colar", "method.compression_factor=1", "method.max_n_latent_forward=4"]
    report = run_evaluation(eval_cfg(tmp_path, f"ckpt_path={ckpt}", *overrides))
    assert report["method"] == "colar" and 1 <= report["tokens"]["thoughts_mean"] <= 4
    legibility = report["legibility"]
    for name in ("decode_top1", "probe", "reasoning", "loss"):
        assert legibility[name] is None and "CoLaR" in legibility["not_applicable"][f"legibility.{name}"]
    assert set(legibility["ablation"]) == {"zeros", "mean", "other"}
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(1 <= len(r["decoded_thoughts"]) <= 4 for r in rows)


def test_export_reads_back_with_the_same_answers(colar_run, tmp_path):
    out = tmp_path / "exported"
    ckpt = colar_run / "checkpoints" / "last.ckpt"
    export(eval_cfg(tmp_path / "log", f"ckpt_path={ckpt}", f"out={out}", config="export"))
    data = ["data=arithmetic", "data.sizes.train=64", "data.sizes.val=16", "data.sizes.test=16"]
    data += ["data.max_new_tokens=24", "legibility.measure=false"]
    original = run_evaluation(eval_cfg(tmp_path / "original", f"ckpt_path={ckpt}", *data))
    back = run_evaluation(eval_cfg(tmp_path / "back", f"ckpt_path=hf:{out}", *data))
    assert back["method"] == "colar" and back["tokens"] == original["tokens"]
    assert back["accuracy"] == original["accuracy"]
