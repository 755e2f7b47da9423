"""Does the review score rank cases by how wrong their pseudo-labels are?

On held-out LABELED cases (labels exist but the model never trained on them), this predicts each case
with the same :class:`~versemi.inference.Predictor` that ``versemi predict`` / ``pseudolabel`` use,
asking for every real prompt AND the synthetic prompt, and computes:

- the review score of :mod:`versemi.review.uncertainty` (and its two components) from the
  full-resolution probabilities;
- the real error ``1 - Dice`` of the pseudo-label (arg-max over the real prompts where the best
  probability is >= 0.5, exactly as the predictor labels) against the manual label, averaged over the
  targets the case's dataset annotates (both empty = Dice 1);

then prints the Spearman rank correlation (``scipy.stats.spearmanr``) between score and error, with
its p-value, for the score and for each component alone, and how much worse the cases the score
puts in its top quarter really are.

Usage::

    # rank a trained model's held-out cases (cases the checkpoint's config excluded from training,
    # else every case it did not label)
    .venv/bin/python bench/ranking.py --model runs/x/versemi/stage2/best.pt \\
        --dataset ../shared/data/Dataset001_Hippocampus

    # or train a small model first (versemi train, CPU-sized), then rank its held-out cases
    .venv/bin/python bench/ranking.py --train-steps 400 --work runs/ranking \\
        --dataset ../shared/data/Dataset001_Hippocampus --protocol ../shared/data/protocol.json

Writes ``<work>/ranking.json`` (or ``--output``) with per-case numbers and the correlations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _held_out(dataset: Any, config: dict[str, Any], explicit: list[str] | None) -> tuple[list[Any], str]:
    """Labeled cases of ``dataset`` the model did not train on, and how they were chosen."""
    labeled = [c for c in dataset.cases if c.label_path is not None]
    if explicit:
        chosen = [c for c in labeled if c.case_id in set(explicit)]
        missing = sorted(set(explicit) - {c.case_id for c in chosen})
        if missing:
            raise SystemExit(f"--cases: no labeled case {missing[0]!r} in {dataset.root}")
        return chosen, "--cases"
    for entry in config.get("datasets", []):
        if Path(entry.get("path", "")).name != dataset.name:
            continue
        excluded = set(entry.get("exclude") or [])
        if excluded:
            return [c for c in labeled if c.case_id in excluded], "excluded from training by the checkpoint's config"
        trained = set(entry.get("labeled") or [])
        return [c for c in labeled if c.case_id not in trained], "not labeled in the checkpoint's config (seen unlabeled)"
    return labeled, "the dataset is not in the checkpoint's config: every labeled case"


def rank(model: Path, dataset_dir: Path, cases: list[str] | None, max_cases: int | None, device: str,
         quality: str, threads: int | None) -> dict[str, Any]:
    """Score and error of every held-out case, and the rank correlations."""
    import SimpleITK as sitk
    from scipy.stats import spearmanr

    from versemi.checkpoint import Checkpoint
    from versemi.data.dataset import NnUNetDataset
    from versemi.images import read_image
    from versemi.inference import Predictor
    from versemi.review.uncertainty import uncertainty_score

    checkpoint = Checkpoint.load(model)
    predictor = Predictor(checkpoint, device=device, quality=quality, threads=threads)
    space = predictor.label_space
    if space.synthetic_id is None:
        raise SystemExit(f"{model}: the model has no synthetic prompt; the review score needs one")
    dataset = NnUNetDataset(dataset_dir)
    targets = space.prompts_for_dataset(dataset.name)
    if not targets:
        raise SystemExit(f"{model}: the model's label space has no prompt for dataset {dataset.name}")
    held_out, how = _held_out(dataset, checkpoint.training.config if checkpoint.training else {}, cases)
    if max_cases:
        held_out = held_out[:max_cases]
    if len(held_out) < 3:
        raise SystemExit(f"only {len(held_out)} held-out case(s) ({how}); need at least 3 for a rank correlation")
    real_ids = space.real_prompt_ids
    names = [space.names[i] for i in real_ids]
    synthetic_name = space.names[space.synthetic_id]
    print(f"model {model}: prompts {names} + {synthetic_name}; {len(held_out)} held-out case(s) of "
          f"{dataset.name} ({how})", flush=True)

    rows = []
    t0 = time.perf_counter()
    for k, case in enumerate(held_out):
        image = read_image(case.image_path)
        reference = sitk.GetArrayFromImage(read_image(case.label_path))
        result = predictor.predict(image, real_ids + [space.synthetic_id], return_probabilities=True,
                                   image_name=str(case.image_path))
        assert result.probabilities is not None
        real = np.stack([sitk.GetArrayViewFromImage(result.probabilities[n]) for n in names])
        synthetic = sitk.GetArrayFromImage(result.probabilities[synthetic_name])
        score = uncertainty_score(real, synthetic)
        # The pseudo-label as the predictor makes it for the real prompts (the synthetic one excluded).
        best = real.max(axis=0)
        labelmap = np.where(best >= 0.5, real.argmax(axis=0) + 1, 0)
        dices = {space.names[pid]: _dice(labelmap == real_ids.index(pid) + 1, reference == value)
                 for pid, value in targets}
        error = 1.0 - float(np.mean(list(dices.values())))
        rows.append({"case": case.case_id, "score": score.score, "disagreement": score.disagreement,
                     "entropy": score.entropy, "support_voxels": score.support_voxels, "error": error,
                     "dice": dices})
        print(f"[{k + 1}/{len(held_out)}] {case.case_id}: score {score.score:.3f} (disagreement "
              f"{score.disagreement:.3f}, entropy {score.entropy:.3f})  error {error:.3f}", flush=True)

    errors = np.array([r["error"] for r in rows])
    out: dict[str, Any] = {"model": str(model), "dataset": str(dataset.root), "held_out": how,
                           "cases": rows, "seconds": round(time.perf_counter() - t0, 1), "correlation": {}}
    for key in ("score", "disagreement", "entropy"):
        values = np.array([r[key] for r in rows])
        rho, p = spearmanr(values, errors)
        out["correlation"][key] = {"spearman_rho": float(rho), "p_value": float(p)}
    order = np.argsort([-r["score"] for r in rows], kind="stable")
    quarter = max(1, len(rows) // 4)
    out["top_quarter_mean_error"] = float(errors[order[:quarter]].mean())
    out["rest_mean_error"] = float(errors[order[quarter:]].mean()) if len(rows) > quarter else None
    out["mean_error"] = float(errors.mean())
    return out


def train_small_model(work: Path, dataset_dir: Path, protocol: Path | None, setting: str, held_out: int,
                      steps: int, device: str) -> Path:
    """Train a CPU-sized VerSemi model with ``versemi train``; ``held_out`` cases are excluded from training."""
    import yaml

    from versemi.data.dataset import NnUNetDataset

    dataset = NnUNetDataset(dataset_dir)
    ids = dataset.case_ids
    if protocol is not None:
        labeled = json.loads(protocol.read_text())[dataset.name][setting]
    else:
        labeled = ids[: max(4, len(ids) // 10)]
    # Held out: the last ``held_out`` ids that are not labeled (deterministic, never trained on).
    exclude = [c for c in ids if c not in set(labeled)][-held_out:]
    config = {
        "datasets": [{"path": str(dataset.root), "labeled": list(labeled), "exclude": exclude}],
        "target_spacing": [1.0, 1.0, 1.0],
        "patch_size": [32, 32, 32],
        "validation": {"fraction": 0.0},
        "seed": 0,
        "model": {"backbone": "vnet", "base_filters": 8, "depth": 4},
        "training": {"max_steps": steps, "batch_size": 2, "unlabeled_batch_size": 2, "num_workers": 0,
                     "validate_every": 10 ** 6, "checkpoint_every": max(50, steps // 4), "log_every": 50,
                     "tensorboard": False, "lr": 3e-3},
        "cache_dir": str(work / "cache"),
        "output_dir": str(work / "run"),
    }
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "train.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "versemi.cli", "train", str(cfg), "--device", device, "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    found = sorted((work / "run").rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"training wrote no last.pt under {work / 'run'}")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="nnU-Net raw dataset with labels")
    parser.add_argument("--model", type=Path, help="trained checkpoint (else --train-steps trains one)")
    parser.add_argument("--train-steps", type=int, default=400, help="steps of the small model trained without --model")
    parser.add_argument("--protocol", type=Path, help="protocol.json giving the labeled cases for training")
    parser.add_argument("--setting", default="labeled_10pct", help="protocol setting (default labeled_10pct)")
    parser.add_argument("--held-out", type=int, default=40, help="cases excluded from training (with --train-steps)")
    parser.add_argument("--cases", help="comma-separated held-out case ids (default: from the checkpoint's config)")
    parser.add_argument("--max-cases", type=int, help="rank at most this many held-out cases")
    parser.add_argument("--work", type=Path, default=Path("runs/ranking"), help="work folder")
    parser.add_argument("--output", type=Path, help="JSON report (default <work>/ranking.json)")
    parser.add_argument("--device", default="cpu", help="auto|cpu|cuda|mps (default cpu)")
    parser.add_argument("--quality", default="default", choices=("default", "fast"))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    args = parser.parse_args(argv)

    model = args.model
    if model is None:
        model = train_small_model(args.work, args.dataset, args.protocol, args.setting, args.held_out,
                                  args.train_steps, args.device)
    report = rank(model, args.dataset, args.cases.split(",") if args.cases else None, args.max_cases,
                  args.device, args.quality, args.threads)
    output = args.output or args.work / "ranking.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    n = len(report["cases"])
    print(f"\n{n} held-out cases, mean error (1 - Dice) {report['mean_error']:.3f}")
    for key, c in report["correlation"].items():
        print(f"Spearman rho(error, {key:<12}) = {c['spearman_rho']:+.3f}  (p = {c['p_value']:.2g})")
    if report["rest_mean_error"] is not None:
        print(f"mean error of the top-scored quarter {report['top_quarter_mean_error']:.3f} vs the rest "
              f"{report['rest_mean_error']:.3f}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
