"""Every experiment preset composes and trains one step on a tiny model; the paper's GSM8K recipe
(CoT run, then COCONUT from its checkpoint at stage 1) runs end to end.

The presets' datasets are small generated files written where `coconut-data` would put them
(`paths.data_dir/<name>/{train,valid,test}.json`), so the presets' own paths are what is read.
"""

import random
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, needs_shared_data
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coconut import CONFIG_DIR
from coconut.commands.train import train
from coconut.core.curriculum import Curriculum
from coconut.core.errors import ConfigError
from coconut.data.records import Record
from coconut.data.sources import write_records
from coconut.data.synthetic import generate_arithmetic

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
GRAPH_METHODS = ("coconut", "cot", "no_cot", "pause_as_thought")
# Shrink any preset to seconds on a CPU: a tiny GPT-2 from scratch, one training batch.
TINY = [
    "model=gpt2_tiny",
    "trainer=cpu",
    "debug=fast",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "test=false",
    "logger={}",
    "data.max_new_tokens=8",
    "gate.min_val_acc=null",  # one batch learns nothing: a stage-0 preset's gate would stop it
]


def statements(n: int, seed: int, true_false: bool) -> list[Record]:
    """ProsQA / ProntoQA-shaped records: facts as steps, a statement (or True/False) as answer."""
    rng = random.Random(seed)
    names, kinds = ["Tom", "Sally", "Alex"], ["wumpus", "lempus", "yimpus", "gerpus"]
    records = []
    for _ in range(n):
        name, a, b, c = rng.choice(names), *rng.sample(kinds, 3)
        steps = (f"{name} is a {a}.", f"Every {a} is a {b}.")
        if true_false:
            records.append(Record(f"{' '.join(steps)} True or false: {name} is a {b}.", steps, "True"))
        else:
            records.append(Record(f"{' '.join(steps)} Is {name} a {b} or {c}?", steps, f"{name} is a {b}."))
    return records


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    makers = {
        "gsm8k_aug": lambda n, seed: generate_arithmetic(n, seed=seed),
        "prosqa": lambda n, seed: statements(n, seed, true_false=False),
        "prontoqa": lambda n, seed: statements(n, seed, true_false=True),
    }
    for name, make in makers.items():
        for offset, (split, n) in enumerate((("train", 64), ("valid", 16), ("test", 16))):
            write_records(make(n, offset), root / name / f"{split}.json")
    return root


def preset_cfg(preset: str, output_dir: Path, data_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                f"experiment={preset}",
                *TINY,
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={output_dir}",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def cot_run(tmp_path_factory, data_dir) -> Path:
    """The first half of the GSM8K recipe: experiment=gsm8k_cot, shrunk."""
    run = tmp_path_factory.mktemp("gsm8k_cot")
    train(preset_cfg("gsm8k_cot", run, data_dir))
    return run


@pytest.fixture(scope="module")
def graph_stage0_run(tmp_path_factory, data_dir) -> Path:
    """The stage-0 run every graph method continues from: experiment=graph_stage0, shrunk."""
    run = tmp_path_factory.mktemp("graph_stage0")
    train(preset_cfg("graph_stage0", run, data_dir))
    return run


@pytest.fixture(scope="module")
def prosqa_warmup_run(tmp_path_factory, data_dir) -> Path:
    """The first ProsQA CPU preset (copies and branch-free graphs, from scratch), shrunk."""
    run = tmp_path_factory.mktemp("prosqa_cpu_warmup")
    train(preset_cfg("prosqa_cpu_warmup", run, data_dir))
    return run


@pytest.fixture(scope="module")
def prosqa_stage0_run(tmp_path_factory, data_dir, prosqa_warmup_run) -> Path:
    """The ProsQA chain of thought every ProsQA method continues from, shrunk."""
    run = tmp_path_factory.mktemp("prosqa_cpu_stage0")
    train(preset_cfg("prosqa_cpu_stage0", run, data_dir, f"init_from={prosqa_warmup_run}/checkpoints/last.ckpt"))
    return run


# Presets that continue a stage-0 run, and the fixture that made it.
GRAPH_CONTINUING = [f"graph_{m}" for m in (*GRAPH_METHODS, "coconut_frontier")]
PROSQA_METHODS = ("coconut", "cot", "no_cot", "pause_as_thought", "no_curriculum")
PROSQA_CONTINUING = [f"prosqa_cpu_{m}" for m in PROSQA_METHODS]
CONTINUES = {
    "gsm8k_coconut": "cot_run",
    **dict.fromkeys(GRAPH_CONTINUING, "graph_stage0_run"),
    "prosqa_cpu_stage0": "prosqa_warmup_run",
    **dict.fromkeys(PROSQA_CONTINUING, "prosqa_stage0_run"),
}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_one_step(preset, tmp_path, data_dir, request):
    start = CONTINUES.get(preset)
    extra = [f"init_from={request.getfixturevalue(start)}/checkpoints/last.ckpt"] if start else []
    metrics = train(preset_cfg(preset, tmp_path, data_dir, *extra))
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1


def test_paper_presets_say_what_the_paper_ran():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        gsm = compose("train", overrides=["experiment=gsm8k_coconut"])
        prosqa = compose("train", overrides=["experiment=prosqa_coconut"])
        cot = compose("train", overrides=["experiment=gsm8k_cot"])
    c = gsm.curriculum
    assert (c.c_thought, c.epochs_per_stage, c.max_latent_stage, c.pad_latent_to_max) == (2, 3, 3, True)
    assert gsm.curriculum.start_stage == 1 and gsm.trainer.max_epochs + 3 == 25  # 3 stage-0 epochs done by the CoT run
    assert (prosqa.curriculum.c_thought, prosqa.curriculum.epochs_per_stage) == (1, 5)
    assert (prosqa.curriculum.max_latent_stage, prosqa.trainer.max_epochs) == (6, 50)
    for cfg in (gsm, prosqa, cot):
        assert cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.accumulate_grad_batches == 128
        assert cfg.optimizer.lr == 1e-4 and cfg.model.pretrained == "openai-community/gpt2"


def test_coconut_from_a_cot_checkpoint_loads_its_weights_and_starts_at_stage_1(tmp_path, data_dir, cot_run):
    cot = torch.load(cot_run / "checkpoints" / "last.ckpt", weights_only=False)
    # A learning rate far below float32 resolution: after one step the weights are still (to 1e-12)
    # those the run started from, where a model built afresh would differ by ~1e-2.
    cfg = preset_cfg(
        "gsm8k_coconut", tmp_path, data_dir, f"init_from={cot_run}/checkpoints/last.ckpt", "optimizer.lr=1e-30"
    )
    metrics = train(cfg)
    assert metrics["curriculum/stage"] == 1.0  # the first (and only) epoch
    coconut = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    tokenizer = "tokenizer.json"  # the vocabulary and merges (tokenizer_config.json gains defaults on a reload)
    assert coconut["coconut"]["tokenizer_files"][tokenizer] == cot["coconut"]["tokenizer_files"][tokenizer]
    weights = {k: v for k, v in cot["state_dict"].items() if k.startswith("model.")}
    assert weights
    for key, value in weights.items():
        torch.testing.assert_close(coconut["state_dict"][key], value, rtol=1e-6, atol=1e-12)
    # ... and with a learning rate the same start moves: the loaded weights were trained on.
    moved = train(preset_cfg("gsm8k_coconut", tmp_path / "lr", data_dir, f"init_from={cot_run}/checkpoints/last.ckpt"))
    assert "val/acc" in moved
    after = torch.load(tmp_path / "lr" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not all(torch.equal(after[k], v) for k, v in weights.items())


@pytest.mark.parametrize("preset", ["gsm8k_coconut", *GRAPH_CONTINUING, *PROSQA_CONTINUING])
def test_skipping_stage_zero_without_a_checkpoint_is_refused(preset, tmp_path, data_dir):
    # graph_cot and graph_no_cot too: from scratch they would train a different comparison, silently.
    with pytest.raises(ConfigError, match="init_from=<checkpoint>"):
        train(preset_cfg(preset, tmp_path, data_dir))


def test_every_graph_method_continues_stage_zero_for_the_same_updates():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        chains = compose("train", overrides=["experiment=graph_stage0_chains"])
        stage0 = compose("train", overrides=["experiment=graph_stage0"])
        methods = [compose("train", overrides=[f"experiment=graph_{m}"]) for m in GRAPH_METHODS]
    assert stage0.method.name == "cot" and stage0.curriculum.start_stage == 0
    # Stage 0 is two runs of one epoch: graph_stage0_chains from scratch, then graph_stage0 from it.
    assert chains.init_from is None and chains.data.generator.distractor_branches == 0
    assert chains.trainer.max_epochs == stage0.trainer.max_epochs == 1
    for key in ("data.sizes", "data.generator.depth", "data.batch_size", "model", "optimizer.lr", "method"):
        assert OmegaConf.select(chains, key) == OmegaConf.select(stage0, key), key
    for cfg in methods:
        assert cfg.curriculum.start_stage == 1
        for key in ("trainer.max_epochs", "optimizer.lr", "data.sizes", "data.generator", "data.batch_size", "model"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(methods[0], key), key
        for key in ("data.sizes", "data.generator.depth", "data.batch_size", "model", "optimizer.lr"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(stage0, key), key
        # Stage 0 adds graphs without a branch, where a from-scratch model first forms the lookup.
        assert cfg.data.generator.distractor_branches == 1 and 1 in stage0.data.generator.distractor_branches


def test_every_prosqa_method_continues_stage_zero_for_the_same_updates():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        warmup = compose("train", overrides=["experiment=prosqa_cpu_warmup"])
        stage0 = compose("train", overrides=["experiment=prosqa_cpu_stage0"])
        methods = {m: compose("train", overrides=[f"experiment=prosqa_cpu_{m}"]) for m in PROSQA_METHODS}
    assert warmup.init_from is None and stage0.method.name == "cot" and stage0.data.encoding == "compact"
    # Every run holds its last stage to a bar before the next builds on it (coconut/training/gate.py).
    assert warmup.gate.min_val_acc and stage0.gate.monitor == "val/legibility/text_hops_valid"
    for name, cfg in methods.items():
        assert cfg.method.name == name and cfg.curriculum.start_stage == 1 and cfg.data.name == "prosqa_generated"
        for key in ("trainer.max_epochs", "optimizer", "scheduler", "data", "model", "curriculum", "legibility"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(methods["coconut"], key), (name, key)
        assert cfg.model.architecture == stage0.model.architecture == warmup.model.architecture
    # The final stage has every hop of ProsQA's deepest questions (6) latent.
    coconut = methods["coconut"].curriculum
    final = Curriculum(
        epochs_per_stage=coconut.epochs_per_stage, max_latent_stage=coconut.max_latent_stage, start_stage=1
    )
    assert final.stage_for_epoch(methods["coconut"].trainer.max_epochs - 1) == coconut.max_latent_stage + 1 == 7


def test_graph_coconut_ends_with_every_hop_latent_after_equal_stages():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=graph_coconut"])
    curriculum = Curriculum(
        epochs_per_stage=cfg.curriculum.epochs_per_stage,
        max_latent_stage=cfg.curriculum.max_latent_stage,
        start_stage=cfg.curriculum.start_stage,
    )
    stages = [curriculum.stage_for_epoch(epoch) for epoch in range(cfg.trainer.max_epochs)]
    # The last epochs train with no written hop left (stage = depth), and no latent stage is cut short.
    assert stages[-1] >= cfg.data.generator.depth
    assert len({stages.count(stage) for stage in set(stages)}) == 1


def test_graph_coconut_frontier_is_the_measured_recipe_and_nothing_else():
    # docs/results.md's 0.947 came from graph_coconut as it was then (markers, untied, constant rate)
    # with two thoughts per hop and lambda = 1: the preset must stay that, whatever graph_coconut becomes.
    measured_then = ["method.markers=true", "model.architecture.tie_word_embeddings=false", "scheduler=null"]
    measured_then += ["scheduler_interval=step", "curriculum.c_thought=2", "legibility.weight=1"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        preset = compose("train", overrides=["experiment=graph_coconut_frontier"])
        measured = compose("train", overrides=["experiment=graph_coconut", *measured_then])
    assert preset.curriculum.c_thought == 2 and preset.legibility.weight == 1.0 and preset.method.markers
    assert OmegaConf.to_container(preset) == OmegaConf.to_container(measured)


def test_a_missing_prepared_file_names_the_prepare_command(tmp_path):
    # paths.data_dir is not the default data root: the command that writes there says --out.
    with pytest.raises(ConfigError, match=f"run `coconut-data prosqa --out {tmp_path / 'empty'}` first"):
        train(preset_cfg("prosqa_coconut", tmp_path / "run", tmp_path / "empty"))


def test_init_from_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, data_dir):
    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ConfigError, match="not a coconut-train checkpoint"):
        train(preset_cfg("gsm8k_coconut", tmp_path / "run", data_dir, f"init_from={bogus}"))


@needs_shared_data
@pytest.mark.parametrize("preset,folder", [("prosqa_coconut", "prosqa"), ("prontoqa_coconut", "prontoqa")])
def test_preset_reads_the_published_benchmark_file(preset, folder, tmp_path):
    """The real ProsQA / ProntoQA validation files (statement answers, long questions) through the
    preset, one step; the tiny model from scratch is trained on a slice of them."""
    path = SHARED_DATA / folder / f"{folder}_valid.json"
    cfg = preset_cfg(
        preset,
        tmp_path,
        tmp_path / "unused",
        *(f"data.{split}_path={path}" for split in ("train", "val", "test")),
        "data.limit={train: 32, val: 8, test: 8}",
        "model.architecture.n_positions=1024",  # ProsQA questions run to ~400 tokens of a small vocabulary
    )
    assert cfg.data.answer_kind == "statement"
    assert 0.0 <= train(cfg)["val/acc"] <= 1.0
