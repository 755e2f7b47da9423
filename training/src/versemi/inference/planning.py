"""Planning a prediction: which preprocessing each chosen prompt needs, at which quality, where.

The first step of :class:`~versemi.inference.Predictor` (then :mod:`~versemi.inference.sliding` and
:mod:`~versemi.inference.export`); nothing here touches the network. It resolves the prompts
(:meth:`Planner.resolve_prompts`), groups those that share their training dataset's preprocessing
(:meth:`Planner.groups`: one preprocessing and one backbone pass per window), applies the quality
(:func:`effective_spec`: ``fast`` = twice the spacing), checks the ROI and the memory before any
allocation, and warns about a field of view far from the training scans' (:func:`field_of_view_warnings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.data.memory import check_preprocessing_memory
from versemi.data.plans import DatasetPlan, Plans, PlansError
from versemi.network.geometry import NetworkGeometry
from versemi.data.preprocessing import PreprocessingSpec
from versemi.inference.progress import STAGE_SPANS, ProgressReporter, StageProgress
from versemi.inference.results import LabelEntry, PredictionError
from versemi.labels import LabelSpace, UnknownPromptError

QUALITIES = ("default", "fast")
#: A scan whose extent along some axis (axes compared longest to longest, so any orientation) differs
#: from a training dataset's median scan by this factor or more is "far" from what that dataset's
#: prompts were trained on: a 180 mm head for 50 mm hippocampus crops, 400 mm abdomen for a 130 mm crop.
FIELD_OF_VIEW_FACTOR = 3.0
FAST_SPACING_FACTOR = 2.0
# What to do about a scan too large for memory (see versemi.data.memory).
MEMORY_ADVICE = ("use --quality fast (twice the spacing: 8x fewer voxels) or --roi to segment a part of the "
                 "scan, or check the scan's voxel spacing")


@dataclass(frozen=True)
class PreprocessingGroup:
    """Chosen prompts that share one preprocessing, hence one preprocessing + backbone pass.

    Attributes:
        spec: The checkpoint's preprocessing for these prompts (before the ``fast`` quality's coarser
            spacing is applied, see :func:`effective_spec`).
        datasets: The training datasets whose spec this is, among the chosen prompts' sources.
        positions: Indices into the chosen prompt list (label value = position + 1).
        patch_size_zyx: The sliding window: the planned patch of the group's first dataset.
        hidden_prompt_ids: Hidden prompts run in this group's pass (only in the first group).
        geometry: The network geometry of the dataset whose window is used (``None``: isotropic).
    """

    spec: PreprocessingSpec
    datasets: tuple[str, ...]
    positions: tuple[int, ...]
    patch_size_zyx: tuple[int, int, int]
    hidden_prompt_ids: tuple[int, ...] = ()
    geometry: NetworkGeometry | None = None


class Planner:
    """The preprocessing groups of a model's prompts (its label space and plans).

    Args:
        label_space: The model's prompts.
        plans: The model's plans.
        dataset: Preprocess every input like this training dataset whatever the prompts (None: each
            prompt like the dataset(s) it was trained from).
        source: How to name the model in messages.

    Raises:
        PredictionError: ``dataset`` is not one the model was trained on (the message lists them).
    """

    def __init__(self, label_space: LabelSpace, plans: Plans, dataset: str | None = None,
                 source: str = "model") -> None:
        self.label_space = label_space
        self.plans = plans
        self.spec = plans.datasets[plans.default_dataset].spec
        self.specs_by_dataset = {name: plans.spec_for(name) for name in plans.sources}
        if dataset is not None and dataset not in plans.sources:
            raise PredictionError(
                f"{source}: unknown dataset {dataset!r} for the preprocessing; the model was trained on "
                f"{', '.join(plans.sources) or 'no named dataset'}"
            )
        self.dataset = dataset

    def dataset_spec(self, dataset: str) -> PreprocessingSpec:
        """The preprocessing a training dataset (or a folder mapped to one) used; the default
        dataset's for a source the plans do not know."""
        return self.specs_by_dataset.get(dataset, self.spec)

    @property
    def default_patch_zyx(self) -> tuple[int, int, int]:
        """The default (first) dataset's window."""
        return self.plans.datasets[self.plans.default_dataset].patch_size_zyx

    def dataset_plan(self, dataset: str | None) -> DatasetPlan:
        """A dataset's plan (the default dataset's for ``None`` or unknown)."""
        try:
            return self.plans.plan_for(dataset) if dataset else self.plans.datasets[self.plans.default_dataset]
        except PlansError:
            return self.plans.datasets[self.plans.default_dataset]

    def dataset_patch_zyx(self, dataset: str | None) -> tuple[int, int, int]:
        """The sliding window of a dataset's plan (the default dataset's for ``None`` or unknown)."""
        return self.dataset_plan(dataset).patch_size_zyx

    def groups(self, prompt_ids: Sequence[int], hidden_prompt_ids: Sequence[int] = ()) -> list[PreprocessingGroup]:
        """Split the chosen prompts into groups that share one preprocessing.

        Rules: a real prompt uses the spec of its source dataset(s); a prompt trained from several
        datasets with different specs takes one that another chosen prompt already needs (fewer
        passes), else its first source's. The synthetic prompt joins the group of the first chosen
        real prompt (alone: the first dataset's spec). With the ``dataset`` override, or a checkpoint
        with a single spec, there is one group. Groups are ordered by their first prompt. Hidden
        prompts all join the first group (the first chosen prompt's), whatever their own datasets,
        so that the one ``model_space_hook`` call sees them; they add no group and no dataset.

        Args:
            prompt_ids: The chosen prompt ids (see :meth:`Predictor.resolve_prompts`).
            hidden_prompt_ids: Hidden prompt ids (see :meth:`Predictor.predict`), none of them chosen.
        """
        groups = self._visible_groups(prompt_ids)
        if hidden_prompt_ids:
            groups[0] = dataclasses.replace(groups[0], hidden_prompt_ids=tuple(hidden_prompt_ids))
        return groups

    def _visible_groups(self, prompt_ids: Sequence[int]) -> list[PreprocessingGroup]:
        """:meth:`groups` without hidden prompts."""
        prompts = [self.label_space.prompts[pid] for pid in prompt_ids]
        if self.dataset is not None:
            plan = self.dataset_plan(self.dataset)
            return [PreprocessingGroup(self.dataset_spec(self.dataset), (self.dataset,), tuple(range(len(prompts))),
                                       plan.patch_size_zyx, geometry=plan.network)]
        # Candidate specs per real prompt, in source order, each with the datasets that use it.
        candidates: list[dict[PreprocessingSpec, list[str]]] = []
        for prompt in prompts:
            options: dict[PreprocessingSpec, list[str]] = {}
            for source in prompt.sources:
                options.setdefault(self.dataset_spec(source.dataset), []).append(source.dataset)
            candidates.append(options)
        chosen: list[PreprocessingSpec | None] = [
            next(iter(options)) if len(options) == 1 else None for options in candidates
        ]
        needed = list(dict.fromkeys(spec for spec in chosen if spec is not None))
        for position, options in enumerate(candidates):
            if len(options) > 1:  # a prompt annotated by datasets preprocessed differently
                spec = next((s for s in needed if s in options), next(iter(options)))
                chosen[position] = spec
                needed.append(spec)
        default_dataset = self.plans.default_dataset
        first_real = next((spec for spec in chosen if spec is not None), None)
        datasets_of: dict[PreprocessingSpec, list[str]] = {}
        for position, spec in enumerate(chosen):
            if spec is None:  # the synthetic prompt (no sources)
                spec = first_real if first_real is not None else (
                    self.dataset_spec(default_dataset) if default_dataset else self.spec
                )
                chosen[position] = spec
                if first_real is None and default_dataset:
                    datasets_of.setdefault(spec, []).append(default_dataset)
            for name in candidates[position].get(spec, []):
                if name not in datasets_of.setdefault(spec, []):
                    datasets_of[spec].append(name)
        groups: dict[PreprocessingSpec, list[int]] = {}
        for position, spec in enumerate(chosen):
            groups.setdefault(spec, []).append(position)  # type: ignore[arg-type]
        out = []
        for spec, positions in groups.items():
            names = tuple(datasets_of.get(spec, []))
            plan = self.dataset_plan(names[0] if names else None)
            out.append(PreprocessingGroup(spec, names, tuple(positions), plan.patch_size_zyx, geometry=plan.network))
        return out

    def resolve_prompts(self, prompts: str | Iterable[str] | Iterable[int], model_name: Callable[[], str]) -> list[int]:
        """Prompt ids from ``"liver,spleen"``, ``"all"``, ``"all_foreground"``, names or ids.

        Args:
            prompts: What the user asked for.
            model_name: The model's name for the message (called only on an error).

        Raises:
            UnknownPromptError: a name the model's label space lacks (message lists the available ones).
        """
        if not isinstance(prompts, str):
            prompts = list(prompts)
            if prompts and all(isinstance(p, (int, np.integer)) for p in prompts):
                ids = [int(p) for p in prompts]
                bad = [i for i in ids if not 0 <= i < len(self.label_space)]
                if bad:
                    raise UnknownPromptError(
                        f"prompt ids {bad} out of range; the model has {len(self.label_space)} prompts: "
                        f"{', '.join(self.label_space.names)}"
                    )
                return list(dict.fromkeys(ids))
        try:
            return self.label_space.resolve(prompts)  # type: ignore[arg-type]
        except UnknownPromptError as exc:
            raise UnknownPromptError(f"model {model_name()}: {exc}") from None

    def resolve_hidden_prompts(
        self, hidden_prompts: str | Iterable[str] | Iterable[int] | None, prompt_ids: Sequence[int],
        model_name: Callable[[], str],
    ) -> list[int]:
        """Hidden prompt ids (see :meth:`Predictor.predict`), less those already chosen (they stay labels).

        Raises:
            UnknownPromptError: a name the model's label space lacks.
        """
        if hidden_prompts is None:
            return []
        if not isinstance(hidden_prompts, str):
            hidden_prompts = list(hidden_prompts)
            if not hidden_prompts:
                return []
        chosen = set(prompt_ids)
        return [pid for pid in self.resolve_prompts(hidden_prompts, model_name) if pid not in chosen]

    def postprocessing_groups(self, labels: Sequence[LabelEntry], marked: Mapping[str, str]) -> dict[int, list[int]]:
        """Label value of each post-processed prompt -> the values of the chosen prompts of the same
        training dataset (its group, see :mod:`versemi.inference.postprocess`)."""
        sources = {e.value: {s.dataset for s in self.label_space.prompts[e.prompt_id].sources} for e in labels}
        return {
            e.value: [o.value for o in labels if sources[o.value] & sources[e.value]] or [e.value]
            for e in labels if e.name in marked
        }

    def label_table(self, prompt_ids: Sequence[int]) -> list[LabelEntry]:
        """The label entries of the chosen prompts: value 1..K in prompt order."""
        table = []
        for value, pid in enumerate(prompt_ids, start=1):
            p = self.label_space.prompts[pid]
            table.append(LabelEntry(value, p.name, tuple(p.color), p.snomed.to_dict() if p.snomed else None, pid))
        return table

    def hidden_entries(self, hidden_prompt_ids: Sequence[int]) -> list[LabelEntry]:
        """The entries a model-space hook gets for hidden prompts (``hidden=True``, value 0)."""
        return [dataclasses.replace(entry, value=0, hidden=True) for entry in self.label_table(hidden_prompt_ids)]


def effective_spec(spec: PreprocessingSpec, quality: str) -> PreprocessingSpec:
    """The preprocessing used at a quality level: ``fast`` = :data:`FAST_SPACING_FACTOR` x the spacing."""
    if quality == "fast":
        return dataclasses.replace(spec, target_spacing=tuple(s * FAST_SPACING_FACTOR for s in spec.target_spacing))
    return spec


def check_memory(image: sitk.Image, groups: Sequence[PreprocessingGroup], quality: str, name: str) -> None:
    """Refuse, before any allocation, a scan whose preprocessing would not fit in memory for any group.

    Raises:
        versemi.data.memory.MemoryLimitError: naming the scan, with :data:`MEMORY_ADVICE`.
    """
    for group in groups:
        spec = effective_spec(group.spec, quality)
        check_preprocessing_memory(image, spec.target_spacing, spec.orientation, name=name,
                                   prompts=len(group.positions) + len(group.hidden_prompt_ids), advice=MEMORY_ADVICE)


def physical_extent_mm(image: sitk.Image) -> tuple[float, float, float]:
    """The scan's extent along its three axes in mm (voxels x spacing)."""
    return tuple(float(n * s) for n, s in zip(image.GetSize()[:3], image.GetSpacing()[:3]))  # type: ignore[return-value]


def field_of_view_warnings(
    image: sitk.Image, groups: Sequence[PreprocessingGroup], plans: Plans, label_space: LabelSpace,
    prompt_ids: Sequence[int], name: str, factor: float = FIELD_OF_VIEW_FACTOR,
) -> list[str]:
    """One line per training dataset of the chosen prompts whose scans were far smaller or larger than
    ``image`` (see :data:`FIELD_OF_VIEW_FACTOR`); empty when the extents are close or unknown (plans
    without a fingerprint).

    Args:
        image: the scan as segmented (the ROI's box when there is one).
        groups: the prediction's preprocessing groups (:meth:`Planner.groups`).
        plans: the model's plans (their fingerprints hold each dataset's median size and spacing).
        label_space: the model's prompts.
        prompt_ids: the chosen prompts (``positions`` of the groups index into it).
        name: how to name the scan (its path).
        factor: the ratio from which an extent is "far".
    """
    extent = physical_extent_mm(image)
    lines = []
    for group in groups:
        for dataset in group.datasets:
            try:
                fingerprint = plans.plan_for(dataset).fingerprint
            except PlansError:
                continue
            if fingerprint is None:
                continue
            trained = tuple(n * s for n, s in zip(fingerprint.median_size, fingerprint.median_spacing))
            ratios = [a / b for a, b in zip(sorted(extent), sorted(trained)) if b > 0 and a > 0]
            if not ratios:
                continue
            largest, smallest = max(ratios), min(ratios)
            if largest < factor and smallest > 1.0 / factor:
                continue
            prompts = [label_space.prompts[prompt_ids[i]].name for i in group.positions
                       if any(src.dataset == dataset for src in label_space.prompts[prompt_ids[i]].sources)]
            shown = " x ".join(f"{v:.0f}" for v in extent)
            median = " x ".join(f"{v:.0f}" for v in trained)
            if largest >= factor:
                how = (f"{largest:.0f}x larger than the scans {dataset} was trained on (median {median} mm), so "
                       "the model may see structures that are not there; crop around the structure "
                       "(--roi x0,y0,z0,x1,y1,z1, or the ROI box in Slicer)")
            else:
                how = (f"{1 / smallest:.0f}x smaller than the scans {dataset} was trained on (median {median} mm), "
                       "so the structure may be cut off")
            lines.append(f"{name}: field of view {shown} mm is {how}"
                         + (f" [prompts {', '.join(prompts)}]" if prompts else ""))
    return lines


def parse_roi(text: str) -> tuple[int, int, int, int, int, int]:
    """``"x0,y0,z0,x1,y1,z1"`` (voxel indices, start inclusive, end exclusive) -> six ints."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise PredictionError(f"ROI {text!r} must be six integers x0,y0,z0,x1,y1,z1 (voxel indices)") from None
    if len(values) != 6:
        raise PredictionError(f"ROI {text!r} must be six integers x0,y0,z0,x1,y1,z1 (voxel indices)")
    return values  # type: ignore[return-value]


def check_roi(roi: Sequence[int] | str | None, image: sitk.Image, name: str) -> tuple[int, ...] | None:
    """The ROI as six voxel indices ``(x0, y0, z0, x1, y1, z1)`` checked against ``image``, or None.

    Raises:
        PredictionError: not six integers, outside the image, or thinner than 2 voxels.
    """
    if roi is None:
        return None
    box = parse_roi(roi) if isinstance(roi, str) else tuple(int(v) for v in roi)
    if len(box) != 6:
        raise PredictionError(f"ROI must have six values x0,y0,z0,x1,y1,z1, got {list(box)}")
    size = image.GetSize()
    for axis in range(3):
        lo, hi = box[axis], box[axis + 3]
        if not 0 <= lo < hi <= size[axis]:
            raise PredictionError(
                f"{name}: ROI {list(box)} does not fit the image of size {list(size)} (x, y, z); "
                "give voxel indices x0,y0,z0,x1,y1,z1 with 0 <= start < end <= size"
            )
        if hi - lo < 2:
            raise PredictionError(f"{name}: ROI {list(box)} is thinner than 2 voxels along axis {'xyz'[axis]}")
    return box


def sub_stage(progress: ProgressReporter | None, stage: str, index: int, count: int) -> StageProgress:
    """A stage of the ``index``-th of ``count`` preprocessing groups: group ``i`` owns the ``i``-th
    equal part of the whole job and runs all three stages inside it, so the overall fraction keeps
    moving through every group (instead of waiting at the export of the previous one)."""
    start, end = STAGE_SPANS[stage]
    return StageProgress(progress, stage, ((index + start) / count, (index + end) / count))


__all__ = [
    "FAST_SPACING_FACTOR",
    "FIELD_OF_VIEW_FACTOR",
    "MEMORY_ADVICE",
    "QUALITIES",
    "Planner",
    "PreprocessingGroup",
    "check_memory",
    "check_roi",
    "effective_spec",
    "field_of_view_warnings",
    "parse_roi",
    "physical_extent_mm",
    "sub_stage",
]
