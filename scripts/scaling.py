"""Inference-time scaling: accuracy against the compute spent per question, over the number of
continuous thoughts x the number of sampled answers, from the reports of a coconut-eval sweep:

    coconut-eval -m ckpt_path=<ckpt> n_thoughts=0,2,4,6 generation.num_samples=1,4,16 generation.temperature=0.7
    python scripts/scaling.py outputs/eval/multiruns/<time>/* [--out DIR] [--x tokens|forward_passes]

Per report: the majority-vote accuracy of its samples (the greedy accuracy when it sampled nothing),
pass@k, and the cost per question: thoughts + every sample's tokens (`--x tokens`), or the model's
sequential passes, the prompt's once plus each sample's decoding (`--x forward_passes`). One line
per thought count, one point per sample count. Writes scaling.md, scaling.json and scaling.png
into --out (default outputs/scaling/<time>/) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path


def point(folder: Path) -> dict | None:
    path = folder / "report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    tokens, sampling = report["tokens"], report.get("sampling")
    thoughts = report.get("n_thoughts")
    row = {
        "run": folder.name,
        "n_thoughts": thoughts if thoughts is not None else tokens["thoughts_mean"],
        "num_samples": sampling["num_samples"] if sampling else 1,
        "temperature": sampling["temperature"] if sampling else 0.0,
        "greedy_accuracy": report["accuracy"],
    }
    if sampling:
        k = str(sampling["num_samples"])
        row |= {
            "accuracy": sampling["majority_accuracy"],
            "pass_at_k": sampling["pass_at_k"][k],
            "tokens": sampling["tokens_per_question"],
            "forward_passes": sampling["forward_passes_per_question"],
        }
    else:
        row |= {
            "accuracy": report["accuracy"],
            "pass_at_k": report["accuracy"],
            "tokens": tokens["thoughts_mean"] + tokens["generated_mean"],
            "forward_passes": tokens["forward_passes_mean"],
        }
    return row


def markdown(rows: list[dict], x: str) -> str:
    lines = [
        f"| run | thoughts | samples | T | majority accuracy | pass@k | greedy accuracy | {x} per question |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['n_thoughts']:g} | {r['num_samples']} | {r['temperature']:g} | {r['accuracy']:.3f} | "
            f"{r['pass_at_k']:.3f} | {r['greedy_accuracy']:.3f} | {r[x]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], x: str, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(6, 4))
    for thoughts in sorted({r["n_thoughts"] for r in rows}):
        line = sorted((r for r in rows if r["n_thoughts"] == thoughts), key=lambda r: r[x])
        axes.plot([r[x] for r in line], [r["accuracy"] for r in line], "o-", label=f"{thoughts:g} thoughts")
        axes.plot([r[x] for r in line], [r["pass_at_k"] for r in line], ":", color=axes.lines[-1].get_color())
        for r in line:
            axes.annotate(f"k={r['num_samples']}", (r[x], r["accuracy"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel(f"{x.replace('_', ' ')} per question (log)")
    axes.set_ylabel("accuracy (majority vote; dotted: pass@k)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="coconut-eval output folders (a sweep's jobs)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--x", choices=("tokens", "forward_passes"), default="tokens")
    args = parser.parse_args(argv)
    rows = [r for r in map(point, args.folders) if r is not None]
    if not rows:
        print("no report.json in the folders given; give coconut-eval output folders", file=sys.stderr)
        return 2
    rows.sort(key=lambda r: (r["n_thoughts"], r["num_samples"]))
    out = args.out or Path("outputs") / "scaling" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, args.x)
    (out / "scaling.md").write_text(table)
    (out / "scaling.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.x, out / "scaling.png")
    print(table + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
