"""PCCoT's Jacobi-iteration forward (core/jacobi.py) against its equations written out step by step,
against COCONUT's sequential forward once T >= the thought count, and end to end as method=pccot."""

import json

import pytest
import torch
from conftest import tiny_cfg, tiny_lm
from test_eval_runs import compose_cfg, eval_cfg, rows_of
from test_model import LATENT, PAD, ROWS

from coconut.commands.build import build_method
from coconut.commands.evaluate import run_evaluation
from coconut.commands.export import export
from coconut.commands.train import train
from coconut.core.errors import ConfigError
from coconut.core.generation import generate, generate_uncached
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_prompts, collate_training
from coconut.eval.thought_hooks import ThoughtEdit, ThoughtRecorder


def jacobi_by_hand(lm, ids: list[int], iterations: int, projection=lambda h: h, fixed=None) -> torch.Tensor:
    """Logits of one unpadded sequence by the paper's equations, each iteration a full forward of
    the whole sequence: E^0 the token embeddings; E^{t+1} at a latent i = projection(h^t at i - 1),
    every latent from the same h^t; the logits of the forward on E^T. `fixed` {i: vector} feeds a
    given thought at latent i from the first update on (an ablation). Slow and obviously right."""
    embed = lm.get_input_embeddings()
    inputs = [embed(torch.tensor(token)) for token in ids]
    latents = [i for i, token in enumerate(ids) if token == LATENT]
    for _ in range(iterations):
        hidden = lm.base_model(inputs_embeds=torch.stack(inputs)[None]).last_hidden_state[0]
        updated = list(inputs)
        for i in latents:
            updated[i] = (fixed or {}).get(i, projection(hidden[i - 1]))
        inputs = updated
    return lm(inputs_embeds=torch.stack(inputs)[None]).logits[0]


def float64_lm(family: str):
    return tiny_lm(family).double().eval()  # dropout off; gradients still flow


def padded(rows):
    return collate_training(rows, rows, LATENT, PAD)


def row_logits(logits: torch.Tensor, batch: dict, row: int, n: int) -> torch.Tensor:
    start = int(batch["attention_mask"][row].argmax())  # first real column (left padding)
    return logits[row, start : start + n]


@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_the_parallel_forward_equals_the_equations_step_by_step(family, iterations):
    lm = float64_lm(family)
    model = ContinuousThoughtLM(lm, LATENT, jacobi_iterations=iterations)
    batch = padded(ROWS)
    logits = model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits
    for row, ids in enumerate(ROWS):
        expected = jacobi_by_hand(lm, ids, iterations)
        torch.testing.assert_close(row_logits(logits, batch, row, len(ids)), expected, atol=1e-10, rtol=1e-10)


def test_with_t_at_least_the_thought_count_it_is_coconut_and_below_it_is_not(family):
    lm = float64_lm(family)
    batch = padded(ROWS)  # at most 3 thoughts a row
    args = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    sequential = ContinuousThoughtLM(lm, LATENT)(*args).logits
    # (The sequential band's Llama column pass rounds its rotary angles in float32, as the decoder
    # does for the question: 4e-8 apart in float64, hence these tolerances.)
    close = {"atol": 1e-6, "rtol": 1e-6}
    for iterations in (3, 5):
        jacobi = ContinuousThoughtLM(lm, LATENT, jacobi_iterations=iterations)(*args).logits
        torch.testing.assert_close(jacobi, sequential, **close)
    # T = 2 leaves the third thought of row 0 unconverged: the test above can fail.
    short = ContinuousThoughtLM(lm, LATENT, jacobi_iterations=2)(*args).logits
    assert (short[0] - sequential[0]).abs().max() > 1e-4
    torch.testing.assert_close(short[1:3], sequential[1:3], **close)  # 1 and 2 thoughts: converged


def test_gradients_equal_the_equations_autograd_with_a_projection(family):
    lm = float64_lm(family)
    torch.manual_seed(1)
    width = lm.config.hidden_size
    projection = torch.nn.Linear(width, width).double()  # a trained projection: its gradient flows too
    model = ContinuousThoughtLM(lm, LATENT, projection, jacobi_iterations=2)
    rows = ROWS[:3]
    batch = padded(rows)
    model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"]).loss.backward()
    batched = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total, count = 0.0, 0
    for ids in rows:  # the same mean token loss, row by row, by the equations
        logits = jacobi_by_hand(lm, ids, 2, projection)
        total = total + torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum")
        count += len(ids) - 1
    (total / count).backward()
    assert projection.weight.grad.abs().sum() > 0
    # GPT-2's agree to 1e-16; Llama's padded batch to ~5e-8 of the largest gradient (float32 rotary
    # tables, not isolated further); a wrong iteration or a detached one is off by far more.
    for name, param in model.named_parameters():
        torch.testing.assert_close(batched[name], param.grad, atol=1e-7, rtol=1e-6, msg=name)


def test_a_recorder_keeps_the_last_iterations_thoughts_and_an_ablation_holds_through_every_iteration(family):
    lm = float64_lm(family)
    model = ContinuousThoughtLM(lm, LATENT, jacobi_iterations=2)
    ids = ROWS[0]  # 3 thoughts at 5, 6, 7
    input_ids = torch.tensor([ids])
    recorder = ThoughtRecorder(input_ids, LATENT)
    model.run(input_ids, torch.ones_like(input_ids), thought_hook=recorder)
    hidden = lm.base_model(inputs_embeds=None, input_ids=input_ids).last_hidden_state[0]  # iteration 0
    once = [lm.get_input_embeddings()(torch.tensor(t)) for t in ids]
    for i in (5, 6, 7):
        once[i] = hidden[i - 1]
    second = lm.base_model(inputs_embeds=torch.stack(once)[None]).last_hidden_state[0]  # iteration 1
    torch.testing.assert_close(recorder.per_row()[0], second[4:7].float())
    # The second thought edited (causal legibility): fed from the first update on, the third
    # iterates from it.
    vector = torch.randn(lm.config.hidden_size, dtype=torch.float64)
    edit = ThoughtEdit(input_ids, LATENT, {0: (range(1, 2), vector)})
    logits = model.logits(model.run(input_ids, torch.ones_like(input_ids), thought_hook=edit)[0])[0]
    torch.testing.assert_close(logits, jacobi_by_hand(lm, ids, 2, fixed={6: vector}), atol=1e-10, rtol=1e-10)


def test_generation_after_the_iterations_equals_the_uncached_forward(family):
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT, jacobi_iterations=2)
    prompts = [[5, 6, 7, 62, LATENT, LATENT, LATENT, 63], [8, 9, 62, LATENT, LATENT, LATENT, 63]]
    batch = collate_prompts(prompts, PAD)
    out = generate(
        model, batch["input_ids"], batch["attention_mask"], batch["position_ids"], eos_token_id=0, max_new_tokens=6
    )
    for prompt, tokens in zip(prompts, out.tokens):
        assert tokens == generate_uncached(model, prompt, eos_token_id=0, max_new_tokens=6)[: len(tokens)]
    # the question, T = 2 band passes, the band with the rest, then a pass per token after the first
    assert out.forward_passes == [4 + max(e - 1, 0) for e in out.emitted]


def test_the_method_and_its_checks():
    method = build_method(compose_cfg("train", "method=pccot"))
    assert method.jacobi_iterations == 3 and method.stage == "final" and method.thought == "continuous"
    assert build_method(compose_cfg("train", "method=pccot", "method.jacobi_iterations=0")).jacobi_iterations == 0
    with pytest.raises(ConfigError, match="method.thought=pause has none"):
        Method("pause", thought="pause", jacobi_iterations=2)
    with pytest.raises(ConfigError, match=">= 0"):
        Method("pccot", jacobi_iterations=-1)


def test_train_eval_and_export_a_pccot_checkpoint(tmp_path):
    # 3 thoughts a question, T = 1 in training: the checkpoint's thoughts are not COCONUT's.
    run = tmp_path / "run"
    train(tiny_cfg(run, "method=pccot", "method.jacobi_iterations=1", "curriculum.c_thought=3", "trainer.max_epochs=1"))
    ckpt = run / "checkpoints" / "last.ckpt"
    report = run_evaluation(eval_cfg(tmp_path / "eval", f"ckpt_path={ckpt}", "legibility.ablations=[zeros,mean]"))
    assert report["method"] == "pccot" and report["thoughts_per_question"] == 3
    legibility = report["legibility"]
    assert legibility["measured"] and set(legibility["ablation"]) == {"zeros", "mean"}
    for metric in ("decode_top1", "probe", "reasoning", "loss", "causal"):
        assert legibility[metric] is not None, metric
    # the question, T + 1 band passes, then a pass per answer token after the first
    assert report["tokens"]["forward_passes_mean"] == 3 + report["tokens"]["generated_mean"] - 1
    # T overridden at evaluation: T >= the thoughts is COCONUT's forward on the same weights
    deep = eval_cfg(tmp_path / "deep", f"ckpt_path={ckpt}", "method=pccot", "method.jacobi_iterations=3")
    assert run_evaluation(deep)["tokens"]["forward_passes_mean"] == report["tokens"]["forward_passes_mean"] + 2
    run_evaluation(eval_cfg(tmp_path / "coconut", f"ckpt_path={ckpt}", "method=no_curriculum"))
    for key in ("generated", "decoded_thoughts"):
        assert [r[key] for r in rows_of(tmp_path / "deep")] == [r[key] for r in rows_of(tmp_path / "coconut")]
    out = tmp_path / "exported"
    export(compose_cfg("export", f"ckpt_path={ckpt}", f"out={out}", f"paths.output_dir={tmp_path / 'log'}"))
    meta = json.loads((out / "coconut.json").read_text())
    assert meta["method"]["name"] == "pccot" and meta["method"]["jacobi_iterations"] == 1
    data = ["data=arithmetic", "data.sizes.train=64", "data.sizes.val=16", "data.sizes.test=16"]
    original = run_evaluation(eval_cfg(tmp_path / "original", f"ckpt_path={ckpt}", *data))
    back = run_evaluation(eval_cfg(tmp_path / "back", f"ckpt_path=hf:{out}", *data))
    assert back["accuracy"] == original["accuracy"] and back["tokens"] == original["tokens"]
    for key in ("generated", "decoded_thoughts"):
        assert [r[key] for r in rows_of(tmp_path / "back")] == [r[key] for r in rows_of(tmp_path / "original")]
