"""Thought projections: each against a hand computation, gradients, configs, and train + rebuild end to end."""

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import tiny_lm
from hydra import compose, initialize_config_dir

from coconut import CONFIG_DIR
from coconut.commands.train import train
from coconut.core.errors import ConfigError
from coconut.core.model import ContinuousThoughtLM
from coconut.core.thought_projection import (
    LinearProjection,
    ProjectionConfig,
    SparseReadoutProjection,
    SparseVocabProjection,
    build_thought_projection,
    projection_config,
)
from coconut.data.collate import collate_training
from coconut.eval.evaluator import Answer, read_thoughts
from coconut.eval.thought_hooks import ThoughtRecorder
from coconut.training.lit_module import rebuild_from_checkpoint

LATENT, START, END, PAD = 61, 62, 63, 0
ROWS = [
    [5, 6, 7, 8, START, LATENT, LATENT, LATENT, END, 9, 10, 11],
    [5, 6, START, LATENT, END, 12, 13, 14, 15],
    [8, 9, 10, 24, 25],
]


def padded_batch():
    return collate_training(ROWS, ROWS, LATENT, PAD)


def logits_of(model: ContinuousThoughtLM) -> torch.Tensor:
    batch = padded_batch()
    return model(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).logits


def hand_mixture(lm, hidden: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """sum_i softmax(top-k logits / T)_i * E[token_i], written out with a sort."""
    logits = lm.get_output_embeddings()(hidden)  # (N, V)
    order = logits.argsort(dim=-1, descending=True)[:, :k]  # (N, k)
    weights = torch.softmax(logits.gather(-1, order) / temperature, dim=-1)
    table = lm.get_input_embeddings().weight
    return torch.stack([sum(w * table[t] for w, t in zip(ws, ts)) for ws, ts in zip(weights, order)])


@pytest.mark.parametrize("spec", [None, "identity", {"name": "identity"}])
def test_identity_reproduces_the_paper_method_exactly(family, spec):
    lm = tiny_lm(family).eval()
    plain = logits_of(ContinuousThoughtLM(lm, LATENT))
    projected = ContinuousThoughtLM(lm, LATENT, build_thought_projection(spec, lm))
    torch.testing.assert_close(logits_of(projected), plain, atol=0, rtol=0)
    assert projection_config(projected.thought_projection) == {"name": "identity"}


def test_linear_starts_as_the_identity_and_adds_the_only_parameters(family):
    lm = tiny_lm(family).eval()
    plain = logits_of(ContinuousThoughtLM(lm, LATENT))
    model = ContinuousThoughtLM(lm, LATENT, build_thought_projection("linear", lm))
    torch.testing.assert_close(logits_of(model), plain, atol=0, rtol=0)
    d = lm.config.hidden_size
    extra = {k: v.shape for k, v in model.state_dict().items() if k.startswith("thought_projection.")}
    assert extra == {"thought_projection.delta.weight": (d, d), "thought_projection.delta.bias": (d,)}
    for spec in ("identity", "sparse_vocab"):
        other = ContinuousThoughtLM(lm, LATENT, build_thought_projection(spec, lm))
        assert not [k for k in other.state_dict() if k.startswith("thought_projection.")]
    torch.manual_seed(0)
    build_thought_projection("linear", lm)
    drawn = torch.rand(3)
    torch.manual_seed(0)
    # No random draw: a run's stage 0 (no thoughts) trains the same model whatever its projection.
    assert torch.equal(drawn, torch.rand(3))
    # Once trained it is a different map (the parameters are used).
    with torch.no_grad():
        model.thought_projection.delta.weight.normal_()
    assert not torch.allclose(logits_of(model), plain)


@pytest.mark.parametrize("k,temperature", [(3, 0.7), (1, 1.0), (64, 2.0)])
def test_sparse_vocab_thought_is_the_weighted_sum_of_the_top_k_embeddings(family, k, temperature):
    lm = tiny_lm(family).eval()
    projection = build_thought_projection({"name": "sparse_vocab", "k": k, "temperature": temperature}, lm)
    hidden = torch.randn(5, lm.config.hidden_size) * 3
    with torch.no_grad():
        torch.testing.assert_close(projection(hidden), hand_mixture(lm, hidden, k, temperature), atol=1e-6, rtol=1e-5)
        # Shape-agnostic: the model calls it on (B, 1, D).
        torch.testing.assert_close(projection(hidden[:, None])[:, 0], projection(hidden), atol=0, rtol=0)


def test_the_model_feeds_the_sparse_vocab_mixture_of_the_previous_hidden_state(family):
    lm = tiny_lm(family).eval()
    model = ContinuousThoughtLM(lm, LATENT, build_thought_projection({"name": "sparse_vocab", "k": 3}, lm))
    batch = padded_batch()
    recorder = ThoughtRecorder(batch["input_ids"], LATENT)
    with torch.no_grad():
        hidden, _ = model.run(batch["input_ids"], batch["attention_mask"], batch["position_ids"], thought_hook=recorder)
        before = model.thoughts(batch["input_ids"], hidden, LATENT)  # hidden states before each latent
        for fed, source in zip(recorder.per_row(), before):
            if len(source):
                torch.testing.assert_close(fed, hand_mixture(lm, source, 3, 1.0), atol=1e-6, rtol=1e-5)
    # The recorded norms are those of the fed thoughts, NaN where a band column held no latent.
    norms = model.last_thought_norms
    assert norms.shape == (3, 3)  # three rows, a band of three columns
    assert norms[2].isnan().all() and norms[1].isnan().sum() == 2
    fed_norms = torch.cat([r.norm(dim=-1) for r in recorder.per_row() if len(r)])
    torch.testing.assert_close(norms[~norms.isnan()].sort().values, fed_norms.sort().values)


def test_straight_through_k1_feeds_exactly_the_argmax_token_embedding(family):
    lm = tiny_lm(family).eval()
    projection = build_thought_projection({"name": "sparse_vocab", "k": 1, "mode": "straight_through"}, lm)
    hidden = torch.randn(6, lm.config.hidden_size)
    with torch.no_grad():
        argmax = lm.get_output_embeddings()(hidden).argmax(-1)
        assert torch.equal(projection(hidden), lm.get_input_embeddings().weight[argmax])


def test_straight_through_feeds_hard_weights_and_passes_the_softmax_gradient(family):
    lm = tiny_lm(family).eval()
    st = build_thought_projection({"name": "sparse_vocab", "k": 3, "mode": "straight_through"}, lm)
    soft = build_thought_projection({"name": "sparse_vocab", "k": 3, "mode": "softmax"}, lm)
    hidden = torch.randn(4, lm.config.hidden_size, requires_grad=True)
    weights, ids = st.mixture(hidden)
    assert torch.equal(weights.detach(), torch.full((4, 3), 1 / 3))  # forward: 1/k on each top-k token
    (g_st,) = torch.autograd.grad((weights * torch.arange(3.0)).sum(), hidden)
    soft_weights, soft_ids = soft.mixture(hidden)
    assert torch.equal(ids, soft_ids)
    (g_soft,) = torch.autograd.grad((soft_weights * torch.arange(3.0)).sum(), hidden)
    torch.testing.assert_close(g_st, g_soft)  # backward: the softmax's gradient
    assert g_st.abs().sum() > 0


def test_gradients_flow_through_the_mixture_weights_into_the_live_tied_weights(family):
    lm = tiny_lm(family)
    projection = build_thought_projection({"name": "sparse_vocab", "k": 4, "temperature": 0.5}, lm)
    hidden = torch.randn(3, lm.config.hidden_size)
    target = torch.randn(3, lm.config.hidden_size)
    ((projection(hidden) - target) ** 2).sum().backward()
    got = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
    lm.zero_grad()
    ((hand_mixture(lm, hidden, 4, 0.5) - target) ** 2).sum().backward()
    want = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() and got
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5, msg=name)
    head, table = lm.get_output_embeddings().weight, lm.get_input_embeddings().weight
    if family == "gpt2":
        assert head is table  # still tied: the projection copied nothing
    else:
        # Untied, the head reaches the thought only through the mixture weights.
        assert head.grad.abs().sum() > 0


def test_sparse_readout_is_exactly_k_weighted_token_embeddings_picked_by_its_own_readout(family):
    lm = tiny_lm(family).eval()
    projection = build_thought_projection({"name": "sparse_readout", "k": 3, "temperature": 0.5}, lm)
    with torch.no_grad():
        projection.readout.copy_(torch.randn_like(projection.readout))  # R now differs from the LM head
    hidden = torch.randn(5, lm.config.hidden_size)
    with torch.no_grad():
        scores = hidden @ projection.readout.T  # (5, V)
        order = scores.argsort(dim=-1, descending=True)[:, :3]
        weights = torch.softmax(scores.gather(-1, order) / 0.5, dim=-1)
        table = lm.get_input_embeddings().weight
        by_hand = torch.stack([sum(w * table[t] for w, t in zip(ws, ts)) for ws, ts in zip(weights, order)])
        torch.testing.assert_close(projection(hidden), by_hand, atol=1e-6, rtol=1e-5)
        # Not the LM head's tokens: those would be sparse_vocab's.
        assert not torch.equal(projection.mixture(hidden)[1], lm.get_output_embeddings()(hidden).topk(3).indices)


class TokenNames:
    """A tokenizer's decode, enough for read_thoughts: token i is written t<i>."""

    def decode(self, ids: list[int]) -> str:
        return f"t{ids[0]}"


def test_reading_by_the_readout_gives_each_sparse_readout_thought_its_own_tokens(family):
    lm = tiny_lm(family).eval()
    projection = build_thought_projection({"name": "sparse_readout", "k": 3}, lm)
    with torch.no_grad():
        projection.readout.copy_(torch.randn_like(projection.readout))  # R now differs from the LM head
    model = ContinuousThoughtLM(lm, LATENT, projection)
    batch = padded_batch()
    recorder = ThoughtRecorder(batch["input_ids"], LATENT, projection=projection)
    with torch.no_grad():
        hidden, _ = model.run(batch["input_ids"], batch["attention_mask"], batch["position_ids"], thought_hook=recorder)
    recorder.close()
    assert not projection._forward_pre_hooks  # the recorder leaves the model as it found it
    before = model.thoughts(batch["input_ids"], hidden, LATENT)  # the hidden state before each latent
    rows = zip(recorder.per_row(), recorder.sources_per_row(), before)
    for i, (fed, sources, source) in enumerate(rows):
        answer = Answer(i, "", "", False, 1, 1, len(fed), fed, sources)
        if not len(source):
            assert read_thoughts(model, TokenNames(), answer, read="readout") == []
            continue
        torch.testing.assert_close(sources, source)  # what each thought was projected from
        with torch.no_grad():
            torch.testing.assert_close(fed, projection(source))
            mixed = projection.mixture(source)[1].tolist()  # (n, 3): the tokens each thought is mixed from
        read = read_thoughts(model, TokenNames(), answer, k=3, read="readout")
        assert read == [[f"t{token}" for token in row] for row in mixed]


def test_sparse_readout_starts_as_sparse_vocab_and_its_gradient_reaches_r_not_the_head(family):
    lm = tiny_lm(family)
    readout = build_thought_projection({"name": "sparse_readout", "k": 4}, lm)
    vocab = build_thought_projection({"name": "sparse_vocab", "k": 4}, lm)
    hidden = torch.randn(3, lm.config.hidden_size)
    torch.testing.assert_close(readout(hidden), vocab(hidden), atol=1e-6, rtol=1e-5)  # R = the head at the start
    head = lm.get_output_embeddings().weight
    assert readout.readout is not head and readout.readout.data_ptr() != head.data_ptr()  # a copy, not a tie
    ((readout(hidden) - torch.randn(3, lm.config.hidden_size)) ** 2).sum().backward()
    assert readout.readout.grad is not None and readout.readout.grad.abs().sum() > 0
    model = ContinuousThoughtLM(lm, LATENT, readout)
    assert {k for k in model.state_dict() if k.startswith("thought_projection.")} == {"thought_projection.readout"}


def test_the_config_defaults_equal_the_shipped_yaml_files():
    folder = Path(CONFIG_DIR) / "model" / "thought_projection"
    assert {p.stem for p in folder.glob("*.yaml")} == {"identity", "sparse_vocab", "linear", "sparse_readout", "mlp"}
    for path in folder.glob("*.yaml"):
        shipped = yaml.safe_load(path.read_text())
        assert ProjectionConfig.parse(shipped) == ProjectionConfig.parse(path.stem)  # the shell's short form
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        assert compose("train").model.thought_projection.name == "identity"
        assert compose("train", overrides=["model.thought_projection=linear"]).model.thought_projection == "linear"
        cfg = compose(
            "train",
            overrides=["model=llama_tiny", "model/thought_projection=sparse_vocab", "model.thought_projection.k=2"],
        )
        assert ProjectionConfig.parse(cfg.model.thought_projection).k == 2


@pytest.mark.parametrize(
    "spec,field",
    [
        ("dense", "model.thought_projection="),
        ({"name": "sparse_vocab", "k": 0}, "model.thought_projection.k"),
        ({"name": "sparse_vocab", "mode": "gumbel"}, "model.thought_projection.mode"),
        ({"name": "sparse_vocab", "temperature": 0}, "model.thought_projection.temperature"),
        ({"name": "sparse_vocab", "k": 1000}, "model.thought_projection.k=1000"),
        ({"name": "linear", "rank": 4}, "unknown keys ['rank']"),
    ],
)
def test_bad_configs_name_the_key(spec, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        build_thought_projection(spec, tiny_lm("gpt2"))


# -- end to end ----------------------------------------------------------------------------------


def probe(latent_id: int) -> torch.Tensor:
    """A sequence with two thoughts, for comparing a trained model with its rebuild."""
    return torch.tensor([[5, 6, 7, latent_id, latent_id, 8, 9]])


class KeepFinalLogits(L.Callback):
    """Test-only: the trained model's logits on PROBE at the end of fit, by run folder."""

    logits: dict[str, torch.Tensor] = {}

    def __init__(self, key: str):
        self.key = key

    def on_fit_end(self, trainer, pl_module):
        model = pl_module.model.eval()
        with torch.no_grad():
            KeepFinalLogits.logits[self.key] = model(probe(model.latent_token_id)).logits


@pytest.mark.parametrize(
    "overrides",
    [
        ["model/thought_projection=identity"],
        ["model/thought_projection=sparse_vocab", "model.thought_projection.k=2"],
        ["model.thought_projection=linear"],
        ["model/thought_projection=sparse_readout", "model.thought_projection.k=2", "legibility.weight=0.3"],
    ],
    ids=["identity", "sparse_vocab", "linear", "sparse_readout"],
)
def test_train_each_projection_and_rebuild_from_the_checkpoint(tmp_path, overrides):
    key = str(tmp_path)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "debug=fast",
                f"paths.output_dir={tmp_path}",
                "curriculum.max_latent_stage=1",
                "trainer.max_epochs=2",  # stage 0, then stage 1 with thoughts
                "test=false",
                "callbacks.thought_diagnostics=null",
                "+callbacks.keep._target_=test_thought_projection.KeepFinalLogits",
                f"+callbacks.keep.key={key}",
                *overrides,
            ],
        )
    metrics = train(cfg)
    assert "val/acc" in metrics
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    name = overrides[0].split("=")[1]
    stored = saved["coconut"]["thought_projection"]
    assert stored["name"] == name
    model, _ = rebuild_from_checkpoint(saved)
    assert projection_config(model.thought_projection) == stored
    if name == "sparse_vocab":
        assert isinstance(model.thought_projection, SparseVocabProjection) and stored["k"] == 2
        assert model.thought_projection._lm is model.lm
    if name == "sparse_readout":
        assert isinstance(model.thought_projection, SparseReadoutProjection) and stored["k"] == 2
        readout = saved["state_dict"]["model.thought_projection.readout"]
        assert not torch.equal(readout, saved["state_dict"]["model.lm.lm_head.weight"])  # R trained apart
        torch.testing.assert_close(model.thought_projection.readout, readout, atol=0, rtol=0)
    if name == "linear":
        assert isinstance(model.thought_projection, LinearProjection)
        assert saved["state_dict"]["model.thought_projection.delta.weight"].abs().sum() > 0  # it trained
    with torch.no_grad():
        rebuilt = model.eval()(probe(model.latent_token_id)).logits
    torch.testing.assert_close(rebuilt, KeepFinalLogits.logits.pop(key), atol=0, rtol=0)
