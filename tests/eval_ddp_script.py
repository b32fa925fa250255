"""Run by tests/test_eval_ddp.py: one evaluation of CKPT through Lightning on DEVICES CPU processes
(gloo), the report and the sample rows written by rank 0 into OUT/result.json.

    python tests/eval_ddp_script.py CKPT OUT DEVICES

Lightning's DDP launcher runs this script again for every other rank; every rank evaluates, rank 0 writes.
"""

import json
import sys
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir

from coconut.cli.evaluate import prepare_questions
from coconut.cli.train import CONFIG_DIR
from coconut.eval.evaluator import evaluate
from coconut.training.predict import lightning_answerer

ckpt, out, devices = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    # 16 questions in 4 batches: 2 batches a process.
    overrides = [f"ckpt_path={ckpt}", f"paths.output_dir={out / 'unused'}", "batch_size=4", "cpu_threads=1"]
    cfg = compose(config_name="eval", overrides=overrides)
questions = prepare_questions(cfg)
loaded = questions.loaded
trainer = L.Trainer(
    accelerator="cpu",
    devices=devices,
    strategy="ddp" if devices > 1 else "auto",
    use_distributed_sampler=False,  # lightning_answerer splits the batches itself
    inference_mode=False,  # the recorded thoughts are read again outside predict
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    default_root_dir=out,
)
options = {
    "answer_kind": questions.data_cfg.answer_kind,
    "max_new_tokens": questions.max_new_tokens,
    "thought_ids": (questions.ids.latent, questions.ids.pause),
}
answerer = lightning_answerer(trainer, loaded.model, loaded.tokenizer, questions.loader, questions.records, **options)
evaluation = evaluate(
    loaded.model,
    loaded.tokenizer,
    None,
    questions.records,
    method=loaded.method,
    curriculum=loaded.curriculum,
    stage=loaded.stage,
    skipped=questions.skipped,
    read=questions.read,
    answerer=answerer,
    **options,
)
if trainer.global_rank == 0:
    result = {"report": evaluation.report.to_dict(), "rows": evaluation.rows, "world": trainer.world_size}
    (out / "result.json").write_text(json.dumps(result))
