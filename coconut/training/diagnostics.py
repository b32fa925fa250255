"""TensorBoard diagnostics of the continuous thoughts: are they blowing up, and what do they say?

`ThoughtDiagnostics` (a Lightning callback, on in conf/callbacks/default.yaml) logs

  during training, at every `trainer.log_every_n_steps`-th step, from the training batch itself:
    thoughts/train_norm_mean, thoughts/train_norm_max   L2 norm of the thoughts fed
    thoughts/train_norm_ratio                           mean thought norm / mean token-embedding norm
  at the end of every `every_n_val_epochs`-th validation, on the first `num_samples` validation
  sequences of the current stage:
    thoughts/norm_mean, thoughts/norm_max, thoughts/norm_ratio       scalars, as above
    thoughts/norms, thoughts/token_embedding_norms                   histograms
    thoughts/top_tokens   text: for a few samples, each thought's step and its top-k tokens read as the
                          run's `legibility.read` says (the LM head on the thought, the logit lens; or
                          a sparse_readout projection's readout R), and on graphs the share of that
                          reading on the frontier; for sparse thoughts also the tokens it is mixed from
    projector (tag `thoughts`)   the thought vectors, labelled with the key content of the step each
                          one replaces (`coconut.data.step_keys.step_key`: for `<<a*b=c>>`, c); thoughts
                          j*c .. (j+1)*c - 1 of a sample replace its step j (c = latents per step).

Thought vectors are what the model actually fed, after the thought projection, recorded through
`ContinuousThoughtLM.run`'s thought hook. The training norms come from `last_thought_norms`, which
the model leaves on the device: the only host sync is at logging steps.
"""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import SparseVocabProjection
from coconut.data.graph import parse_graph
from coconut.data.step_keys import node_tokens, step_key
from coconut.eval.evaluator import thought_reading
from coconut.eval.frontier import score_thought
from coconut.eval.thought_hooks import ThoughtRecorder


def token_embedding_norms(model: ContinuousThoughtLM) -> torch.Tensor:
    """L2 norm of every row of the input embedding matrix, (V,) float32."""
    return model.lm.get_input_embeddings().weight.detach().float().norm(dim=-1)


def _field(text: str) -> str:
    """Text on one line without tabs: a projector metadata field (a TSV cell)."""
    return " ".join(text.split()) or "-"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return _field(text).replace("|", "\\|").replace("`", "'")


def _token(text: str) -> str:
    """A decoded token with its whitespace visible: `\\n` for a newline, `␣` for a space."""
    return repr(text)[1:-1].replace(" ", "␣").replace("|", "\\|").replace("`", "'") or "∅"


class ThoughtDiagnostics(L.Callback):
    def __init__(
        self,
        every_n_val_epochs: int = 1,
        num_samples: int = 64,
        top_k: int = 5,
        table_samples: int = 4,
        log_train_norms: bool = True,
    ):
        super().__init__()
        if every_n_val_epochs < 1 or num_samples < 1 or top_k < 1:
            raise ValueError("every_n_val_epochs, num_samples and top_k must be >= 1")
        self.every_n_val_epochs, self.num_samples, self.top_k = every_n_val_epochs, num_samples, top_k
        self.table_samples, self.log_train_norms = table_samples, log_train_norms
        self._validations = 0

    # -- training: the norm of the thoughts just fed, at logging steps only --------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.log_train_norms or not trainer.loggers or trainer.global_step % trainer.log_every_n_steps:
            return
        norms = pl_module.model.last_thought_norms  # (B, n_band), NaN off the latents; None: no thoughts
        if norms is None:
            return
        fed = norms[~norms.isnan()]
        if fed.numel() == 0:
            return
        scale = token_embedding_norms(pl_module.model).mean()
        mean, peak, ratio = torch.stack([fed.mean(), fed.max(), fed.mean() / scale]).tolist()  # the one sync
        metrics = {
            "thoughts/train_norm_mean": mean,
            "thoughts/train_norm_max": peak,
            "thoughts/train_norm_ratio": ratio,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    # -- validation: norms, histograms, decoded thoughts, projector ----------------------------
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if self._validations % self.every_n_val_epochs:
            return
        thoughts = self.validation_thoughts(trainer, pl_module)
        if thoughts is None:  # a stage without thoughts (chain of thought) or a method without any
            return
        vectors, labels, table = thoughts
        model: ContinuousThoughtLM = pl_module.model
        norms = vectors.norm(dim=-1)  # (N,)
        embedding_norms = token_embedding_norms(model).cpu()
        for name, value in (
            ("norm_mean", norms.mean()),
            ("norm_max", norms.max()),
            ("norm_ratio", norms.mean() / embedding_norms.mean()),
        ):
            pl_module.log(f"thoughts/{name}", float(value), add_dataloader_idx=False)
        tensorboard = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tensorboard is None:
            return
        writer, step = tensorboard.experiment, trainer.global_step
        writer.add_histogram("thoughts/norms", norms, step)
        writer.add_histogram("thoughts/token_embedding_norms", embedding_norms, step)
        writer.add_text("thoughts/top_tokens", table, step)
        writer.add_embedding(
            vectors,
            metadata=labels,
            metadata_header=["step_result", "thought", "step"],
            global_step=step,
            tag="thoughts",
        )

    @torch.no_grad()
    def validation_thoughts(self, trainer, pl_module) -> tuple[torch.Tensor, list[list[str]], str] | None:
        """The thoughts fed to the first validation sequences: vectors (N, D) float32 on the CPU,
        projector metadata rows [step result, thought index, step], and the markdown table."""
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        datamodule = trainer.datamodule
        n = min(self.num_samples, len(loader.dataset))
        batch = loader.collate_fn([loader.dataset[i] for i in range(n)])
        model: ContinuousThoughtLM = pl_module.model
        input_ids = batch["input_ids"].to(pl_module.device)
        recorder = ThoughtRecorder(input_ids, model.latent_token_id)
        hidden, _ = model.run(
            input_ids,
            batch["attention_mask"].to(pl_module.device),
            batch["position_ids"].to(pl_module.device),
            thought_hook=recorder,
        )
        per_row = recorder.per_row()  # the validation sequences are in dataset order: row i is record i
        if not any(len(r) for r in per_row):
            return None
        # The hidden state before each latent: what the projection made the thought from.
        sources = model.thoughts(input_ids, hidden, model.latent_token_id)
        sparse = isinstance(model.thought_projection, SparseVocabProjection)
        # Read as training's val/legibility/* reads: by R, a readout run's table shows what its
        # objective trains, where the LM head (untied on the Llama presets) shows noise.
        read = getattr(pl_module, "legibility_read", "lm_head")
        vectors_read, to_logits = thought_reading(model, read)
        c = datamodule.curriculum.c_thought
        records = datamodule.records["val"]
        graphs = [parse_graph(records[i].question) for i in range(min(self.table_samples, len(per_row)))]
        vectors, labels, lines = [], [], []
        for i, thoughts in enumerate(per_row):
            steps = records[i].steps
            graph = graphs[i] if i < len(graphs) else None
            if i < self.table_samples and len(thoughts):  # this sample's thoughts as read: (n_i, V)
                read_logits = to_logits(vectors_read(SimpleNamespace(thoughts=thoughts, sources=sources[i]))).float()
            for j, vector in enumerate(thoughts):
                step = steps[j // c] if j // c < len(steps) else ""
                key = step_key(step) if step else None
                vectors.append(vector)
                labels.append([_field(key or "-"), str(j), _field(step or "-")])
                if i < self.table_samples:
                    logits = read_logits[j]  # (V,)
                    cells = [
                        str(i),
                        str(j),
                        _cell(step or "-"),
                        _cell(key or "-"),
                        self._top_tokens(pl_module.tokenizer, logits),
                    ]
                    if sparse:
                        weights, ids = model.thought_projection.mixture(sources[i][j])
                        cells.append(self._tokens(pl_module.tokenizer, weights.tolist(), ids.tolist()))
                    if any(graphs):
                        cells.append(self._frontier(pl_module.tokenizer, logits, graph, j // c + 1))
                    lines.append("| " + " | ".join(cells) + " |")
        reading, read_by = ("logit lens", "the LM head")
        if read == "readout":
            reading, read_by = ("readout R", "the sparse_readout projection's readout R (legibility.read=readout)")
        columns = ["sample", "thought", "replaces step", "step result", f"{reading} (p)"]
        columns += ["mixed from (w)"] if sparse else []
        columns += ["frontier at its depth (mass on it)"] if any(graphs) else []
        header = (
            f"Thoughts of the first {min(self.table_samples, len(per_row))} validation samples (stage "
            f"{datamodule.current_stage()}): the top-{self.top_k} tokens of each thought through {read_by}"
            + (", and the tokens its sparse projection mixed" if sparse else "")
            + ".\n\n| "
            + " | ".join(columns)
            + " |\n|"
            + "---|" * len(columns)
            + "\n"
        )
        return torch.stack(vectors), labels, header + "\n".join(lines)

    def _top_tokens(self, tokenizer, logits: torch.Tensor) -> str:
        top = torch.softmax(logits, dim=-1).topk(min(self.top_k, logits.shape[-1]))
        return self._tokens(tokenizer, top.values.tolist(), top.indices.tolist())

    @staticmethod
    def _frontier(tokenizer, logits: torch.Tensor, graph, depth: int) -> str:
        """The graph's frontier at `depth` and the share of the thought's probability (as read: `logits`,
        (V,)) on the graph's nodes that falls on it (coconut.eval.frontier)."""
        if graph is None:
            return "-"
        frontiers = graph.frontiers(depth)
        within = set().union(*frontiers)
        score = score_thought(
            logits, frontiers[depth], within, graph.unreachable, graph.nodes, node_tokens(tokenizer, graph.nodes), depth
        )
        nodes = " ".join(sorted(frontiers[depth]))
        return f"{nodes} ({score.mass:.2f})" if score else "-"

    @staticmethod
    def _tokens(tokenizer, weights: list[float], ids: list[int]) -> str:
        return ", ".join(f"`{_token(tokenizer.decode([t]))}` {w:.3g}" for w, t in zip(weights, ids))
