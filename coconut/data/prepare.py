"""`coconut-data`: one prepare step per benchmark, writing the contract format that training reads.

    coconut-data gsm8k_aug                    # download (iCoT raw files), convert, write data/gsm8k_aug/
    coconut-data gsm8k_aug --source DIR       # convert files already on disk (DIR or one file)
    coconut-data multiplication --digits 5    # generate (iCoT format, seeded) -> data/multiplication_5x5/
    coconut-data arithmetic                   # the built-in generator, as conf/data/arithmetic.yaml sets it
    coconut-data prosqa --source prosqa_valid.json --split train --holdout 50 50
                                              # one file -> train + the last 50 / 50 as valid / test
    coconut-data svamp --source SVAMP.json    # an evaluation-only benchmark: test.json only, no steps
    coconut-data prosqa --generate 17886      # ProsQA-distributed training records, generated offline,
                                              # in the published format -> data/prosqa_generated/train.json

Every benchmark ends as `<out>/<name>/{train,valid,test}.json` (a JSON list of `{question, steps,
answer}`, written by `sources.write_records`) plus `manifest.json`: counts, where each split came from,
and sha256 of the raw input and of the written file. Raw files are read by `sources.load_records`, the
same reader `data=files` uses at training time, so a prepared file and a raw file give the same records.

Downloads are the files the papers used, from their public repositories (pinned commits where the
authors link one). A machine without internet gets one message naming the URL that failed, the files to
fetch by hand, and the `--source` command that converts them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import urllib.error
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import urlopen

from coconut import CONFIG_DIR
from coconut.core.errors import DISK_FULL, OutputError, UserInputError, writable_folder
from coconut.data.records import DataError, Record, parse_record
from coconut.data.sources import read_converted, write_records

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """`$PROJECT_ROOT` if set; else the checkout the package runs from (an editable install), so that
    data and outputs land in one place whatever the current folder; else (a wheel installed in
    site-packages) the current folder. Absolute."""
    if os.environ.get("PROJECT_ROOT"):
        return Path(os.environ["PROJECT_ROOT"]).absolute()
    return ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd().absolute()


def data_root() -> Path:
    """The one data root: where coconut-data writes and conf/data/<benchmark>.yaml look (paths.data_dir)."""
    return project_root() / "data"


SPLITS = ("train", "valid", "test")

# The GSM8K-Aug files the COCONUT README links (da03/Internalize_CoT_Step_by_Step, pinned commit).
_ICOT = "https://raw.githubusercontent.com/da03/Internalize_CoT_Step_by_Step/e06a32ee5e4cd117171daeb4755d2a97ece62761"
_GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data"
_COCONUT = "https://raw.githubusercontent.com/facebookresearch/coconut/main/data"
# The evaluation-only math benchmarks (coconut/data/benchmarks.py), from their authors' repositories.
_GSM_HARD = "https://huggingface.co/datasets/reasoning-machines/gsm-hard/resolve/main/gsmhardv2.jsonl"
_SVAMP = "https://raw.githubusercontent.com/arkilpatel/SVAMP/main/SVAMP.json"
_MULTIARITH = (
    "https://raw.githubusercontent.com/kojima-takeshi188/zero_shot_cot/main/dataset/MultiArith/MultiArith.json"
)
_ASDIV = "https://raw.githubusercontent.com/chaochun/nlu-asdiv-dataset/master/dataset/ASDiv.xml"
# GSM8K ships no validation split: the last problems of train.jsonl are held out as `valid`.
GSM8K_VALID_SIZE = 500
# ProntoQA as preprocessed by facebookresearch/coconut (preprocessing/prontoqa.py): the first 9000
# problems of the generated 5-hop file train, the next 200 validate, the rest test.
PRONTOQA_TRAIN, PRONTOQA_VALID = 9000, 200
PRONTOQA_RAW = "5hop_0shot_random.json"
PRONTOQA_HOWTO = (
    "ProntoQA is generated, not downloaded: clone https://github.com/asaparov/prontoqa (commit f0145b86), "
    "run `python run_experiment.py --model-name json --model-size dummy --ordering random --num-trials 10000 "
    "--few-shot-examples 0 --ontology fictional --min-hops 5 --max-hops 5 --hops-skip 1`"
)


class DownloadError(UserInputError):
    """A download failed (usually: no internet). The message says what to fetch by hand."""


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark's raw files come from and what they are called on disk.

    `files[split]` lists the file names that hold `split`, preferred first; `urls[name]` says where
    to download a file named in `files`. `format` is the `load_records` format of the raw files.
    `eval_only`: a test set without reasoning steps (one file, the test split), never trained on.
    """

    name: str
    format: str
    files: dict[str, tuple[str, ...]]
    urls: dict[str, str] = field(default_factory=dict)
    about: str = ""
    eval_only: bool = False


BENCHMARKS = {
    "gsm8k_aug": Benchmark(
        "gsm8k_aug",
        "gsm8k_aug",
        {"train": ("train.txt",), "valid": ("valid.txt",), "test": ("test.txt",)},
        {f"{s}.txt": f"{_ICOT}/data/gsm8k/{s}.txt" for s in SPLITS},
        "GSM8K-Aug (385k train), the COCONUT paper's GSM8K setting; iCoT line format",
    ),
    "gsm8k": Benchmark(
        "gsm8k",
        "gsm8k",
        {"train": ("train.jsonl",), "test": ("test.jsonl",)},
        {f"{s}.jsonl": f"{_GSM8K}/{s}.jsonl" for s in ("train", "test")},
        f"GSM8K (openai/grade-school-math); valid = the last {GSM8K_VALID_SIZE} problems of train.jsonl",
    ),
    "prosqa": Benchmark(
        "prosqa",
        "prosqa",
        {s: (f"prosqa_{s}.json", f"{s}.json") for s in SPLITS},
        {f"prosqa_{s}.json": f"{_COCONUT}/prosqa_{s}.json" for s in SPLITS},
        "ProsQA, COCONUT's graph-reasoning set (facebookresearch/coconut data/)",
    ),
    "prontoqa": Benchmark(
        "prontoqa",
        "prontoqa",
        {s: (f"prontoqa_{s}.json", f"{s}.json") for s in SPLITS},
        {},
        f"ProntoQA 5-hop as preprocessed for COCONUT; from the preprocessed files or the raw {PRONTOQA_RAW}",
    ),
    "gsm_hard": Benchmark(
        "gsm_hard",
        "gsm_hard",
        {"test": ("gsmhardv2.jsonl", "test.jsonl")},
        {"gsmhardv2.jsonl": _GSM_HARD},
        "GSM-Hard (1,319): GSM8K test with larger numbers (PAL); evaluation only",
        eval_only=True,
    ),
    "svamp": Benchmark(
        "svamp",
        "svamp",
        {"test": ("SVAMP.json",)},
        {"SVAMP.json": _SVAMP},
        "SVAMP (1,000) arithmetic word problems with varied structure; evaluation only",
        eval_only=True,
    ),
    "multiarith": Benchmark(
        "multiarith",
        "multiarith",
        {"test": ("MultiArith.json",)},
        {"MultiArith.json": _MULTIARITH},
        "MultiArith (600) multi-step arithmetic word problems; evaluation only",
        eval_only=True,
    ),
    "asdiv": Benchmark(
        "asdiv",
        "asdiv",
        {"test": ("ASDiv.xml",)},
        {"ASDiv.xml": _ASDIV},
        "ASDiv (2,305; the 2,084 with one numeric answer) diverse math word problems; evaluation only",
        eval_only=True,
    ),
}
GENERATED = ("multiplication", "arithmetic")


# -- reading ---------------------------------------------------------------------------------------
def _split_of(path: Path) -> str | None:
    """The split a file name says it holds (`prosqa_valid.json`, `train_no_aug.txt`, `4x4_test.txt`)."""
    stem = path.stem.lower()
    found = [s for s in SPLITS if s in stem.replace("-", "_").split("_")]
    return found[0] if len(found) == 1 else None


def prontoqa_from_raw(path: Path) -> dict[str, list[Record]]:
    """The raw ProntoQA generator output -> splits, as facebookresearch/coconut's
    `preprocessing/prontoqa.py`: question + query, steps = chain-of-thought sentences in pairs."""
    source = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError.at(source, f"is not valid JSON ({error.msg})", f"give the {PRONTOQA_RAW} file") from None
    if not isinstance(raw, dict):
        raise DataError.at(source, "is not a JSON object of ProntoQA examples", f"give the {PRONTOQA_RAW} file")
    records = []
    for index, (key, value) in enumerate(raw.items()):
        example = value.get("test_example") if isinstance(value, dict) else None
        if not isinstance(example, dict) or not {"question", "query", "chain_of_thought", "answer"} <= example.keys():
            raise DataError.at(
                source,
                f"entry {key!r} has no test_example with question, query, chain_of_thought and answer",
                f"give the {PRONTOQA_RAW} file written by asaparov/prontoqa's run_experiment.py",
                index=index,
            )
        chain = example["chain_of_thought"]
        steps = [" ".join(chain[i : i + 2]) for i in range(0, len(chain), 2)]
        converted = {"question": f"{example['question']} {example['query']}", "steps": steps}
        records.append(parse_record({**converted, "answer": example["answer"]}, source=source, index=index))
    train_end = PRONTOQA_TRAIN + PRONTOQA_VALID
    return {"train": records[:PRONTOQA_TRAIN], "valid": records[PRONTOQA_TRAIN:train_end], "test": records[train_end:]}


def _is_json_object(path: Path) -> bool:
    """The raw ProntoQA output is one JSON object; the preprocessed files are JSON lists."""
    with path.open(encoding="utf-8") as f:
        return f.read(64).lstrip().startswith("{")


def find_files(benchmark: Benchmark, source: Path, split: str | None = None) -> dict[str, Path]:
    """split -> raw file under `source` (a folder holding the files under their published names, or
    one file whose name says its split, or `split` when given)."""
    if source.is_file():
        split = split or ("test" if benchmark.eval_only else _split_of(source))
        if split is None:
            raise DataError.at(
                str(source),
                "the file name does not say which split it holds",
                "add --split train|valid|test",
            )
        return {split: source}
    if not source.is_dir():
        raise DataError.at(str(source), "no such file or folder", "give --source an existing file or folder")
    found = {}
    for name, candidates in benchmark.files.items():
        path = next((source / c for c in candidates if (source / c).is_file()), None)
        if path is not None:
            found[name] = path
    if not found:
        expected = "; ".join(f"{s}: {' or '.join(c)}" for s, c in benchmark.files.items())
        raise DataError.at(
            str(source),
            f"holds none of the {benchmark.name} files",
            f"put them there under their published names ({expected}), or give one file with --split",
        )
    return found


def convert(benchmark: Benchmark, source: Path, split: str | None = None) -> tuple[dict[str, list[Record]], dict]:
    """Reads raw files -> (split -> records, split -> {file, sha256}) for the manifest."""
    if benchmark.name == "prontoqa":
        raw = source if source.is_file() else source / PRONTOQA_RAW
        preprocessed = source.is_dir() and any((source / c).is_file() for f in benchmark.files.values() for c in f)
        if raw.is_file() and not preprocessed and _is_json_object(raw):
            origin = {"file": str(raw), "sha256": _sha256(raw)}
            return prontoqa_from_raw(raw), {s: origin for s in SPLITS}
    files = find_files(benchmark, source, split)
    if benchmark.eval_only and set(files) != {"test"}:
        raise UserInputError(f"{benchmark.name} is an evaluation set: it has only a test split; drop --split")
    converted = {name: read_converted(path, benchmark.format) for name, path in files.items()}
    splits = {name: c.records for name, c in converted.items()}
    origins = {name: {"file": str(path), "sha256": _sha256(path)} for name, path in files.items()}
    for name, c in converted.items():
        if c.left_out:  # problems a benchmark's scoring cannot use (ASDiv's non-numeric answers)
            origins[name]["left_out"] = {reason: len(indices) for reason, indices in c.left_out.items()}
            log.warning("%s: %s", files[name], c.summary())
    if benchmark.name == "gsm8k" and "train" in splits and "valid" not in splits:
        train = splits["train"]
        if len(train) <= GSM8K_VALID_SIZE:
            raise DataError.at(
                str(files["train"]),
                f"has {len(train)} problems, too few to hold out {GSM8K_VALID_SIZE} for validation",
                "give the full train.jsonl",
            )
        splits["train"], splits["valid"] = train[:-GSM8K_VALID_SIZE], train[-GSM8K_VALID_SIZE:]
        origins["valid"] = {**origins["train"], "held_out": f"last {GSM8K_VALID_SIZE} of train"}
    return splits, origins


def hold_out(splits: dict[str, list[Record]], origins: dict, counts: dict[str, int]) -> None:
    """Carves `counts` (valid, test) records off the end of `train`, for a source that holds fewer
    splits than a run needs (e.g. only ProsQA's validation file). The published files are already in
    random order, so the last records are as good a sample as any; valid comes before test."""
    wanted = {name: n for name, n in counts.items() if n > 0}
    present = sorted(set(wanted) & set(splits))
    if present:
        raise UserInputError(
            f"the source already holds {' and '.join(present)}: --holdout would replace it; "
            f"give 0 for {' and '.join(present)} (--holdout VALID TEST)"
        )
    if "train" not in splits:
        raise UserInputError(
            "--holdout carves valid/test off the train split, and the source has none: add --split train"
        )
    train, total = splits["train"], sum(wanted.values())
    if total >= len(train):
        raise UserInputError(
            f"--holdout asks for {total} records but train has {len(train)}: hold out fewer, "
            f"so that some remain to train on"
        )
    end = len(train)
    for name in ("test", "valid"):  # from the end backwards, so that valid precedes test
        n = wanted.get(name, 0)
        if n:
            splits[name] = train[end - n : end]
            origins[name] = {**origins["train"], "held_out": f"records {end - n}..{end - 1} of train"}
            end -= n
    splits["train"] = train[:end]


# -- downloading -----------------------------------------------------------------------------------
def download(benchmark: Benchmark, folder: Path, timeout: float = 60.0) -> Path:
    """Fetches every raw file of `benchmark` into `folder` (files already there are kept)."""
    if not benchmark.urls:
        raise DownloadError(
            f"{benchmark.name} has no public download. {PRONTOQA_HOWTO}, then convert the {PRONTOQA_RAW} it "
            f"writes with: coconut-data {benchmark.name} --source <path to {PRONTOQA_RAW}> "
            f"(or --source <folder> holding prontoqa_{{train,valid,test}}.json already preprocessed)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name, url in benchmark.urls.items():
        target = folder / name
        if target.is_file():
            continue
        log.info("downloading %s", url)
        partial = target.with_name(name + ".partial")
        try:
            with urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as error:
            partial.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.errno in DISK_FULL:
                raise OutputError(f"{partial.parent} has no space left for {url}. Fix: free space there") from None
            reason = getattr(error, "reason", error)
            by_hand = "\n".join(f"  {u}" for u in benchmark.urls.values())
            raise DownloadError(
                f"could not download {url} ({reason}); this machine may be offline.\n"
                f"Download these files by hand:\n{by_hand}\n"
                f"put them in one folder (e.g. {folder}) under those names, then run:\n"
                f"  coconut-data {benchmark.name} --source {folder}"
            ) from None
        partial.replace(target)
    return folder


# -- generating ------------------------------------------------------------------------------------
def generate(name: str, sizes: dict[str, int] | None, seed: int, digits: int) -> dict[str, list[Record]]:
    """The seeded generator with the settings (and default sizes) of conf/data/<name>.yaml, through
    `load_splits`, so the files hold exactly the records a run with `data=<name> data.seed=<seed>`
    generates, with no question in two splits."""
    # Imported here: Hydra and OmegaConf are slow to import and only generated sets need them.
    from omegaconf import OmegaConf

    from coconut.data.splits import load_splits

    data_cfg = OmegaConf.load(Path(CONFIG_DIR) / "data" / f"{name}.yaml")
    data_cfg.seed = seed
    if sizes is not None:
        data_cfg.sizes = {"train": sizes["train"], "val": sizes["valid"], "test": sizes["test"]}
    if name == "multiplication":
        data_cfg.generator.digits = digits
    splits = load_splits(data_cfg)
    return {"train": splits["train"], "valid": splits["val"], "test": splits["test"]}


def generate_prosqa_file(out: Path, n: int, seed: int) -> Path:
    """`n` ProsQA records generated with the published distribution (coconut/data/prosqa.py), written in
    the published format (`idx_to_symbol`, `edges`, `root`, `target`, `neg_target` kept) as
    `<out>/prosqa_generated/train.json`, with a manifest."""
    from coconut.data.prosqa import generate_prosqa

    if n < 1:
        raise UserInputError(f"--generate {n}: give the number of records to generate (>= 1)")
    folder = out / "prosqa_generated"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.json"
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        json.dump(generate_prosqa(n, seed=seed), f, indent=1, ensure_ascii=False)
        f.write("\n")
    partial.replace(path)
    manifest = {
        "source": {"generated": "prosqa", "seed": seed},
        "splits": {"train": {"count": n, "sha256": _sha256(path)}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}: {n} generated ProsQA records (published format, seed {seed})")
    return path


# -- writing ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_benchmark(folder: Path, splits: dict[str, list[Record]], source: dict, origins: dict) -> dict:
    """Writes `{split}.json` per split and `manifest.json`; returns the manifest. Every file is
    written to `*.partial` first and renamed only once all are written, so a failed write (a full
    disk) leaves the earlier files as they were and no partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"source": source, "splits": {}}
    written: list[tuple[Path, Path]] = []
    try:
        for split in SPLITS:
            if split not in splits:
                continue
            path = folder / f"{split}.json"
            written.append((path.with_name(path.name + ".partial"), path))
            write_records(splits[split], written[-1][0])
            manifest["splits"][split] = {
                "count": len(splits[split]),
                "sha256": _sha256(written[-1][0]),
                **({"from": origins[split]} if split in origins else {}),
            }
        written.append((folder / "manifest.json.partial", folder / "manifest.json"))
        written[-1][0].write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    except OSError as error:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
        raise OutputError(
            f"{folder} could not be written ({error.strerror or error}); the files there are as they were. "
            "Fix: free space on that disk, or give --out <a folder you can write to>"
        ) from None
    for partial, path in written:
        os.replace(partial, path)
    return manifest


def conversion_left_out(path: str | Path) -> Counter:
    """The problems of the published file that the prepared file `path` lacks, by reason (ASDiv's
    answers that are not one number): from the manifest.json coconut-data wrote beside it, when it
    describes this very file (its sha256). Empty for any other file."""
    path = Path(path)
    try:
        manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
        entry = next(e for e in manifest["splits"].values() if e.get("sha256") == _sha256(path))
    except (OSError, ValueError, KeyError, StopIteration, AttributeError):
        return Counter()
    left_out = entry.get("from", {}).get("left_out", {})
    return Counter({f"left out at conversion: {reason}": n for reason, n in left_out.items()})


def prepare(
    benchmark: str,
    *,
    out: Path | None = None,
    source: Path | None = None,
    split: str | None = None,
    digits: int = 4,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    holdout: dict[str, int] | None = None,
) -> Path:
    """Prepares one benchmark into `<out>/<name>/`; returns that folder. `holdout` (converted
    sources only) carves valid/test off the end of train (see `hold_out`). `out`: the data root
    (`data_root()`) unless given."""
    if holdout and source is None:
        raise UserInputError("--holdout carves splits off local files: give --source too")
    out = Path(out) if out is not None else data_root()
    writable_folder(out, f"--out {out}")  # before anything is downloaded or converted
    if benchmark in GENERATED:
        name = f"multiplication_{digits}x{digits}" if benchmark == "multiplication" else benchmark
        folder = out / name
        if source is not None:
            files = Benchmark(
                benchmark,
                benchmark,
                {s: (f"{digits}x{digits}_{s}.txt", f"{s}.txt") for s in SPLITS},
            )
            splits, origins = convert(files, source, split)
            if holdout:
                hold_out(splits, origins, holdout)
            return _finish(folder, splits, {"converted": str(source)}, origins)
        splits = generate(benchmark, sizes, seed, digits)
        about = {"generated": benchmark, "seed": seed, **({"digits": digits} if benchmark == "multiplication" else {})}
        return _finish(folder, splits, about, {})
    spec = BENCHMARKS[benchmark]
    folder = out / benchmark
    if source is None:
        raw = download(spec, folder / "raw")
        splits, origins = convert(spec, raw)
        return _finish(folder, splits, {"downloaded": list(spec.urls.values())}, origins)
    splits, origins = convert(spec, source, split)
    if holdout:
        hold_out(splits, origins, holdout)
    return _finish(folder, splits, {"converted": str(source)}, origins)


def _finish(folder: Path, splits: dict[str, list[Record]], source: dict, origins: dict) -> Path:
    for split, records in splits.items():
        if not records:  # an empty file would replace a good one, and evaluate nothing
            origin = origins.get(split, {})
            left_out = origin.get("left_out", {})
            why = "; ".join(f"{n} left out: {reason}" for reason, n in left_out.items()) or "it holds no problem"
            raise UserInputError(
                f"{origin.get('file', source)}: no problem of the {split} split has a usable answer ({why}); "
                f"nothing was written to {folder}. Fix: give the {folder.name} file as its authors publish it"
            )
    manifest = write_benchmark(folder, splits, source, origins)

    def count(split: str, entry: dict) -> str:
        left_out = sum(entry.get("from", {}).get("left_out", {}).values())
        return f"{split} {entry['count']}" + (f" ({left_out} left out, see manifest.json)" if left_out else "")

    counts = ", ".join(count(s, m) for s, m in manifest["splits"].items())
    print(f"wrote {folder}: {counts}")
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    about = "\n".join(f"  {b.name:15s}{b.about}" for b in BENCHMARKS.values())
    parser = argparse.ArgumentParser(
        prog="coconut-data",
        description="Prepare a benchmark as {train,valid,test}.json in the {question, steps, answer} format.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"benchmarks:\n{about}\n  {'multiplication':15s}iCoT multi-digit multiplication, generated "
        f"(--digits)\n  {'arithmetic':15s}the built-in multi-step arithmetic, generated",
    )
    parser.add_argument("benchmark", choices=[*BENCHMARKS, *GENERATED])
    parser.add_argument("--source", type=Path, help="convert local files: a folder, or one file (see --split)")
    parser.add_argument("--split", choices=SPLITS, help="the split a single --source file holds")
    parser.add_argument(
        "--out", type=Path, help=f"output root (default {data_root()}: $PROJECT_ROOT/data, else the project's)"
    )
    parser.add_argument("--digits", type=int, default=4, help="multiplication: digits per operand (4 = 4x4)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VALID", "TEST"),
        help="generated sets (default: conf/data/<benchmark>.yaml sizes)",
    )
    parser.add_argument("--seed", type=int, default=0, help="generated sets: the data seed (data.seed)")
    parser.add_argument(
        "--generate",
        type=int,
        metavar="N",
        help="prosqa: generate N training records with the published distribution, in the published format",
    )
    parser.add_argument(
        "--holdout",
        type=int,
        nargs=2,
        metavar=("VALID", "TEST"),
        help="with --source: carve this many valid / test records off the end of train (0: none), "
        "for a source that lacks those splits",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = dict(zip(SPLITS, args.sizes)) if args.sizes else None
    try:
        if args.generate is not None:
            if args.benchmark != "prosqa" or args.source is not None:
                raise UserInputError("--generate makes ProsQA records: use it as `coconut-data prosqa --generate N`")
            generate_prosqa_file(args.out, args.generate, args.seed)
            return
        prepare(
            args.benchmark,
            out=args.out,
            source=args.source,
            split=args.split,
            digits=args.digits,
            sizes=sizes,
            seed=args.seed,
            holdout=dict(zip(("valid", "test"), args.holdout)) if args.holdout else None,
        )
    except UserInputError as error:
        print(f"coconut-data: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
