"""CoLaR (coconut/core/colar.py): its loss against a plain step-by-step computation of the official
code's equations (xiaomi-research/colar src/models/colar.py:67-265) in float64 with its gradient,
against their own forward where a copy of their code is at hand, generation with the compression
factor chosen at inference, and end to end (coconut-train method=colar, then coconut-eval with another
c and coconut-export on its checkpoint)."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import scalars, tiny_cfg, tiny_lm
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.evaluate import run_evaluation
from coconut.commands.export import export
from coconut.commands.train import train
from coconut.core import colar
from coconut.core.colar import colar_loss
from coconut.core.curriculum import Curriculum
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import build_thought_projection
from coconut.core.tokens import SpecialIds
from coconut.data.collate import collate_prompts
from coconut.data.dataset import PromptDataset, StageDataset
from coconut.data.sequences import TokenizedSample
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
    input over sigma, one rsample drawn for all rows in row order."""
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
                rows.append(sum(emb[t] for t in g.tolist()) / (denominator + 1e-5))
                n += 1
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
        ours = colar_loss(model, batch, method, START).loss
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


def eval_cfg(output_dir: Path, *overrides: str, config: str = "eval"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config, overrides=[f"paths.output_dir={output_dir}", *overrides])


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
