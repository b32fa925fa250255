"""The LightningModule: one model step shared by train/val/test, and answer accuracy by greedy
generation through continuous thoughts.

Logged: `train/loss` (the loss optimised), `{val,test}/loss` (next-token loss), `{val,test}/acc`
(exact match after the dataset's answer normalisation), `{val,test}/tokens_per_answer` (text tokens
generated, eos included),
`{val,test}/legibility/*` (coconut.eval.legibility, on the same questions, each thought read as
`legibility_read` says: the LM head, or a sparse_readout projection's readout), and a few decoded
samples as text. With the legibility objective on (`legibility_weight` = lambda > 0,
coconut/core/legibility_objective.py) `train/loss` is the next-token loss + lambda x
`train/legibility_loss`, `train/lm_loss` the first alone, `train/legibility_thoughts` the thoughts
scored per batch and `train/legibility_unscored_samples` the samples with thoughts whose steps have
no key content (they add nothing). A CODI method (`codi`, coconut/core/codi.py) trains on its loss
instead: `train/loss` is the total, `train/student_loss`, `train/teacher_loss` and
`train/distill_loss` its terms (unweighted); `{val,test}/loss` stay the student's next-token loss.
With step supervision (`step_supervision`, coconut/core/step_supervision.py) `train/loss` adds
weight x `train/step_loss` to either, `train/step_groups` the groups decoded per batch; its decoder
(`step_decoder`) is in the training checkpoints, and `rebuild_from_checkpoint` leaves it out.
A CoLaR method (`colar`, coconut/core/colar.py) trains on its loss: `train/loss` the total,
`train/ce_loss`, `train/latent_loss` and `train/entropy` its terms; `{val,test}/loss` its
cross-entropy at the compression factor of inference.
Checkpoints carry what evaluation needs to rebuild the model without the training run's folder: the
tokenizer files and the model config.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import torch
from torchmetrics import MeanMetric
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from coconut.core.codi import codi_loss
from coconut.core.colar import colar_loss
from coconut.core.errors import ConfigError
from coconut.core.legibility_objective import check_read, thought_legibility
from coconut.core.methods import Method
from coconut.core.model import ContinuousThoughtLM
from coconut.core.step_supervision import StepDecoder, StepSupervision, step_loss
from coconut.core.thought_projection import build_thought_projection, projection_config
from coconut.eval.evaluator import (
    Answer,
    answer_batch,
    graph_frontiers,
    legibility_block,
    read_thoughts,
    reasoning_of,
)
from coconut.eval.legibility import key_tokens_for
from coconut.training.health import avoid_cudnn_attention

SAMPLES_LOGGED = 4


class CoconutLitModule(L.LightningModule):
    def __init__(
        self,
        model: ContinuousThoughtLM,
        tokenizer: PreTrainedTokenizerBase,
        *,
        optimizer,
        scheduler=None,
        scheduler_interval: str = "step",
        answer_kind: str = "auto",
        max_new_tokens: int = 64,
        config: dict | None = None,
        legibility_weight: float = 0.0,
        legibility_read: str = "lm_head",
        codi: Method | None = None,
        step_supervision: StepSupervision | None = None,
    ):
        super().__init__()
        # A method with self_distillation: training batches carry the teacher and train on CODI's loss.
        self.codi = codi if codi is not None and codi.self_distillation else None
        # A CoLaR method (max_compression_factor): batches carry `colar_groups` and train on its loss.
        self.colar = codi if codi is not None and codi.colar else None
        self.model, self.tokenizer = model, tokenizer
        # SIM-CoT's auxiliary decoder, a copy of the LM as training starts; only when on, so that a
        # run without it has the same parameters, optimizer and checkpoints as before.
        self.step_supervision = step_supervision
        if step_supervision is not None:
            self.step_decoder = StepDecoder.of(model.lm)
        check_read(legibility_read, model.thought_projection)
        self.legibility_weight, self.legibility_read = legibility_weight, legibility_read
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(f"scheduler_interval must be step or epoch, got {scheduler_interval!r}")
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.answer_kind, self.max_new_tokens = answer_kind, max_new_tokens
        # The resolved run config, saved in every checkpoint and shown in TensorBoard's HPARAMS.
        self.save_hyperparameters({"config": config or {}})
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_{name}": MeanMetric() for split in ("val", "test") for name in ("loss", "acc", "tokens")}
        )
        self._samples: list[str] = []
        self._answers: list[Answer] = []  # this epoch's, for legibility

    # -- steps -------------------------------------------------------------------------------
    def model_step(self, batch: dict) -> torch.Tensor:
        if self.colar is not None and "colar_groups" in batch:
            return colar_loss(self.model, batch, self.colar).ce
        return self.model(
            batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"]
        ).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        size = batch["input_ids"].shape[0]
        if self.codi is not None and "teacher_input_ids" in batch:
            return self._codi_step(batch, size)
        if self.colar is not None and "colar_groups" in batch:
            return self._colar_step(batch, size)
        legible = self.legibility_weight and "thought_targets" in batch
        if not legible and "step_texts" not in batch:  # the paper's method
            loss = self.model_step(batch)
            self.log("train/loss", loss, prog_bar=True, batch_size=size)
            return loss
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"])
        loss = out.loss
        self.log("train/lm_loss", out.loss, batch_size=size)
        if legible:
            term = thought_legibility(
                self.model, batch["input_ids"], out.hidden_states, batch["thought_targets"], self.legibility_read
            )
            loss = loss + self.legibility_weight * term.loss
            if term.thoughts_scored:  # stage 0 has no thoughts: nothing to log
                self.log("train/legibility_loss", term.loss, batch_size=term.thoughts_scored)
            self.log("train/legibility_thoughts", float(term.thoughts_scored), batch_size=size)
            self.log("train/legibility_unscored_samples", float(term.samples_unscored), batch_size=size)
        loss = self._add_step_loss(loss, batch, out.hidden_states, size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _add_step_loss(self, loss: torch.Tensor, batch: dict, hidden: torch.Tensor, size: int) -> torch.Tensor:
        """`loss` + weight x the step-supervision term, when the batch carries step texts."""
        spec = self.step_supervision
        if spec is None or "step_texts" not in batch:
            return loss
        term = step_loss(
            self.model,
            self.step_decoder,
            batch["input_ids"],
            hidden,
            batch["step_texts"],
            spec.c_thought,
            extra_thought=spec.codi,
            loss_level=spec.loss_level,
            first_position=0 if spec.codi else 1,
        )
        self.log("train/step_groups", float(term.groups), batch_size=size)
        if term.groups:  # stage 0 has no thoughts: nothing to log
            self.log("train/step_loss", term.loss, batch_size=size)
        elif self._trainer is not None and self.trainer.world_size > 1:
            # DDP waits for every parameter's gradient: with nothing decoded, the decoder's are 0.
            return loss + sum(p.view(-1)[0] for p in self.step_decoder.parameters()) * 0.0
        return loss + spec.weight * term.loss

    def _codi_step(self, batch: dict, size: int) -> torch.Tensor:
        terms = codi_loss(self.model, batch, self.codi)
        loss = self._add_step_loss(terms.loss, batch, terms.hidden, size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name in ("student", "teacher", "distill"):
            self.log(f"train/{name}_loss", getattr(terms, name), batch_size=size)
        return loss

    def _colar_step(self, batch: dict, size: int) -> torch.Tensor:
        terms = colar_loss(self.model, batch, self.colar)
        self.log("train/loss", terms.loss, prog_bar=True, batch_size=size)
        self.log("train/ce_loss", terms.ce, batch_size=size)
        self.log("train/latent_loss", terms.latent, batch_size=size)
        self.log("train/entropy", terms.entropy, batch_size=size)
        return terms.loss

    def _eval_step(self, split: str, batch: dict, dataloader_idx: int) -> None:
        if dataloader_idx == 0:
            tokens = (batch["labels"][:, 1:] != -100).sum()
            self.metrics[f"{split}_loss"].update(self.model_step(batch), weight=tokens)
            return
        dataset = self._prompt_dataset(split)
        answers = answer_batch(
            self.model,
            self.tokenizer,
            batch,
            dataset.records,
            answer_kind=self.answer_kind,
            max_new_tokens=self.max_new_tokens,
            thought_ids=(dataset.ids.latent, dataset.ids.pause),
        )
        for answer in answers:
            self.metrics[f"{split}_acc"].update(float(answer.correct))
            self.metrics[f"{split}_tokens"].update(float(answer.emitted))
            if len(self._samples) < SAMPLES_LOGGED:
                record = dataset.records[answer.index]
                self._samples.append(
                    f"**Q:** {record.question}  \n**generated:** `{answer.text}`  \n**reference:** {record.answer} "
                    f"({'correct' if answer.correct else 'wrong'}, {answer.forward_passes} forward passes)"
                )
        self._answers.extend(answers)

    def _log_legibility(self, split: str) -> None:
        """`{split}/legibility/*` on the questions answered this epoch (the ablations, which cost a
        generation pass each, are left to coconut-eval)."""
        answers, self._answers = self._answers, []
        if not answers or self.trainer.sanity_checking:
            return
        dataset = self._prompt_dataset(split)
        if not dataset.method.thoughts_follow_steps:  # the step-wise metrics do not apply (evaluator.py)
            return
        # Read as the objective reads them (legibility.read), so the curve shows what it trains.
        tokens = [read_thoughts(self.model, self.tokenizer, a, read=self.legibility_read) for a in answers]
        questions = reasoning_of(
            answers, dataset.records, tokens, method=dataset.method, curriculum=dataset.curriculum, stage=dataset.stage
        )
        block, _ = legibility_block(questions, answers, key_tokens_for(self.tokenizer))
        frontiers = graph_frontiers(
            self.model, self.tokenizer, answers, dataset.records, questions, read=self.legibility_read
        )
        block.update(frontiers[0])
        # Under DDP, on rank 0's share of the questions: a metric may have nothing to measure on one
        # rank (None, not logged) and something on another, so a synced log could wait forever.
        for name, value in block.items():
            if isinstance(value, int | float) and not isinstance(value, bool):  # None: nothing measured
                self.log(f"{split}/legibility/{name}", float(value), add_dataloader_idx=False, rank_zero_only=True)

    def _prompt_dataset(self, split: str):
        loaders = self.trainer.val_dataloaders if split == "val" else self.trainer.test_dataloaders
        return loaders[1].dataset

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _log_eval(self, split: str) -> None:
        for name, key in (("loss", "loss"), ("acc", "acc"), ("tokens", "tokens_per_answer")):
            metric = self.metrics[f"{split}_{name}"]
            if metric.update_count:
                self.log(f"{split}/{key}", metric.compute(), add_dataloader_idx=False, sync_dist=False)
            metric.reset()
        experiment = getattr(self.logger, "experiment", None)
        if self._samples and hasattr(experiment, "add_text") and not self.trainer.sanity_checking:
            experiment.add_text(f"{split}/samples", "\n\n".join(self._samples), self.global_step)
        self._samples = []

    def on_fit_start(self) -> None:
        avoid_cudnn_attention(self.device)

    def on_validation_epoch_end(self) -> None:
        self._log_legibility("val")
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_legibility("test")
        self._log_eval("test")

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    # -- self-contained checkpoints -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            self.tokenizer.save_pretrained(folder)
            files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        checkpoint["coconut"] = {
            "tokenizer_files": files,
            "model_config": self.model.lm.config.to_dict(),
            "latent_token_id": self.model.latent_token_id,
            "thought_projection": projection_config(self.model.thought_projection),
        }


def rebuild_from_checkpoint(checkpoint: dict) -> tuple[ContinuousThoughtLM, PreTrainedTokenizerBase]:
    """The model and tokenizer a checkpoint was trained with, weights loaded, no run folder needed."""
    saved = checkpoint["coconut"]
    with tempfile.TemporaryDirectory() as folder:
        for name, data in saved["tokenizer_files"].items():
            (Path(folder) / name).write_bytes(data)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    config_dict = dict(saved["model_config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    lm = AutoModelForCausalLM.from_config(config)
    # Checkpoints from before thought projections existed used the identity.
    projection = build_thought_projection(saved.get("thought_projection"), lm)
    model = ContinuousThoughtLM(lm, saved["latent_token_id"], projection)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model, tokenizer
