"""Thought diagnostics end to end: a tiny run writes norms, histograms, decoded thoughts and a
projector whose labels are the replaced steps' results."""

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_cfg, tiny_lm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from coconut.commands.train import train
from coconut.core.model import ContinuousThoughtLM
from coconut.data.collate import collate_training
from coconut.data.splits import load_splits
from coconut.eval.steps import step_key
from coconut.eval.thought_hooks import ThoughtRecorder
from coconut.training.diagnostics import ThoughtDiagnostics

LATENT = 61
ROWS = [[5, 6, 7, 8, 62, LATENT, LATENT, LATENT, 63, 9, 10], [5, 6, 62, LATENT, 63, 12, 13], [8, 9, 10, 24]]


def diagnostics_cfg(output_dir, *overrides):
    # stage 0 (no thoughts), then stage 1
    return tiny_cfg(output_dir, "trainer.max_epochs=2", "test=false", *overrides)


def events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_a_run_logs_thought_norms_histograms_text_and_projector(tmp_path):
    cfg = diagnostics_cfg(tmp_path, "model/thought_projection=sparse_vocab", "model.thought_projection.k=3")
    metrics = train(cfg)
    logged = events(tmp_path)
    tags = logged.Tags()
    scalars = {t: [(e.step, e.value) for e in logged.Scalars(t)] for t in tags["scalars"]}
    # Training norms at every logging step (log_every_n_steps=1) of stage 1, the stage with thoughts:
    # global steps 3 and 4 (2 batches per epoch); none in stage 0.
    for tag in ("thoughts/train_norm_mean", "thoughts/train_norm_max", "thoughts/train_norm_ratio"):
        assert [step for step, _ in scalars[tag]] == [3, 4], tag
    # Validation: once, after the stage-1 epoch (stage 0 has no thoughts to show).
    for tag in ("thoughts/norm_mean", "thoughts/norm_max", "thoughts/norm_ratio"):
        assert len(scalars[tag]) == 1, tag
    norm, peak, ratio = (scalars[f"thoughts/{n}"][0][1] for n in ("norm_mean", "norm_max", "norm_ratio"))
    assert 0 < norm <= peak and math.isfinite(ratio) and ratio > 0
    assert metrics["thoughts/norm_mean"] == pytest.approx(norm)
    assert {"thoughts/norms", "thoughts/token_embedding_norms"} <= set(tags["histograms"])
    assert logged.Histograms("thoughts/norms")[0].histogram_value.num == 16  # 16 val samples x 1 thought

    (text,) = [e.tensor_proto.string_val[0].decode() for e in logged.Tensors("thoughts/top_tokens/text_summary")]
    assert "| sample | thought | replaces step | step result | logit lens (p) | mixed from (w) |" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| 0 ") or line.startswith("| 3 ")]
    assert len(table_rows) == 2 and all(row.count("`") == 2 * (5 + 3) for row in table_rows)  # 5 lens + 3 mixed

    # The projector: config, vectors and labels = the result of the step each thought replaces.
    projector = (tmp_path / "tensorboard" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "thoughts:' in projector
    (metadata,) = (tmp_path / "tensorboard").glob("*/thoughts/metadata.tsv")
    (vectors,) = (tmp_path / "tensorboard").glob("*/thoughts/tensors.tsv")
    rows = list(csv.reader(metadata.open(), delimiter="\t"))
    assert rows[0] == ["step_result", "thought", "step"]
    records = load_splits(cfg.data)["val"]
    # Stage 1, one thought per step: sample i's only thought replaces its first step.
    assert rows[1:] == [[step_key(r.steps[0]), "0", r.steps[0]] for r in records]
    assert len(vectors.read_text().splitlines()) == len(records)


def top_tokens_table(run_dir) -> list[list[str]]:
    """The cells of the rows of the run's last thoughts/top_tokens table, and its header line first."""
    tables = events(run_dir).Tensors("thoughts/top_tokens/text_summary")
    text = tables[-1].tensor_proto.string_val[0].decode()
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_a_readout_run_reads_its_thought_table_by_the_readout(tmp_path):
    # llama_tiny's LM head is not tied to its input embeddings: the logit lens of a sparse thought does
    # not name the tokens it is mixed from, R does (its top-k are exactly those tokens, in weight order).
    cfg = diagnostics_cfg(
        tmp_path,
        "model=llama_tiny",
        "model/thought_projection=sparse_readout",
        "model.thought_projection.k=3",
        "legibility.weight=0.1",
        "legibility.read=readout",
    )
    train(cfg)
    header, *rows = top_tokens_table(tmp_path)
    assert header[4:] == ["readout R (p)", "mixed from (w)"]
    assert rows
    for row in rows:
        read = [cell.split("`")[1] for cell in row[4].split(", ")]
        mixed = [cell.split("`")[1] for cell in row[5].split(", ")]
        assert read[:3] == mixed, row


class RecordingLogger:
    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, metrics))


class Scale(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, hidden):
        return hidden * self.factor


def train_norms_logged(factor: float, global_step: int) -> list[tuple[int, dict]]:
    """What the callback logs after a training forward whose thoughts are scaled by `factor`."""
    lm = tiny_lm("gpt2")
    model = ContinuousThoughtLM(lm, LATENT, Scale(factor))
    batch = collate_training(ROWS, ROWS, LATENT, 0)
    model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"])
    logger = RecordingLogger()
    trainer = SimpleNamespace(loggers=[logger], global_step=global_step, log_every_n_steps=5)
    ThoughtDiagnostics().on_train_batch_end(trainer, SimpleNamespace(model=model), None, batch, 0)
    return logger.logged


def test_train_norms_show_thoughts_blowing_up_at_logging_steps_only():
    assert train_norms_logged(1.0, global_step=7) == []  # not a logging step: nothing read from the device
    ((step, plain),) = train_norms_logged(1.0, global_step=10)
    ((_, blown),) = train_norms_logged(50.0, global_step=10)
    assert step == 10
    assert blown["thoughts/train_norm_ratio"] == pytest.approx(50 * plain["thoughts/train_norm_ratio"], rel=1e-4)
    assert blown["thoughts/train_norm_max"] == pytest.approx(50 * plain["thoughts/train_norm_max"], rel=1e-4)
    # The mean is over the four latent positions of ROWS, against the recorded thoughts.
    lm = tiny_lm("gpt2")
    model = ContinuousThoughtLM(lm, LATENT)
    batch = collate_training(ROWS, ROWS, LATENT, 0)
    recorder = ThoughtRecorder(batch["input_ids"], LATENT)
    with torch.no_grad():
        model.run(batch["input_ids"], batch["attention_mask"], batch["position_ids"], thought_hook=recorder)
    fed = torch.cat([r for r in recorder.per_row() if len(r)])  # (4, D)
    assert fed.shape[0] == 4
    assert plain["thoughts/train_norm_mean"] == pytest.approx(float(fed.norm(dim=-1).mean()), rel=1e-5)
    embedding_norm = float(lm.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    assert plain["thoughts/train_norm_ratio"] == pytest.approx(
        float(fed.norm(dim=-1).mean()) / embedding_norm, rel=1e-5
    )


def test_validation_diagnostics_run_every_n_validations_and_not_in_the_sanity_check():
    diagnostics = ThoughtDiagnostics(every_n_val_epochs=3)
    calls = []
    diagnostics.validation_thoughts = lambda trainer, module: calls.append(trainer.current_epoch)  # logs nothing
    diagnostics.on_validation_epoch_end(SimpleNamespace(sanity_checking=True, current_epoch=0), None)
    for epoch in range(7):
        diagnostics.on_validation_epoch_end(SimpleNamespace(sanity_checking=False, current_epoch=epoch), None)
    assert calls == [2, 5]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="every_n_val_epochs"):
        ThoughtDiagnostics(every_n_val_epochs=0)
