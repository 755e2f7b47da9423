"""The ``export`` step of ``bench/default_model.py``: the trained default model into the package.

``.venv/bin/python bench/default_model.py export`` (after ``train`` and ``evaluate``) writes:

- ``training/src/versemi/resources/models/<NAME>-<VERSION>.pt``: the prediction-only checkpoint with
  float16 weights (:func:`versemi.models.publish.inference_checkpoint`; at most 20 MB), its name and
  version recorded, its SHA-256 inside;
- the model card, ``training/src/versemi/resources/models/<NAME>-<VERSION>.md`` and the identical
  ``docs/models/<NAME>.md`` (a test keeps them identical): what it segments and on which grids and
  modalities, the training data with each dataset's source and licence (quoted from
  ``../shared/data/README.md``), the recipe, the held-out Dice/HD95 per prompt from
  ``evaluation.json`` with the command that recomputes them, intended use and known failure modes;
- its entry in ``training/src/versemi/resources/catalogue.json``: ``default``, ``embedded``,
  ``card``, release ``url``, ``sha256``, ``size``, ``version``, ``label_space``, ``plans`` and the
  ``heldout`` split (:func:`versemi.models.publish.catalogue_entry`);

then checks the result as users will meet it: the packaged catalogue's default entry verifies
(size, SHA-256) and loads. Edit the card's prose afterwards if needed, in both copies.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "training" / "src" / "versemi" / "resources"
DOCS_MODELS = REPO / "docs" / "models"
RELEASES = "https://github.com/versemi/SlicerVerSemiSegmenter/releases/download"
MAX_BYTES = 20 * 1024 * 1024
# The weights inherit the most restrictive terms of their training data (ACDC: CC BY-NC-SA 4.0).
LICENCE = "CC-BY-NC-SA-4.0"


def data_sources(data: Path) -> tuple[dict[str, str], str]:
    """Each dataset's "source and licence" cell and the attribution paragraph of the data README."""
    readme = data / "README.md"
    if not readme.is_file():
        return {}, ""
    text = readme.read_text(encoding="utf-8")
    sources = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.match(r"^Dataset\d{3}_", cells[0]):
            sources[cells[0]] = cells[-1]
    match = re.search(r"^Attribution:.*?(?=\n\s*\n)", text, re.S | re.M)
    return sources, " ".join(match.group(0).split()) if match else ""


def _fmt_triple(values: Any, digits: int = 3) -> str:
    return " x ".join(f"{float(v):.{digits}g}" for v in values)


def model_card(name: str, version: str, checkpoint: Any, source_training: Any, evaluation: Mapping[str, Any],
               heldout: Mapping[str, list[str]], counts: Mapping[str, int], sources: Mapping[str, str],
               attribution: str, sha256: str, size: int, licence: str) -> str:
    """The model card (markdown); see the module docstring for what it holds."""
    space, plans = checkpoint.label_space, checkpoint.plans
    lines = [f"# {name} {version}", "",
             f"The VerSemi default model: one task-prompted 3D network that segments "
             f"{', '.join(p.name for p in space.prompts if not p.synthetic)} "
             "(plus the synthetic `all_foreground` prompt). It ships inside the versemi package and is what "
             "`versemi predict` (without `--model`), `versemi demo` and the Slicer module use by default.", "",
             "**Intended use: research only, not for clinical use.** It was trained on a few public datasets "
             "on a CPU budget; it is not a medical device.", "",
             "## What each prompt expects", "",
             "| prompt | trained on | modality | grid the scan is resampled to (mm) | window (voxels) | training scans (median extent, mm) |",
             "|---|---|---|---|---|---|"]
    for prompt in space.prompts:
        if prompt.synthetic:
            continue
        for src in prompt.sources:
            plan = plans.plan_for(src.dataset)
            fp = plan.fingerprint
            extent = _fmt_triple([n * s for n, s in zip(fp.median_size, fp.median_spacing)]) if fp else "?"
            lines.append(f"| `{prompt.name}` | {src.dataset} (label {src.value}) | {plan.spec.modality} | "
                         f"{_fmt_triple(plan.target_spacing)} | {' x '.join(str(p) for p in plan.patch_size)} | {extent} |")
    geometries = [f"{d}: {p.network.describe()}" for d, p in plans.datasets.items() if p.network is not None]
    if geometries:
        lines += ["", "Network geometry per dataset (x, y, z; per stage, from the plan's spacing: thick-slice scans "
                      "are pooled and convolved in-plane until their slices catch up): " + "; ".join(geometries) + "."]
    lines += ["", "## Training data", "",
              "| dataset | cases trained on | held out | source and licence |", "|---|---|---|---|"]
    for dataset in plans.datasets:
        lines.append(f"| {dataset} | {counts.get(dataset, '?')} | {len(heldout.get(dataset, []))} | "
                     f"{sources.get(dataset, 'see ../shared/data/README.md')} |")
    if attribution:
        lines += ["", attribution]
    lines += ["", "Every case bundled in `examples/data` of a dataset with held-out cases is held out, so "
              "`versemi demo` scores it on scans it never saw."]
    unevaluated = [d for d in plans.datasets if not heldout.get(d)]
    if unevaluated:
        lines += ["", f"{', '.join(unevaluated)}: no held-out case (too few cases to hold one out), so its prompts "
                      "have no held-out number; `versemi demo` marks such cases \"TRAINED ON\"."]
    if source_training is not None:
        config = source_training.config or {}
        lines += ["", "## Recipe", "",
                  f"Method `{source_training.method}`, {source_training.step} steps; network "
                  f"`{json.dumps(checkpoint.model_config, sort_keys=True)}`; training options "
                  f"`{json.dumps(source_training.options or config.get('training', {}), sort_keys=True)}`. "
                  "Weights stored in float16 (predicted with a float32 network). Trained by "
                  "`.venv/bin/python bench/default_model.py train` (every training case of the shared datasets "
                  "labeled, the held-out cases excluded) on 2 CPU cores; the README gives the time."]
        if source_training.method == "supervised":
            lines += ["", "Why supervised-only and not VerSemi: with every training case labeled there are no "
                          "unlabeled scans left for VerSemi's unlabeled terms, and in the 10 % comparison of the "
                          "README VerSemi did not beat supervised-only at this CPU budget."]
    lines += ["", "## Held-out results", "",
              "| dataset / prompt | Dice (%) | HD95 (mm) | cases |", "|---|---|---|---|"]
    for key, value in (evaluation.get("summary") or {}).items():
        dice = value.get("dice")
        hd95 = value.get("hd95")
        lines.append(f"| {key} | {'-' if dice is None else f'{100 * dice:.1f}'} | "
                     f"{'-' if hd95 is None else f'{hd95:.2f}'} | {value.get('n', '?')} |")
    lines += ["", f"Computed by `{evaluation.get('command', 'bench/default_model.py evaluate')}` on the held-out "
              "cases of `../shared/data` (default settings: 0.5 overlap, no TTA); "
              "`versemi demo --data ../shared/data --heldout-only` recomputes the per-prompt means with the "
              "shipped file.", "",
              "## Known failure modes", "",
              "- **Field of view.** The hippocampus and left-atrium training scans are crops around the structure "
              "(see the median extents above). In a scan much larger than those crops `versemi predict` first "
              "locates the structure with the dataset's shipped localiser where there is one (coarse-to-fine; "
              "validated on mosaics of crops, not on real whole heads) and otherwise warns (\"field of view ... "
              "crop around the structure\"); crop with `--roi` or the Slicer panel's ROI box.",
              "- **Modality.** Each prompt knows only its dataset's modality and contrast (T1 MRI for the "
              "hippocampus, LGE-MRI for the left atrium, cine MRI for the ACDC structures). By default a prompt "
              "runs only on scans of its modality (the modality guard); other MR sequences are out of "
              "distribution and a scan whose intensities are far from the training data's gets a warning.",
              "- **ACDC** scans have a nominal 1.5 x 1.5 x 10 mm grid (the source stores none): cardiac cine MRI "
              "with other slice thickness may be segmented poorly.",
              "- Pathology, children, implants and scanners unlike the training data were not evaluated.", "",
              "## Post-processing per prompt", "",
              "Applied by `versemi predict` to the labelmap (`largest_component`: one connected component; "
              "`paired`: one per side, e.g. left and right hippocampus; `above_fraction:F`: every component "
              "at least F times the largest; rules chosen on the development split, never on held-out "
              "cases, by `bench/postprocessing_rules.py`; hippocampus crops are also scored side by side with "
              "a mirrored crop, as in a head):", "",
              "| prompt | rule |", "|---|---|",
              *[f"| {p.name} | {checkpoint.postprocessing.get(p.name, 'none')} |" for p in space.prompts if not p.synthetic],
              "",
              "## File", "",
              f"`models/{name}-{version}.pt` in the versemi package: {size} bytes, SHA-256 `{sha256}` "
              "(checked before every load; `versemi models verify`). Licence of the weights: "
              f"{licence} (the most restrictive terms of the training data).", ""]
    return "\n".join(lines)


def heldout_dice(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """Prompt -> held-out mean Dice from ``evaluation.json``'s ``summary`` (``dataset/prompt`` keys)."""
    out = {}
    for key, value in (evaluation.get("summary") or {}).items():
        prompt = key.split("/", 1)[-1]
        if not prompt.startswith("(") and value.get("dice") is not None:
            out[prompt] = float(value["dice"])
    return out


def shipped_localisers(package: Path, datasets: Any) -> dict[str, Path]:
    """Dataset -> the localiser shipped in the package (``models/localiser-<dataset>.pt``, trained by
    ``bench/localiser.py``, independent of the model's weights) for the model's datasets."""
    return {d: package / "models" / f"localiser-{d}.pt" for d in datasets
            if (package / "models" / f"localiser-{d}.pt").is_file()}


def add_intensity_profiles(target: Path, data: Path, heldout: Mapping[str, list[str]]) -> list[str]:
    """Give each dataset plan of the checkpoint ``target`` that lacks one (plans made before profiles
    existed) the intensity profile of its training images in ``data`` (held-out cases excluded), so the
    modality guard can warn about far scans; rewrites ``target``. Returns the datasets changed."""
    import dataclasses

    import numpy as np
    import SimpleITK as sitk

    from versemi.checkpoint import Checkpoint
    from versemi.data.intensity import IntensityProfile
    from versemi.data.fingerprint import PROFILE_SCANS

    checkpoint = Checkpoint.load(target)
    changed = {}
    for name, plan in checkpoint.plans.datasets.items():
        fingerprint, folder = plan.fingerprint, data / name / "imagesTr"
        if fingerprint is None or fingerprint.intensity_profile is not None or not folder.is_dir():
            continue
        images = [p for p in sorted(folder.glob("*_0000.nii.gz"))
                  if p.name[: -len("_0000.nii.gz")] not in set(heldout.get(name, []))]
        if not images:
            continue
        picks = np.unique(np.linspace(0, len(images) - 1, min(PROFILE_SCANS, len(images))).astype(int))
        profile = IntensityProfile.from_scans(
            fingerprint.modality, [sitk.GetArrayFromImage(sitk.ReadImage(str(images[i]))) for i in picks])
        changed[name] = dataclasses.replace(plan, fingerprint=dataclasses.replace(fingerprint, intensity_profile=profile))
    if changed:
        plans = dataclasses.replace(checkpoint.plans, datasets={**checkpoint.plans.datasets, **changed})
        dataclasses.replace(checkpoint, plans=plans).save(target)
    return sorted(changed)


def export(args: argparse.Namespace) -> int:
    """Write the default model, its card and catalogue entry into the package (module docstring).

    ``args``: ``work`` (with ``train_done.json``, ``heldout.json``, ``evaluation.json``), ``data``
    (``../shared/data``), ``checkpoint`` (None: the trained one); optional ``name``, ``version``,
    ``package`` (default: the repository's ``versemi/resources``), ``docs`` (default: ``docs/models``),
    ``url``, ``licence``.
    """
    from versemi.checkpoint import Checkpoint
    from versemi.fileio import atomic_write_text, sha256_file
    from versemi.models import load_catalogue, verify_model
    from versemi.models.publish import catalogue_entry, inference_checkpoint, write_catalogue_entry

    name, version = getattr(args, "name", None), getattr(args, "version", None)
    if name is None or version is None:
        from default_model import NAME, VERSION  # noqa: PLC0415 - bench/default_model.py's constants

        name, version = name or NAME, version or VERSION
    work: Path = args.work
    package = Path(getattr(args, "package", None) or RESOURCES)
    docs = Path(getattr(args, "docs", None) or DOCS_MODELS)
    evaluation_file = work / "evaluation.json"
    if not evaluation_file.is_file():
        raise SystemExit(f"{evaluation_file}: missing; run `bench/default_model.py evaluate` first (the card's numbers)")
    evaluation = json.loads(evaluation_file.read_text(encoding="utf-8"))
    heldout = json.loads((work / "heldout.json").read_text(encoding="utf-8"))
    source = Path(args.checkpoint or json.loads((work / "train_done.json").read_text(encoding="utf-8"))["checkpoint"])

    stem = f"{name}-{version}"
    target = inference_checkpoint(source, package / "models" / f"{stem}.pt", model_name=name, model_version=version)
    heldout_split = json.loads((work / "heldout.json").read_text(encoding="utf-8"))
    profiled = add_intensity_profiles(target, args.data, heldout_split)
    if profiled:
        print(f"intensity profiles added from the training images: {', '.join(profiled)}")
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{target}: {size} bytes, more than the {MAX_BYTES} bytes the package may carry")
    checkpoint = Checkpoint.load(target)
    training = Checkpoint.load(source).training
    plans = checkpoint.plans
    heldout = {k: sorted(v) for k, v in heldout.items() if k in plans.datasets}
    counts = {}
    for dataset in plans.datasets:
        labels = args.data / dataset / "labelsTr"
        total = len([p for p in labels.iterdir() if p.name.endswith((".nii.gz", ".nii"))]) if labels.is_dir() else None
        counts[dataset] = total - len(heldout.get(dataset, [])) if total is not None else "?"
    sources, attribution = data_sources(args.data)
    licence = getattr(args, "licence", None) or LICENCE
    card = model_card(name, version, checkpoint, training, evaluation, heldout, counts, sources, attribution,
                      sha256_file(target), size, licence)
    atomic_write_text(package / "models" / f"{stem}.md", card)
    atomic_write_text(docs / f"{name}.md", card)
    entry = catalogue_entry(
        target, name, version, getattr(args, "url", None) or f"{RELEASES}/{stem}/{stem}.pt", licence,
        description="VerSemi default model: hippocampus, left atrium and cardiac (ACDC) prompts; "
                    "research use only", embedded=f"models/{stem}.pt", card=f"models/{stem}.md", default=True,
        heldout=heldout, heldout_dice=heldout_dice(evaluation),
        localisers={d: (f"models/{f.name}", f) for d, f in shipped_localisers(package, plans.datasets).items()},
    )
    write_catalogue_entry(package / "catalogue.json", entry)
    # As users meet it: the catalogue's default entry, verified (size, SHA-256) and loaded.
    catalogue = load_catalogue(str(package / "catalogue.json"))
    default = catalogue.default_entry()
    with tempfile.TemporaryDirectory() as empty_cache:
        result = verify_model(default.spec, catalogue, empty_cache)
    if not (default.spec == f"{name}@{version}" and result.ok and result.embedded):
        raise SystemExit(f"the exported model does not verify: {result.message}")
    Checkpoint.load(result.path, expected_sha256=default.sha256).build_model()
    print(f"{default.spec}: {target} ({size / 2**20:.1f} MiB, SHA-256 {default.sha256}), card {docs / f'{name}.md'}, "
          f"entry in {package / 'catalogue.json'}; verified and loaded")
    return 0
