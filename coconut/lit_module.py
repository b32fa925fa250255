"""The LightningModule: one model step shared by train/val/test, and answer accuracy by greedy
generation through continuous thoughts.

Logged: `train/loss`, `{val,test}/loss`, `{val,test}/acc` (exact match after the dataset's answer
normalisation), `{val,test}/tokens_per_answer` (text tokens generated, eos included), and a few
decoded samples as text. Checkpoints carry what evaluation needs to rebuild the model without the
training run's folder: the tokenizer files and the model config.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import torch
from torchmetrics import MeanMetric
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from coconut.eval.answers import answers_match, extract_answer
from coconut.generation import generate
from coconut.model import ContinuousThoughtLM

SAMPLES_LOGGED = 4


class CoconutLitModule(L.LightningModule):
    def __init__(
        self,
        model: ContinuousThoughtLM,
        tokenizer: PreTrainedTokenizerBase,
        *,
        optimizer,
        scheduler=None,
        answer_kind: str = "auto",
        max_new_tokens: int = 64,
        config: dict | None = None,
    ):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.answer_kind, self.max_new_tokens = answer_kind, max_new_tokens
        # The resolved run config, saved in every checkpoint and shown in TensorBoard's HPARAMS.
        self.save_hyperparameters({"config": config or {}})
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_{name}": MeanMetric() for split in ("val", "test") for name in ("loss", "acc", "tokens")}
        )
        self._samples: list[str] = []

    # -- steps -------------------------------------------------------------------------------
    def model_step(self, batch: dict) -> torch.Tensor:
        return self.model(
            batch["input_ids"], batch["attention_mask"], batch["position_ids"], labels=batch["labels"]
        ).loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _eval_step(self, split: str, batch: dict, dataloader_idx: int) -> None:
        if dataloader_idx == 0:
            tokens = (batch["labels"][:, 1:] != -100).sum()
            self.metrics[f"{split}_loss"].update(self.model_step(batch), weight=tokens)
            return
        dataset = self._prompt_dataset(split)
        out = generate(
            self.model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["position_ids"],
            eos_token_id=self.tokenizer.eos_token_id,
            max_new_tokens=self.max_new_tokens,
        )
        for index, tokens, emitted, passes in zip(batch["index"], out.tokens, out.emitted, out.forward_passes):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            reference = dataset.records[index].answer
            correct = answers_match(extract_answer(text), reference, self.answer_kind)
            self.metrics[f"{split}_acc"].update(float(correct))
            self.metrics[f"{split}_tokens"].update(float(emitted))
            if len(self._samples) < SAMPLES_LOGGED:
                question = dataset.records[index].question
                self._samples.append(
                    f"**Q:** {question}  \n**generated:** `{text}`  \n**reference:** {reference} "
                    f"({'correct' if correct else 'wrong'}, {passes} forward passes)"
                )

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

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- self-contained checkpoints -------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            self.tokenizer.save_pretrained(folder)
            files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        checkpoint["coconut"] = {
            "tokenizer_files": files,
            "model_config": self.model.lm.config.to_dict(),
            "latent_token_id": self.model.latent_token_id,
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
    model = ContinuousThoughtLM(AutoModelForCausalLM.from_config(config), saved["latent_token_id"])
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model, tokenizer
