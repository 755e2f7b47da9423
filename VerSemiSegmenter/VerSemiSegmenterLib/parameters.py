"""Run settings of one segmentation and the ``versemi predict`` command line they map to."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from .i18n import _

DEVICES = ("auto", "cpu", "cuda", "mps")
# The names ``versemi predict`` uses (``--device``, ``--quality``): one name per idea in the CLI and
# the panel (tests/slicer_extension/test_slicer_library.py checks they stay the same).
QUALITIES = ("default", "fast")
OUTPUT_MODES = ("new", "replace")


def default_threads() -> int:
    """All CPU cores but one (at least one): the predictor must not starve Slicer's GUI."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class RunSettings:
    """Everything one ``versemi predict`` run needs.

    Attributes:
        input_path: the image to segment (the module writes the selected volume here).
        output_path: the labelmap to write (``versemi predict`` writes its sidecar ``.json`` and ``.ctbl``
            beside it and names them in its ``done`` line).
        model: a checkpoint file path, or the name of a model in the versemi catalogue.
        prompts: names of the structures to segment, in the order of the output label values 1..K.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
        quality: ``default`` (the model's resolution) or ``fast`` (twice the voxel spacing: about 8x
            faster and lighter, coarser borders).
        threads: CPU threads for the predictor; ``None`` = all cores but one, so Slicer stays usable.
        python_executable: the Python that has ``versemi`` installed (in Slicer: ``PythonSlicer``).
        output_mode: ``new`` segmentation node or ``replace`` the segments of an existing one; used by
            the module only, not passed to the predictor.
        roi: segment only this voxel box of the input, ``(x0, y0, z0, x1, y1, z1)`` (start inclusive,
            end exclusive; ``versemi predict --roi``), e.g. from a markups ROI (``roi.voxel_box``);
            ``None`` = the whole volume.
    """

    input_path: str
    output_path: str
    model: str
    prompts: list[str] = field(default_factory=list)
    device: str = "auto"
    quality: str = "default"
    threads: int | None = None
    python_executable: str = sys.executable
    output_mode: str = "new"
    roi: tuple[int, int, int, int, int, int] | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` with a message a user understands if a setting cannot work."""
        if not self.input_path:
            raise ValueError(_("no input volume selected"))
        if not self.model:
            raise ValueError(_("no model selected"))
        if not [p for p in self.prompts if p.strip()]:
            raise ValueError(_("no structure (prompt) selected; tick at least one"))
        if any("," in p for p in self.prompts):
            raise ValueError(_("prompt names cannot contain commas: {prompts}").format(prompts=self.prompts))
        if self.device not in DEVICES:
            raise ValueError(_("unknown device {device!r}; choose one of {dEVICES}").format(device=self.device, dEVICES=', '.join(DEVICES)))
        if self.quality not in QUALITIES:
            raise ValueError(_("unknown quality {quality!r}; choose one of {qUALITIES}").format(quality=self.quality, qUALITIES=', '.join(QUALITIES)))
        if self.threads is not None and self.threads < 1:
            raise ValueError(_("threads must be at least 1, got {threads}").format(threads=self.threads))
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(_("unknown output mode {output_mode!r}; choose one of {oUTPUT_MODES}").format(output_mode=self.output_mode, oUTPUT_MODES=', '.join(OUTPUT_MODES)))
        if self.roi is not None:
            box = tuple(self.roi)
            if len(box) != 6 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box) or any(
                    not 0 <= box[i] < box[i + 3] for i in range(3)):
                raise ValueError(_("ROI box {box} must be six voxel indices x0,y0,z0,x1,y1,z1 with 0 <= start < end").format(box=list(box)))

    @property
    def model_is_file(self) -> bool:
        """True when ``model`` names a checkpoint file rather than a catalogue entry."""
        return os.path.isfile(self.model) or Path(self.model).suffix.lower() in {".pt", ".pth", ".ckpt"} or os.sep in self.model or (
            os.altsep is not None and os.altsep in self.model
        )

    def to_command(self) -> list[str]:
        """The ``versemi predict`` command as an argument list (no shell: spaces and non-ASCII safe).

        Paths are made absolute so the command does not depend on the working directory.
        """
        self.validate()
        model = os.path.abspath(self.model) if self.model_is_file else self.model
        command = [
            self.python_executable,
            "-m",
            "versemi.cli",
            "predict",
            "--input",
            os.path.abspath(self.input_path),
            "--output",
            os.path.abspath(self.output_path),
            "--model",
            model,
            "--prompts",
            ",".join(p.strip() for p in self.prompts if p.strip()),
            "--device",
            self.device,
            "--quality",
            self.quality,
            "--threads",
            str(self.threads if self.threads else default_threads()),
            "--progress",
            "json",
        ]
        if self.roi is not None:
            command += ["--roi", ",".join(str(v) for v in self.roi)]
        return command
