"""Semi-supervised benchmark on real data: VerSemi against baselines, with seeds and paired statistics.

For each protocol setting of ``protocol.json`` (``labeled_10pct``, ``labeled_5pct``), each compared
method ("variant", see ``bench/semisup_presets.py``) and each seed, this trains one prompted model
over the preset's datasets with ``versemi train``, predicts a HELD-OUT split with the same
:class:`~versemi.inference.Predictor` that ``versemi predict`` uses, scores it with
:func:`versemi.evaluation.evaluate_folders` (Dice, HD95 in mm on the original grid) and writes:

- ``runs/<setting>__<variant>__seed<k>/metrics.json``: per-case metrics, wall times, steps, it/s,
  data-wait share, loss shares (one file per run; a run whose file exists is skipped: resumable);
- ``results.md``: the exact command and settings, then per dataset and prompt Dice and HD95
  (mean +- sd over seeds) per method, paired per-case differences (VerSemi minus each baseline,
  with their standard error), the share of the gap to the all-labels upper bound each method
  closes, and per-run timings;
- ``results.json`` (the same numbers) and ``results.png`` (per-dataset Dice bars with seed spread).

Held-out split: per dataset, 20 % of the cases (ACDC: of the patients, both frames together) are
chosen deterministically (SHA-256 order of ``<dataset>/<case or patient>``) among cases that no
protocol setting labels, and removed from training entirely through the config's ``exclude``. They
are used once, for the final report; there is no model selection (fixed step budget, the last
checkpoint is evaluated; the trainer's own validation split is disabled so that no labeled case is
taken away from training).

Usage::

    .venv/bin/python bench/semisup.py --preset cpu-quick              # a few minutes, smoke check
    nohup .venv/bin/python bench/semisup.py --preset cpu > bench/results/cpu.log 2>&1 &
    .venv/bin/python bench/semisup.py --preset gpu-la --device cuda
    .venv/bin/python bench/semisup.py --preset cpu --dry-run          # print the runs
    .venv/bin/python bench/semisup.py --preset cpu --report-only      # tables from finished runs
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import fnmatch
import hashlib
import json
import math
import multiprocessing
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semisup_presets import Preset, get_preset, images_per_step, variant_steps  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_RESULTS = REPO_ROOT / "bench" / "results"
ALL_LABELS = "all_labels"
METRICS_FILE = "metrics.json"
TRAIN_DONE_FILE = "train_done.json"
# Case ids of one patient (ACDC: patientNNN_frame01 / _frame02) are held out together.
_GROUP_PATTERN = re.compile(r"^(?P<group>.+?)_frame\d+$")


# ==================================================================================================
# held-out split
# ==================================================================================================
def case_group(case_id: str) -> str:
    """The unit of the held-out split: the patient for ``<patient>_frameNN`` ids, else the case."""
    m = _GROUP_PATTERN.match(case_id)
    return m.group("group") if m else case_id


def heldout_cases(
    dataset: str,
    case_ids: Sequence[str],
    protocol_entry: Mapping[str, Sequence[str]],
    fraction: float,
    skip_fraction: float = 0.0,
) -> list[str]:
    """The held-out evaluation cases of one dataset (deterministic, never a protocol-labeled case).

    ``round(fraction * groups)`` groups (patients, or cases) are taken in SHA-256 order of
    ``"<dataset>/<group>"`` among the groups none of whose cases any protocol setting labels.

    Args:
        dataset: Dataset folder name (part of the hash, so datasets are split independently).
        case_ids: Every case id of the dataset.
        protocol_entry: The dataset's protocol.json entry (setting -> labeled case ids).
        fraction: Share of the groups to hold out, in [0, 1).
        skip_fraction: Share of the groups skipped first (the development split is the groups that
            follow the held-out ones in the same order: ``skip_fraction`` = the held-out fraction).

    Returns:
        Held-out case ids, sorted.

    Raises:
        ValueError: ``fraction`` outside [0, 1), or not enough unlabeled groups to hold out.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    labeled = {c for ids in protocol_entry.values() for c in ids}
    groups: dict[str, list[str]] = {}
    for c in case_ids:
        groups.setdefault(case_group(c), []).append(c)
    n_skip = int(math.floor(skip_fraction * len(groups) + 0.5))
    n_holdout = int(math.floor(fraction * len(groups) + 0.5))
    candidates = [g for g, members in groups.items() if not labeled & set(members)]
    if n_skip + n_holdout > len(candidates):
        raise ValueError(
            f"{dataset}: cannot hold out {n_holdout} (after {n_skip}) of {len(groups)} groups: only "
            f"{len(candidates)} have no protocol-labeled case"
        )
    order = sorted(candidates, key=lambda g: hashlib.sha256(f"{dataset}/{g}".encode()).hexdigest())
    return sorted(c for g in order[n_skip : n_skip + n_holdout] for c in groups[g])


def dataset_case_ids(dataset_dir: Path) -> list[str]:
    """Case ids of an nnU-Net raw dataset (images ``imagesTr/<case>_0000<ending>``)."""
    from versemi.data.dataset import NnUNetDataset

    return list(NnUNetDataset(dataset_dir).case_ids)


#: Share of each dataset's groups in the development split (``--split dev``): the groups after the
#: held-out ones in the same SHA-256 order, never held-out cases.
DEV_FRACTION = 0.1


def make_split(
    data_dir: Path, datasets: Sequence[str], protocol: Mapping[str, Any], fraction: float, which: str = "heldout"
) -> dict[str, list[str]]:
    """Evaluation cases per dataset: the held-out split, or the development split (``which="dev"``,
    :data:`DEV_FRACTION` of the groups after the held-out ones; see :func:`heldout_cases`), widened by
    the unlabeled pool (``"dev-wide"``) or half of it (``"dev-semi"``)."""
    split = {}
    for name in datasets:
        if name not in protocol:
            raise ValueError(f"protocol file has no entry for {name}; it has {', '.join(sorted(protocol))}")
        ids = dataset_case_ids(data_dir / name)
        if which == "heldout":
            split[name] = heldout_cases(name, ids, protocol[name], fraction)
            continue
        dev = heldout_cases(name, ids, protocol[name], DEV_FRACTION, skip_fraction=fraction)
        if which in ("dev-wide", "dev-semi"):
            labeled = {c for cases in protocol[name].values() for c in cases}
            heldout = set(heldout_cases(name, ids, protocol[name], fraction))
            excluded = labeled | heldout | set(dev)
            pool = [c for c in ids if c not in excluded]
            if which == "dev-wide":
                # Every case no protocol setting labels, except the held-out ones: supervised-only runs
                # never read them, so they widen the development split for recipe choices.
                dev = sorted(set(dev) | set(pool))
            else:
                # Half of the unlabeled pool's groups (every other one in SHA-256 order) joins the
                # development split and leaves training; the other half stays unlabeled training data.
                dev = sorted(set(dev) | set(pool_half(name, pool)))
        split[name] = dev
    return split


def pool_half(dataset: str, pool: Sequence[str]) -> list[str]:
    """Every other group (ACDC: patient) of ``pool`` in SHA-256 order, starting with the first."""
    groups: dict[str, list[str]] = {}
    for c in pool:
        groups.setdefault(case_group(c), []).append(c)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{dataset}/pool/{g}".encode()).hexdigest())
    return sorted(c for g in order[::2] for c in groups[g])


def training_exclusions(
    data_dir: Path, preset: Preset, protocol: Mapping[str, Any], which: str = "heldout"
) -> dict[str, list[str]]:
    """The cases kept out of training: the held-out split, and the development split when a development
    split is evaluated. ``dev-wide`` excludes what ``dev`` does: its extra cases (the unlabeled pool)
    stay in the datasets, unread by supervised-only training, so that each dataset's plan (fingerprint,
    patch size) is the one a ``dev`` run and the real runs compute. ``dev-semi`` excludes its whole
    evaluation split (half of the pool with it), so every method may run on it."""
    heldout = make_split(data_dir, preset.datasets, protocol, preset.heldout_fraction)
    if which == "heldout":
        return heldout
    dev = make_split(data_dir, preset.datasets, protocol, preset.heldout_fraction,
                     "dev-semi" if which == "dev-semi" else "dev")
    return {name: sorted(set(heldout[name]) | set(dev[name])) for name in preset.datasets}


def check_dev_wide_runs(runs: Sequence[RunSpec]) -> None:
    """``--split dev-wide`` evaluates on the unlabeled pool: only for runs that never read it."""
    bad = [r.run_id for r in runs if r.method != "supervised" or r.setting == ALL_LABELS]
    if bad:
        raise ValueError(
            "--split dev-wide evaluates on the cases the semi-supervised methods train on (unlabeled) and "
            f"the all-labels runs train on (labeled): only supervised-only runs at a protocol setting may use "
            f"it; refused: {', '.join(bad)} (use --only to select runs)"
        )


# ==================================================================================================
# the run plan and configs
# ==================================================================================================
@dataclass(frozen=True)
class RunSpec:
    """One training + evaluation run of the benchmark.

    Attributes:
        setting: Protocol setting (e.g. ``labeled_10pct``) or ``all_labels`` for the upper bound.
        variant: Variant name (see the presets).
        method: Trainer method.
        seed: Training seed (the config's ``seed``).
        steps: Step budget (``--max-steps``).
        training: Extra ``training:`` keys of the variant.
        images_per_step: Images through the network per step (see ``images_per_step``).
    """

    setting: str
    variant: str
    method: str
    seed: int
    steps: int
    training: dict[str, Any] = field(default_factory=dict)
    images_per_step: float = 0.0

    @property
    def run_id(self) -> str:
        return f"{self.setting}__{self.variant}__seed{self.seed}"


def plan_runs(preset: Preset, seeds: Sequence[int] | None = None) -> list[RunSpec]:
    """Every run of a preset: seeds x settings x variants, plus the upper bound once per seed."""
    seeds = list(seeds if seeds is not None else preset.seeds)
    runs: list[RunSpec] = []

    def spec(setting: str, variant_name: str, seed: int) -> RunSpec:
        v = preset.variant(variant_name)
        training = {**preset.training, **v.training}
        return RunSpec(
            setting, v.name, v.method, seed, variant_steps(preset, v), dict(v.training),
            images_per_step(v.method, training),
        )

    # Seed-major order: after the first seed every comparison has one complete (paired) replicate,
    # so a report of an unfinished benchmark already compares every method.
    for seed in seeds:
        for setting in preset.settings:
            for v in preset.variants:
                if not v.all_labels and (v.settings is None or setting in v.settings):
                    runs.append(spec(setting, v.name, seed))
        runs.extend(spec(ALL_LABELS, v.name, seed) for v in preset.variants if v.all_labels)
    return runs


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``extra`` wins); nested option sections are merged, not replaced."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def make_config(
    preset: Preset,
    run: RunSpec,
    data_dir: Path,
    protocol_path: Path,
    heldout: Mapping[str, Sequence[str]],
    cache_dir: Path,
    output_dir: Path,
) -> dict[str, Any]:
    """The training config (as a dict, absolute paths) of one run.

    Labeled cases come from the protocol setting (or ``all`` for the upper bound); the ``heldout``
    cases (every case kept out of training: the evaluation split, plus the held-out split when the
    development split is evaluated) are excluded; the trainer's validation split is off (no labeled
    case is taken away and no checkpoint is selected: the last one is evaluated). Each dataset gets
    its plan (:mod:`versemi.data.plans`) unless the preset fixes one grid and patch for all.
    """
    datasets = []
    for name in preset.datasets:
        labeled: Any = "all" if run.setting == ALL_LABELS else {"protocol": str(protocol_path), "setting": run.setting}
        datasets.append({"path": str(data_dir / name), "labeled": labeled, "exclude": list(heldout.get(name, []))})
    training = _merge(preset.training, run.training)
    training["method"] = run.method
    training["max_steps"] = run.steps
    config: dict[str, Any] = {
        "datasets": datasets,
        "validation": {"fraction": 0.0},
        "seed": run.seed,
        "model": dict(preset.model),
        "training": training,
        "cache_dir": str(cache_dir),
        "output_dir": str(output_dir),
    }
    if preset.target_spacing is not None:
        config["target_spacing"] = list(preset.target_spacing)
    if preset.patch_size is not None:
        config["patch_size"] = list(preset.patch_size)
    if preset.plans:
        config["plans"] = json.loads(json.dumps(preset.plans))
    return config


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON written atomically by :func:`versemi.fileio.atomic_write_text` (folders made there), NaN refused."""
    from versemi.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False))


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ==================================================================================================
# running: training (subprocess), prediction + evaluation (in process)
# ==================================================================================================
def stage_folders(train_dir: Path, method: str) -> list[Path]:
    """The trainer's run folders of a method (VerSemi: stage1, stage2)."""
    return [train_dir / "stage1", train_dir / "stage2"] if method == "versemi" else [train_dir / method]


def train_log_stats(train_dir: Path, method: str) -> dict[str, Any]:
    """Steps, seconds, it/s, data-wait share and the consistency loss share from the trainer's logs.

    The data-wait share and seconds come from the ``end`` events of ``train_log.jsonl`` (the
    trainer measures the time each step waits for its batch). The consistency share is the weighted
    consistency term over the total loss, averaged over the logged steps of the last quarter.
    """
    from versemi.training.run_log import read_jsonl

    stages = []
    for folder in stage_folders(train_dir, method):
        log = folder / "train_log.jsonl"
        if not log.is_file():
            continue
        records = read_jsonl(log)
        starts = [r for r in records if r.get("event") in ("start", "resume")]
        ends = [r for r in records if r.get("event") == "end"]
        train = [r for r in records if r.get("event") == "train"]
        steps = seconds = wait = 0.0
        # Every start/resume is followed by its end (unless killed): sum the finished segments.
        for s, e in zip(starts, ends):
            n = float(e["step"]) - float(s["step"])
            steps += n
            seconds += float(e.get("seconds") or 0.0)
            wait += float(e.get("data_wait_fraction") or 0.0) * float(e.get("seconds") or 0.0)
        share = None
        if train:
            last_step = max(int(r["step"]) for r in train)
            tail = [r for r in train if int(r["step"]) >= 0.75 * last_step]
            shares = []
            for r in tail:
                terms = r.get("losses") or {}
                if "consistency" in terms and terms.get("total"):
                    w = float(terms.get("consistency_weight", 0.0))
                    shares.append(w * float(terms["consistency"]) / float(terms["total"]))
            share = float(np.mean(shares)) if shares else None
        stages.append(
            {
                "folder": folder.name,
                "steps": int(steps),
                "seconds": seconds,
                "it_per_s": steps / seconds if seconds > 0 else None,
                "data_wait_fraction": wait / seconds if seconds > 0 else None,
                "consistency_loss_share": share,
                "final_losses": train[-1].get("losses") if train else None,
            }
        )
    steps = sum(s["steps"] for s in stages)
    seconds = sum(s["seconds"] for s in stages)
    waits = [s["data_wait_fraction"] * s["seconds"] for s in stages if s["data_wait_fraction"] is not None]
    shares = [s["consistency_loss_share"] for s in stages if s["consistency_loss_share"] is not None]
    return {
        "stages": stages,
        "steps": steps,
        "loop_seconds": seconds,
        "it_per_s": steps / seconds if seconds > 0 else None,
        "data_wait_fraction": sum(waits) / seconds if seconds > 0 and waits else None,
        "consistency_loss_share": shares[-1] if shares else None,
    }


def train_command(
    config_path: Path, run: RunSpec, train_dir: Path, device: str, resume: bool
) -> list[str]:
    """The ``versemi train`` command line of a run."""
    cmd = [
        sys.executable, "-m", "versemi.cli", "train", str(config_path),
        "--method", run.method, "--stage", "all", "--output-dir", str(train_dir),
        "--max-steps", str(run.steps), "--device", device, "--no-progress",
    ]
    if resume:
        cmd.append("--resume")
    return cmd


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    return env


def run_training(run: RunSpec, config: dict[str, Any], run_dir: Path, device: str, threads: int) -> dict[str, Any]:
    """Train one run with ``versemi train`` (skipped when it finished before); returns its record.

    The trainer's stdout/stderr go to ``run_dir/train.log``. An interrupted run is continued with
    ``--resume`` from its ``last.pt``.

    Raises:
        RuntimeError: the trainer failed (the message ends with the tail of its log).
    """
    done = run_dir / TRAIN_DONE_FILE
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    config_path = run_dir / "config.json"
    write_json_atomic(config_path, config)
    train_dir = run_dir / "train"
    resume = any((f / "last.pt").is_file() for f in stage_folders(train_dir, run.method))
    cmd = train_command(config_path, run, train_dir, device, resume)
    log_path = run_dir / "train.log"
    start = time.perf_counter()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=thread_env(threads))
        log.write(proc.stdout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{run.run_id}: versemi train failed (exit {proc.returncode}); {log_path}:\n{tail}")
    results = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if not results:
        raise RuntimeError(f"{run.run_id}: versemi train printed no result line; see {log_path}")
    record = {
        "command": shlex.join(cmd),
        "wall_seconds": wall,
        "resumed": resume,
        "checkpoint": results[-1]["checkpoint"],
        "trainer_results": results,
        "log_stats": train_log_stats(train_dir, run.method),
    }
    write_json_atomic(done, record)
    return record


def evaluate_checkpoint(
    checkpoint: Path,
    data_dir: Path,
    heldout: Mapping[str, Sequence[str]],
    out_dir: Path,
    device: str,
    threads: int,
    overlap: float,
    batch_size: int,
    max_cases: int | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Predict the held-out cases with the dataset's own prompts and score them.

    Returns:
        (rows, wall seconds): one row per (dataset, case, label) with ``dice``, ``hd95`` (mm; ``None``
        when undefined), ``nsd`` and ``status``.
    """
    from versemi.evaluation import evaluate_folders, label_names_from_dataset_json
    from versemi.inference import Predictor

    start = time.perf_counter()
    predictor = Predictor(checkpoint, device=device, overlap=overlap, batch_size=batch_size, threads=threads)
    rows: list[dict[str, Any]] = []
    for dataset, cases in heldout.items():
        cases = list(cases)[: max_cases] if max_cases else list(cases)
        if not cases:
            continue
        prompt_ids = sorted({pid for pid, _ in predictor.label_space.prompts_for_dataset(dataset)})
        if not prompt_ids:
            raise RuntimeError(f"{checkpoint}: the model has no prompt for dataset {dataset}")
        pred_dir = out_dir / dataset
        ds_dir = data_dir / dataset
        ending = json.loads((ds_dir / "dataset.json").read_text(encoding="utf-8")).get("file_ending", ".nii.gz")
        for case in cases:
            target = pred_dir / f"{case}{ending}"
            if not (pred_dir / f"{case}.json").is_file():  # the sidecar is written last: complete
                predictor.predict_file(ds_dir / "imagesTr" / f"{case}_0000{ending}", target, prompt_ids)
        result = evaluate_folders(
            pred_dir,
            ds_dir / "labelsTr",
            label_names=label_names_from_dataset_json(ds_dir / "dataset.json"),
            allow_missing=True,
        )
        wanted = set(cases)
        for r in result.rows:
            if r["case"] in wanted:
                rows.append(
                    {
                        "dataset": dataset,
                        "case": r["case"],
                        "label": r["label"],
                        "dice": float(r["dice"]),
                        "hd95": _finite_or_none(r["hd95"]),
                        "nsd": _finite_or_none(r["nsd"]),
                        "status": r["status"],
                    }
                )
    return rows, time.perf_counter() - start


# ==================================================================================================
# aggregation
# ==================================================================================================
def _mean(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _sd(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else None


MEAN_LABEL = "(mean)"


def per_case_scores(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, float | None]]]:
    """``{(dataset, label): {case: {"dice", "hd95"}}}`` plus ``(dataset, "(mean)")``: the mean over labels.

    The per-case mean over labels averages the labels where the value is defined (HD95 is undefined
    where a mask is empty).
    """
    out: dict[tuple[str, str], dict[str, dict[str, float | None]]] = {}
    by_case: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["label"]), {})[r["case"]] = {"dice": r["dice"], "hd95": r.get("hd95")}
        by_case.setdefault((r["dataset"], r["case"]), []).append(r)
    for (dataset, case), items in by_case.items():
        out.setdefault((dataset, MEAN_LABEL), {})[case] = {
            "dice": _mean(r["dice"] for r in items),
            "hd95": _mean(r.get("hd95") for r in items),
        }
    return out


@dataclass
class RunResult:
    """The evaluated metrics of one finished run (what aggregation needs)."""

    setting: str
    variant: str
    seed: int
    scores: dict[tuple[str, str], dict[str, dict[str, float | None]]]
    record: dict[str, Any] = field(default_factory=dict)


def load_results(runs_dir: Path) -> list[RunResult]:
    """Every finished run under ``runs_dir`` (``<run>/metrics.json``)."""
    results = []
    for path in sorted(runs_dir.glob(f"*/{METRICS_FILE}")):
        data = json.loads(path.read_text(encoding="utf-8"))
        run = data["run"]
        results.append(RunResult(run["setting"], run["variant"], int(run["seed"]), per_case_scores(data["rows"]), data))
    return results


def seed_means(results: Sequence[RunResult], setting: str, variant: str, metric: str) -> dict[tuple[str, str], dict[int, float | None]]:
    """``{(dataset, label): {seed: mean over cases}}`` of one metric for one setting and variant."""
    out: dict[tuple[str, str], dict[int, float | None]] = {}
    for r in results:
        if r.setting == setting and r.variant == variant:
            for key, cases in r.scores.items():
                out.setdefault(key, {})[r.seed] = _mean(c[metric] for c in cases.values())
    return out


def summary_table(results: Sequence[RunResult], setting: str, variant: str, metric: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(dataset, label): {"mean", "sd", "n_seeds", "seeds", "undefined", "values"}}`` over seeds.

    ``seeds`` maps each seed to its mean over cases; ``undefined`` counts the (seed, case) values
    that are undefined (HD95 where a mask is empty) out of ``values``: a mean HD95 over few defined
    cases is not comparable with one over all of them.
    """
    counts: dict[tuple[str, str], list[int]] = {}
    for r in results:
        if r.setting == setting and r.variant == variant:
            for key, cases in r.scores.items():
                c = counts.setdefault(key, [0, 0])
                c[0] += sum(1 for v in cases.values() if v[metric] is None)
                c[1] += len(cases)
    out = {}
    for key, per_seed in seed_means(results, setting, variant, metric).items():
        vals = [v for v in per_seed.values() if v is not None]
        undefined, total = counts.get(key, [0, 0])
        out[key] = {"mean": _mean(vals), "sd": _sd(vals), "n_seeds": len(vals), "seeds": per_seed,
                    "undefined": undefined, "values": total}
    return out


def paired_difference(
    results: Sequence[RunResult], setting: str, reference: str, baseline: str, metric: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per-case paired differences ``reference - baseline`` with their standard error.

    For each case, the difference is taken within each seed the two variants share (same seed,
    same case) and averaged over those seeds; the table gives the mean over cases, its standard
    error ``sd / sqrt(n)`` (ddof 1) and ``n`` cases. HD95 pairs need both values defined.

    Returns:
        ``{(dataset, label): {"mean", "se", "n", "seeds"}}``.
    """
    ref = {r.seed: r for r in results if r.setting == setting and r.variant == reference}
    base = {r.seed: r for r in results if r.setting == setting and r.variant == baseline}
    seeds = sorted(set(ref) & set(base))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    keys = sorted({k for s in seeds for k in ref[s].scores} & {k for s in seeds for k in base[s].scores})
    for key in keys:
        per_case: dict[str, list[float]] = {}
        for s in seeds:
            a, b = ref[s].scores.get(key, {}), base[s].scores.get(key, {})
            for case in set(a) & set(b):
                va, vb = a[case][metric], b[case][metric]
                if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb):
                    per_case.setdefault(case, []).append(float(va) - float(vb))
        diffs = [float(np.mean(v)) for v in per_case.values()]
        n = len(diffs)
        out[key] = {
            "mean": float(np.mean(diffs)) if n else None,
            "se": float(np.std(diffs, ddof=1) / math.sqrt(n)) if n >= 2 else None,
            "n": n,
            "seeds": len(seeds),
        }
    return out


def gap_closed(method: float | None, baseline: float | None, upper: float | None, min_gap: float = 0.01) -> float | None:
    """Share of the gap ``upper - baseline`` that ``method`` closes: ``(method - baseline) / (upper - baseline)``.

    ``None`` when a value is missing or the gap is smaller than ``min_gap`` (default one Dice point:
    a smaller gap is within the noise and its ratios are meaningless).
    """
    if method is None or baseline is None or upper is None:
        return None
    gap = upper - baseline
    if gap < min_gap:
        return None
    return (method - baseline) / gap


def aggregate(preset: Preset, results: Sequence[RunResult]) -> dict[str, Any]:
    """All the report's numbers: per setting the Dice/HD95 tables, paired differences, gap closed."""
    variants_present = {(r.setting, r.variant) for r in results}
    upper_name = preset.upper_bound
    upper_dice = summary_table(results, ALL_LABELS, upper_name, "dice")
    upper_hd = summary_table(results, ALL_LABELS, upper_name, "hd95")
    out: dict[str, Any] = {"settings": {}}
    for setting in preset.settings:
        variants = [v.name for v in preset.variants if (setting, v.name) in variants_present]
        dice = {v: summary_table(results, setting, v, "dice") for v in variants}
        hd95 = {v: summary_table(results, setting, v, "hd95") for v in variants}
        if upper_dice:
            dice[upper_name], hd95[upper_name] = upper_dice, upper_hd
        diffs: dict[str, Any] = {}
        if preset.reference in variants:
            for v in [*variants, upper_name] if upper_dice else variants:
                if v == preset.reference:
                    continue
                pool = results if v != upper_name else [
                    *[r for r in results if r.setting == setting and r.variant == preset.reference],
                    *[RunResult(setting, r.variant, r.seed, r.scores) for r in results
                      if r.setting == ALL_LABELS and r.variant == upper_name],
                ]
                diffs[v] = {
                    "dice": paired_difference(pool, setting, preset.reference, v, "dice"),
                    "hd95": paired_difference(pool, setting, preset.reference, v, "hd95"),
                }
        gaps: dict[str, dict[tuple[str, str], float | None]] = {}
        if preset.baseline in dice and upper_dice:
            base = dice[preset.baseline]
            for v in variants:
                if v in (preset.baseline, upper_name):
                    continue
                gaps[v] = {
                    key: gap_closed(
                        dice[v].get(key, {}).get("mean"), base.get(key, {}).get("mean"), upper_dice.get(key, {}).get("mean")
                    )
                    for key in base
                }
        out["settings"][setting] = {"variants": list(dice), "dice": dice, "hd95": hd95, "paired": diffs, "gap_closed": gaps}
    return out


# ==================================================================================================
# report
# ==================================================================================================
def _fmt(value: float | None, digits: int = 3, pct: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.{max(0, digits - 2)}f}" if pct else f"{value:.{digits}f}"


def _mean_sd(entry: Mapping[str, Any] | None, digits: int, scale: float = 1.0, show_undefined: bool = False) -> str:
    undefined = ""
    if entry and show_undefined and entry.get("undefined"):
        undefined = f" ({entry['undefined']}/{entry['values']} undef.)"
    if not entry or entry.get("mean") is None:
        return "–" + undefined
    m = entry["mean"] * scale
    sd = entry.get("sd")
    return (f"{m:.{digits}f} ± {sd * scale:.{digits}f}" if sd is not None else f"{m:.{digits}f}") + undefined


def _keys_in_order(tables: Mapping[str, Mapping[tuple[str, str], Any]], datasets: Sequence[str]) -> list[tuple[str, str]]:
    keys = {k for t in tables.values() for k in t}
    ordered = []
    for d in datasets:
        labels = sorted(k[1] for k in keys if k[0] == d and k[1] != MEAN_LABEL)
        ordered += [(d, lab) for lab in labels]
        if (d, MEAN_LABEL) in keys:
            ordered.append((d, MEAN_LABEL))
    return ordered


def _short(dataset: str) -> str:
    return dataset.split("_", 1)[-1]


def run_rows(results: Sequence[RunResult], preset: Preset | None = None) -> list[dict[str, Any]]:
    """One row per finished run: steps, images/step, wall times, it/s, data-wait and loss shares.

    Rows follow the preset's order of settings and variants (then seeds) when it is given.
    """
    settings = [*preset.settings, ALL_LABELS] if preset else []
    variants = [v.name for v in preset.variants] if preset else []

    def order(r: RunResult) -> tuple[Any, ...]:
        return (
            settings.index(r.setting) if r.setting in settings else len(settings), r.setting,
            variants.index(r.variant) if r.variant in variants else len(variants), r.variant, r.seed,
        )

    rows = []
    for r in sorted(results, key=order):
        rec = r.record
        train = rec.get("train", {})
        stats = train.get("log_stats", {})
        rows.append(
            {
                "run": rec.get("run", {}).get("run_id", f"{r.setting}__{r.variant}__seed{r.seed}"),
                "steps": rec.get("run", {}).get("steps"),
                "images_per_step": rec.get("run", {}).get("images_per_step"),
                "train_wall_s": train.get("wall_seconds"),
                "loop_s": stats.get("loop_seconds"),
                "it_per_s": stats.get("it_per_s"),
                "data_wait": stats.get("data_wait_fraction"),
                "consistency_share": stats.get("consistency_loss_share"),
                "eval_wall_s": rec.get("eval", {}).get("wall_seconds"),
            }
        )
    return rows


def render_markdown(
    preset: Preset,
    agg: Mapping[str, Any],
    results: Sequence[RunResult],
    header: Mapping[str, Any],
    planned: int,
) -> str:
    """``results.md``: command and settings, then the tables (see the module docstring)."""
    lines = [f"# Semi-supervised benchmark: preset `{preset.name}`", ""]
    lines += ["```", header["command"], "```", ""]
    lines += [f"- {k}: {v}" for k, v in header["settings"].items()]
    lines += ["", preset.description, ""]
    done = len(results)
    if done < planned:
        lines += [f"**Incomplete: {done} of {planned} runs finished.**", ""]
    variant_desc = {v.name: v.description for v in preset.variants}
    lines += ["Methods:", ""]
    lines += [f"- `{v.name}` ({v.method}, {variant_steps(preset, v)} steps): {variant_desc[v.name]}" for v in preset.variants]
    lines += [""]

    for setting, s in agg["settings"].items():
        variants = s["variants"]
        if not variants:  # no finished run of this setting yet (partial runs of a preset)
            continue
        lines += [f"## Setting `{setting}`", ""]
        for metric, title, digits, scale in (("dice", "Dice (%)", 1, 100.0), ("hd95", "HD95 (mm)", 2, 1.0)):
            lines += [f"### {title}: mean ± sd over seeds (per seed: mean over held-out cases)", ""]
            if metric == "hd95":
                lines += [
                    "HD95 is undefined for a case where the prediction (or reference) is empty; such cases "
                    "are left out of the mean and counted as `(undefined/all seed-case values undef.)`.",
                    "",
                ]
            lines += ["| dataset | prompt | " + " | ".join(f"`{v}`" for v in variants) + " |"]
            lines += ["|---|---|" + "---|" * len(variants)]
            for key in _keys_in_order(s[metric], preset.datasets):
                cells = [_mean_sd(s[metric][v].get(key), digits, scale, metric == "hd95") for v in variants]
                label = "**mean over prompts**" if key[1] == MEAN_LABEL else key[1]
                lines += [f"| {_short(key[0])} | {label} | " + " | ".join(cells) + " |"]
            lines += [""]
        if s["paired"]:
            lines += [
                f"### Paired differences `{preset.reference}` minus each method (per case, seed-matched)",
                "",
                "Mean over held-out cases of the per-case difference (averaged over the shared seeds) ± its "
                "standard error (sd/√n, n cases). Dice in points (positive = VerSemi better); HD95 in mm "
                "(negative = VerSemi better; cases where either HD95 is undefined are left out).",
                "",
            ]
            others = list(s["paired"])
            lines += ["| dataset | prompt | " + " | ".join(f"vs `{v}`" for v in others) + " |"]
            lines += ["|---|---|" + "---|" * len(others)]
            keys = _keys_in_order({v: d["dice"] for v, d in s["paired"].items()}, preset.datasets)
            for key in keys:
                cells = []
                for v in others:
                    d = s["paired"][v]["dice"].get(key)
                    h = s["paired"][v]["hd95"].get(key)
                    dtxt = "–" if not d or d["mean"] is None else (
                        f"{100 * d['mean']:+.1f} ± {100 * d['se']:.1f}" if d["se"] is not None else f"{100 * d['mean']:+.1f}"
                    )
                    htxt = "–" if not h or h["mean"] is None else (
                        f"{h['mean']:+.2f} ± {h['se']:.2f}" if h["se"] is not None else f"{h['mean']:+.2f}"
                    )
                    n = d["n"] if d else 0
                    cells.append(f"{dtxt} pts; {htxt} mm (n={n})")
                label = "**mean over prompts**" if key[1] == MEAN_LABEL else key[1]
                lines += [f"| {_short(key[0])} | {label} | " + " | ".join(cells) + " |"]
            lines += [""]
        if s["gap_closed"]:
            gv = list(s["gap_closed"])
            lines += [
                f"### Share of the gap to the upper bound closed (Dice): (method − `{preset.baseline}`) / "
                f"(`{preset.upper_bound}` − `{preset.baseline}`), seed means",
                "",
                "| dataset | prompt | " + " | ".join(f"`{v}`" for v in gv) + " |",
                "|---|---|" + "---|" * len(gv),
            ]
            for key in _keys_in_order(s["gap_closed"], preset.datasets):
                cells = [
                    (f"{100 * s['gap_closed'][v][key]:.0f} %" if s["gap_closed"][v].get(key) is not None else "–")
                    for v in gv
                ]
                label = "**mean over prompts**" if key[1] == MEAN_LABEL else key[1]
                lines += [f"| {_short(key[0])} | {label} | " + " | ".join(cells) + " |"]
            lines += ["", "– : the upper bound is less than 1 Dice point above the baseline (no gap to measure) or a run is missing.", ""]

    lines += ["## Runs: compute and speed", ""]
    lines += [
        "Wall time of `versemi train` (process start to exit, including loading the cached cases) and of "
        "prediction + evaluation; it/s and the share of step time spent waiting for the next batch come "
        "from the trainer's `train_log.jsonl` (the loop only); consistency share = weighted consistency "
        "term / total loss over the last quarter of the logged steps.",
        "",
        "| run | steps | images/step | train wall (s) | loop (s) | it/s | data wait | consistency share | eval wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in run_rows(results, preset):
        lines += [
            f"| {row['run']} | {row['steps']} | {_fmt(row['images_per_step'], 1)} | {_fmt(row['train_wall_s'], 0)} | "
            f"{_fmt(row['loop_s'], 0)} | {_fmt(row['it_per_s'], 2)} | {_fmt(row['data_wait'], 3, pct=True)} % | "
            f"{_fmt(row['consistency_share'], 3, pct=True) + ' %' if row['consistency_share'] is not None else '–'} | "
            f"{_fmt(row['eval_wall_s'], 0)} |"
        ]
    lines += [""]
    return "\n".join(lines)


def plot_results(preset: Preset, agg: Mapping[str, Any], path: Path) -> Path | None:
    """``results.png``: per dataset, mean-over-prompts Dice per method and setting, seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(agg["settings"])
    if not settings:
        return None
    variants = [v.name for v in preset.variants]
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(preset.datasets), figsize=(5.0 * len(preset.datasets), 4.2), squeeze=False)
    width = 0.8 / max(1, len(variants))
    for ax, dataset in zip(axes[0], preset.datasets):
        key = (dataset, MEAN_LABEL)
        for i, v in enumerate(variants):
            xs, ms, sds, dots = [], [], [], []
            for j, setting in enumerate(settings):
                entry = agg["settings"][setting]["dice"].get(v, {}).get(key)
                if not entry or entry.get("mean") is None:
                    continue
                x = j + (i - (len(variants) - 1) / 2) * width
                xs.append(x)
                ms.append(100 * entry["mean"])
                sds.append(100 * (entry.get("sd") or 0.0))
                dots += [(x, 100 * val) for val in entry["seeds"].values() if val is not None]
            if xs:
                ax.bar(xs, ms, width, yerr=sds, capsize=3, color=colours[v], label=v, alpha=0.85)
            if dots:
                ax.scatter([d[0] for d in dots], [d[1] for d in dots], s=8, color="black", zorder=3)
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(settings)
        ax.set_ylim(0, 100)
        ax.set_title(f"{_short(dataset)}: Dice (mean over prompts)")
        ax.set_ylabel("Dice (%)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"VerSemi benchmark, preset {preset.name}: bars = mean over seeds, error = sd, dots = seeds")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    from versemi.fileio import atomic_write

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path


def _json_keys(obj: Any) -> Any:
    """Tuple dict keys -> ``"dataset/label"`` strings (for results.json)."""
    if isinstance(obj, dict):
        return {("/".join(k) if isinstance(k, tuple) else str(k)): _json_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_keys(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(
    preset: Preset, results_dir: Path, header: Mapping[str, Any], planned: int
) -> dict[str, Path]:
    """Aggregate every finished run in ``results_dir/runs`` into results.md/.json/.png."""
    from versemi.fileio import atomic_write_text

    results = load_results(results_dir / "runs")
    agg = aggregate(preset, results)
    md = render_markdown(preset, agg, results, header, planned)
    atomic_write_text(results_dir / "results.md", md)
    write_json_atomic(
        results_dir / "results.json",
        _json_keys({"header": dict(header), "aggregate": agg, "runs": run_rows(results, preset)}),
    )
    out = {"results.md": results_dir / "results.md", "results.json": results_dir / "results.json"}
    png = plot_results(preset, agg, results_dir / "results.png")
    if png is not None:
        out["results.png"] = png
    return out


# ==================================================================================================
# main
# ==================================================================================================
def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "training", "bench"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" (working tree has uncommitted changes in training/ or bench/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report_header(preset: Preset, args: argparse.Namespace, split: Mapping[str, Sequence[str]], runs: Sequence[RunSpec]) -> dict[str, Any]:
    """The exact command and the settings written at the top of results.md."""
    import torch

    steps = sorted({(r.variant, r.steps, r.images_per_step) for r in runs})
    settings = {
        "date (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch "
        f"{torch.__version__}, device {args.device or preset.device}, {args.threads or preset.threads} torch threads",
        "data": f"{args.data} (protocol {args.protocol})",
        "datasets": ", ".join(preset.datasets) + " (Dataset004_SpleenCT left out: a single case)",
        "settings": ", ".join(preset.settings) + f" (+ `{ALL_LABELS}` for the upper bound)",
        "seeds": ", ".join(str(s) for s in (args.seeds or preset.seeds)),
        "grid": (f"target spacing {list(preset.target_spacing)} mm (x, y, z), patch {list(preset.patch_size)} voxels (x, y, z)"
                 if preset.target_spacing is not None and preset.patch_size is not None else
                 f"per-dataset plans ({json.dumps(preset.plans or {})}; each run's train/plans.json)"),
        "model": json.dumps(preset.model),
        "training (shared)": json.dumps(preset.training),
        "steps": "; ".join(f"{v}: {s} steps x {ipp:g} images/step" for v, s, ipp in steps),
        ("development split (training side)" if args.split != "heldout" else "held-out evaluation split"): ", ".join(
            f"{_short(d)} {len(c)} cases" + (f" (first {preset.max_eval_cases} evaluated)" if preset.max_eval_cases else "")
            for d, c in split.items()
        )
        + (f"; {int(round(100 * DEV_FRACTION))} % of each dataset's cases (ACDC: patients) following the "
           f"held-out {int(round(100 * preset.heldout_fraction))} % in SHA-256 order; both excluded from training"
           if args.split == "dev" else
           "; every case no protocol setting labels except the held-out ones (the development split and the "
           "unlabeled pool, which supervised-only runs never read); the held-out and development splits are "
           "excluded from training, the unlabeled pool stays in the datasets (the plans are a dev run's)"
           if args.split == "dev-wide" else
           "; the development split plus every other group of the unlabeled pool (SHA-256 order), all "
           "excluded from training with the held-out split; the rest of the pool stays unlabeled training "
           "data, so semi-supervised runs train on half the unlabeled scans of the real runs"
           if args.split == "dev-semi" else
           f"; {int(round(100 * preset.heldout_fraction))} % of each dataset's cases (ACDC: patients), SHA-256 "
           "order among cases no protocol setting labels; excluded from training via `exclude` (see split.json)"),
        "model selection": "none: fixed step budget, the last checkpoint is evaluated; the held-out cases are "
        "used only for this report; the trainer's validation split is off",
        "evaluation": f"versemi.inference.Predictor (overlap {preset.eval_overlap}, the dataset's own prompts), "
        "versemi.evaluation.evaluate_folders on the original grid; HD95 averaged where defined",
    }
    return {"command": shlex.join([sys.executable, _relative(Path(__file__)), *args.argv]), "settings": settings}


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prepare_cache(preset: Preset, configs: Sequence[dict[str, Any]], threads: int) -> dict[str, Any]:
    """Preprocess every case of every run into the shared cache once, before timing any run.

    Otherwise the first run of each kind would pay for preprocessing in its wall time.
    """
    from versemi.data.cache import PreprocessedCache, fill_cache, jobs_for_config
    from versemi.data.config import TrainConfig
    from versemi.data.plans import plans_for_config

    jobs, seen = [], set()
    for cfg in configs:
        config = TrainConfig.from_dict(cfg, base_dir=REPO_ROOT)
        for job in jobs_for_config(config, plans_for_config(config)):
            ident = (str(job.image_path), str(job.label_path), job.dataset, json.dumps(job.spec.to_dict()))
            if ident not in seen:
                seen.add(ident)
                jobs.append(job)
    start = time.perf_counter()
    cache_dir = Path(configs[0]["cache_dir"])
    _, stats = fill_cache(PreprocessedCache(cache_dir), jobs, workers=max(1, threads), progress=False)
    return {"cases": len(jobs), "built": stats.misses, "reused": stats.hits, "seconds": time.perf_counter() - start}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help="cpu-2ds, cpu3, cpu-quick or gpu-la (bench/semisup_presets.py)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the nnU-Net datasets (default ../shared/data)")
    p.add_argument("--protocol", type=Path, default=None, help="protocol file (default DATA/protocol.json)")
    p.add_argument("--results", type=Path, default=None, help="results folder (default bench/results/<preset>)")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed cache (default bench/results/cache)")
    p.add_argument("--device", default=None, help="training/evaluation device (default: the preset's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument("--only", default=None, help="only runs whose id matches this glob, e.g. '*seed0'")
    p.add_argument("--steps", type=int, default=None,
                   help="override the preset's step budget (equal-compute variants scale with it); use a "
                        "separate --results folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the preset's training section for every variant, dotted for "
                        "nested keys, VALUE parsed as JSON, else YAML, e.g. --set versemi.synthetic_weight=0 or "
                        "--set loss.batch_dice=true (repeatable; use a separate --results folder)")
    p.add_argument("--set-config", dest="config_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run configs outside training:, dotted, e.g. --set-config "
                        "model.base_filters=32 or --set-config "
                        "plans.overrides.Dataset002_LeftAtrium.target_spacing=[1.25,1.25,1.25] (repeatable)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="train and evaluate on these datasets of --data instead of the preset's (e.g. recipe "
                        "development on one dataset; use a separate --results folder)")
    p.add_argument("--split", choices=("heldout", "dev", "dev-wide", "dev-semi"), default="heldout",
                   help="evaluate on the held-out split (reports) or on the development split (recipe "
                        "choices: training-side cases after the held-out ones, both excluded from training); "
                        "dev-wide: the development split plus every unlabeled training-side case, for "
                        "supervised-only runs at a protocol setting only (they never read those cases); "
                        "dev-semi: the development split plus half of the unlabeled pool, excluded from "
                        "training, for every method (semi-supervised ones keep the other half unlabeled); "
                        "default results folder bench/results/<preset>-dev for all three")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained and evaluated at once (each uses the preset's threads + DataLoader "
                        "workers; default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and settings, do nothing")
    p.add_argument("--report-only", action="store_true", help="only rebuild results.md/json/png from finished runs")
    return p.parse_args(argv)


def apply_overrides(
    preset: Preset, steps: int | None, overrides: Sequence[str], config_overrides: Sequence[str] = ()
) -> Preset:
    """The preset with ``--steps``, ``--set KEY=VALUE`` (its training section) and ``--set-config
    KEY=VALUE`` (``model``, ``plans``) applied (diagnostic runs of one preset). A ``--set`` key wins
    over a variant's own value for it (so the cpu3 VerSemi weights can be set back).

    Raises:
        ValueError: a malformed override or a non-positive step budget.
    """
    import dataclasses

    training = _set_keys(json.loads(json.dumps(preset.training)), overrides, "--set")
    top = _set_keys({"model": dict(preset.model), "plans": json.loads(json.dumps(preset.plans or {}))},
                    config_overrides, "--set-config")
    unknown = sorted(set(top) - {"model", "plans"})
    if unknown:
        raise ValueError(f"--set-config: only model.* and plans.* keys can be set, not {unknown[0]}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be positive, got {steps}")
    variants = tuple(
        dataclasses.replace(v, training=_set_keys(json.loads(json.dumps(v.training)), overrides, "--set"))
        if v.training else v
        for v in preset.variants
    )
    return dataclasses.replace(preset, training=training, steps=steps or preset.steps, model=top["model"],
                               plans=top["plans"] or None, variants=variants)


def _set_keys(root: dict[str, Any], overrides: Sequence[str], option: str) -> dict[str, Any]:
    """``root`` with each dotted ``KEY=VALUE`` set (VALUE parsed as JSON, else YAML)."""
    import yaml

    training = root
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE")
        *parents, leaf = key.strip().split(".")
        node = training
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{option} {item!r}: {part} is not a mapping")
        try:  # JSON first: PyYAML reads "3e-4" as a string
            node[leaf] = json.loads(text)
        except ValueError:
            node[leaf] = yaml.safe_load(text)
    return training


def only_datasets(training: Mapping[str, Any], datasets: Sequence[str]) -> dict[str, Any]:
    """A training section for a subset of the preset's datasets: per-dataset augmentation of the others dropped
    (the trainer refuses names that are not in the run)."""
    training = dict(training)
    if "dataset_augmentation" in training:
        training["dataset_augmentation"] = {k: v for k, v in training["dataset_augmentation"].items() if k in datasets}
    return training


def log(msg: str) -> None:
    print(f"[{_dt.datetime.now(_dt.timezone.utc).strftime('%H:%M:%S')}] {msg}", flush=True)


def train_and_evaluate(
    tag: str,
    r: RunSpec,
    config: dict[str, Any],
    run_dir: Path,
    data_dir: Path,
    split: Mapping[str, Sequence[str]],
    preset: Preset,
    device: str,
    threads: int,
) -> tuple[str, bool]:
    """Train one run, evaluate its last checkpoint on the held-out cases, write ``metrics.json``.

    Returns:
        ``(run id, success)``; a failure is logged, not raised (the other runs go on).
    """
    log(f"{tag} {r.run_id}: training {r.method}, {r.steps} steps")
    try:
        train = run_training(r, config, run_dir, device, threads)
        stats = train["log_stats"]
        log(
            f"{tag} {r.run_id}: trained in {train['wall_seconds']:.0f} s "
            f"({_fmt(stats.get('it_per_s'), 2)} it/s, data wait {_fmt(stats.get('data_wait_fraction'), 3, pct=True)} %); evaluating"
        )
        rows, eval_seconds = evaluate_checkpoint(
            Path(train["checkpoint"]), data_dir, split, run_dir / "predictions", device, threads,
            preset.eval_overlap, preset.eval_batch_size, preset.max_eval_cases,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        log(f"{tag} {r.run_id}: FAILED: {exc}")
        return r.run_id, False
    summary = {
        "/".join(key): {
            "dice": _mean(c["dice"] for c in cases.values()),
            "hd95": _mean(c["hd95"] for c in cases.values()),
            "n": len(cases),
        }
        for key, cases in per_case_scores(rows).items()
    }
    write_json_atomic(
        run_dir / METRICS_FILE,
        {
            "run": {**asdict(r), "run_id": r.run_id},
            "preset": preset.name,
            "train": train,
            "eval": {"wall_seconds": eval_seconds, "checkpoint": train["checkpoint"], "cases": len({(x["dataset"], x["case"]) for x in rows})},
            "summary": summary,
            "rows": rows,
        },
    )
    means = ", ".join(f"{_short(k.split('/')[0])} {100 * v['dice']:.1f}" for k, v in summary.items()
                      if k.endswith(MEAN_LABEL) and v["dice"] is not None)
    log(f"{tag} {r.run_id}: evaluated in {eval_seconds:.0f} s; Dice {means}")
    return r.run_id, True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        preset = get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    try:
        preset = apply_overrides(preset, args.steps, args.overrides, args.config_overrides)
        if args.datasets:
            import dataclasses

            plans = json.loads(json.dumps(preset.plans or {}))
            if "overrides" in plans:
                plans["overrides"] = {k: v for k, v in plans["overrides"].items() if k in args.datasets}
            preset = dataclasses.replace(preset, datasets=tuple(args.datasets), plans=plans or None,
                                         training=only_datasets(preset.training, args.datasets))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.data = args.data.expanduser().resolve()
    args.protocol = (args.protocol or args.data / "protocol.json").expanduser().resolve()
    default_results = DEFAULT_RESULTS / (preset.name + ("-dev" if args.split != "heldout" else ""))
    results_dir = (args.results or default_results).expanduser().resolve()
    cache_dir = (args.cache_dir or DEFAULT_RESULTS / "cache").expanduser().resolve()
    device = args.device or preset.device
    threads = args.threads or preset.threads
    args.device, args.threads = device, threads
    if not args.protocol.is_file():
        print(f"error: {args.protocol}: protocol file not found (use --data/--protocol)", file=sys.stderr)
        return 2
    protocol = json.loads(args.protocol.read_text(encoding="utf-8"))
    try:
        split = make_split(args.data, preset.datasets, protocol, preset.heldout_fraction, args.split)
        excluded = training_exclusions(args.data, preset, protocol, args.split)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = plan_runs(preset, args.seeds)
    if args.only:
        runs = [r for r in runs if fnmatch.fnmatch(r.run_id, args.only)]
    if args.split == "dev-wide":
        try:
            check_dev_wide_runs(runs)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    header = report_header(preset, args, split, runs)

    runs_dir = results_dir / "runs"
    if args.dry_run:
        print(f"preset {preset.name}: {len(runs)} runs -> {results_dir}")
        for k, v in header["settings"].items():
            print(f"  {k}: {v}")
        total_images = 0.0
        for r in runs:
            state = "done" if (runs_dir / r.run_id / METRICS_FILE).is_file() else "todo"
            total_images += r.steps * r.images_per_step
            print(f"  [{state}] {r.run_id}: {r.method}, {r.steps} steps x {r.images_per_step:g} images/step"
                  + (f", training {json.dumps(r.training)}" if r.training else ""))
        print(f"  total: {total_images:.0f} training images through the network"
              + (f"; expected about {preset.expected_minutes:g} min" if preset.expected_minutes else ""))
        return 0

    results_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results_dir / "split.json", {"split": args.split, "evaluated": split, "excluded": excluded,
                                                   "fraction": preset.heldout_fraction, "protocol": str(args.protocol)})
    header_path = results_dir / "header.json"
    if args.report_only:
        # The report names the command that trained the runs, not this one.
        if header_path.is_file():
            header = json.loads(header_path.read_text(encoding="utf-8"))
        else:
            argv = [a for a in args.argv if a != "--report-only"]
            header["command"] = shlex.join([sys.executable, _relative(Path(__file__)), *argv])
        header["settings"]["report rebuilt"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        paths = write_report(preset, results_dir, header, len(runs))
        log(f"wrote {', '.join(str(p) for p in paths.values())}")
        return 0

    write_json_atomic(header_path, header)
    todo = [r for r in runs if not (runs_dir / r.run_id / METRICS_FILE).is_file()]
    log(f"preset {preset.name}: {len(runs)} runs, {len(runs) - len(todo)} already done; results in {results_dir}")
    configs = {
        r.run_id: make_config(preset, r, args.data, args.protocol, excluded, cache_dir, runs_dir / r.run_id / "train")
        for r in todo
    }
    if todo:
        # Every distinct labeled/unlabeled selection, preprocessed once up front.
        reps: dict[str, dict[str, Any]] = {}
        for r in todo:
            reps.setdefault(r.setting, configs[r.run_id])
        log(f"preprocessing into {cache_dir} ...")
        prep = prepare_cache(preset, list(reps.values()), threads)
        log(f"cache: {prep['cases']} cases, {prep['built']} preprocessed, {prep['reused']} reused, {prep['seconds']:.0f} s")
    failures = []
    jobs = max(1, min(args.jobs, len(todo))) if todo else 1
    work = [
        (f"[{i}/{len(todo)}]", r, configs[r.run_id], runs_dir / r.run_id, args.data, split, preset, device, threads)
        for i, r in enumerate(todo, 1)
    ]
    if jobs == 1:
        outcomes = (train_and_evaluate(*w) for w in work)
    else:
        # One process per run at a time (training is already a subprocess; the evaluation runs in
        # the worker); fork keeps the imported modules.
        pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))
        outcomes = (f.result() for f in concurrent.futures.as_completed([pool.submit(train_and_evaluate, *w) for w in work]))
    for run_id, ok in outcomes:
        if not ok:
            failures.append(run_id)
        write_report(preset, results_dir, header, len(runs))
    paths = write_report(preset, results_dir, header, len(runs))
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    if failures:
        log(f"{len(failures)} run(s) failed: {', '.join(failures)} (rerun the same command to retry them)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
