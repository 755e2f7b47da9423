"""One segmentation run from a Slicer volume node to segments: export, predict, import, clean up.

The module's Logic, its self-test in Slicer and the pytest tests (``slicer-core``) all run this code::

    job = SegmentationJob(volume_node, settings_template, work_dir_parent)
    job.start()                   # writes the volume, starts `versemi predict` in the background
    while job.poll() is None:     # in Slicer: from a qt.QTimer
        ...
    job.import_result             # ImportResult (segmentation node, segment ids, empty segments)

Nothing is added to the scene unless the run succeeds; the temporary folder is always removed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any, Mapping

from .parameters import RunSettings
from .process import ProcessRunner, RunResult, Signal
from .segmentation_import import ImportResult, import_prediction
from .volume_export import check_volume_node, export_volume
from .i18n import _


class PredictionError(RuntimeError):
    """The predictor failed; the message is the predictor's own explanation."""


class SegmentationJob:
    """Segment ``volume_node`` with the settings of ``settings`` (its paths are filled in here).

    Args:
        volume_node: the input scalar volume.
        settings: model, prompts, device, quality, python executable, output mode; ``input_path`` and
            ``output_path`` are replaced by files in a temporary folder.
        segmentation_node: ``None`` for a new segmentation, or the node whose segments are replaced.
        temp_parent: where to create the temporary folder (default: the system temp folder).
        env: extra environment variables for the predictor process.

    Signals: ``progress(ProgressEvent)``, ``log(LogLine)``, ``finished(SegmentationJob)``.
    """

    def __init__(
        self,
        volume_node: Any,
        settings: RunSettings,
        segmentation_node: Any | None = None,
        temp_parent: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        check_volume_node(volume_node)
        self.volume_node = volume_node
        self.segmentation_node = segmentation_node
        self.temp_parent = temp_parent
        self.env = dict(env or {})
        self.settings = settings
        self.progress = Signal()
        self.log = Signal()
        self.finished = Signal()
        self.run_result: RunResult | None = None
        self.import_result: ImportResult | None = None
        self.error: str | None = None
        self._runner: ProcessRunner | None = None
        self._work_dir: str | None = None
        self._done = False

    @property
    def is_running(self) -> bool:
        return self._runner is not None and not self._done

    @property
    def pid(self) -> int | None:
        return self._runner.pid if self._runner else None

    @property
    def succeeded(self) -> bool:
        return self._done and self.import_result is not None

    @property
    def cancelled(self) -> bool:
        return self.run_result is not None and self.run_result.cancelled

    def start(self) -> None:
        """Write the volume to a temporary file and start the predictor (returns immediately)."""
        self._work_dir = tempfile.mkdtemp(prefix="VerSemi-", dir=self.temp_parent)
        try:
            input_path = export_volume(self.volume_node, os.path.join(self._work_dir, "input.nrrd"))
            self.settings = dataclasses.replace(
                self.settings,
                input_path=input_path,
                output_path=os.path.join(self._work_dir, "segmentation.nrrd"),
            )
            self._runner = ProcessRunner(self.settings.to_command(), env=self.env, cwd=self._work_dir)
            self._runner.progress.connect(self.progress.emit)
            self._runner.log.connect(self.log.emit)
            self._runner.start()
        except BaseException:
            self._cleanup()
            raise

    def poll(self) -> bool | None:
        """Handle pending progress; once the run ended, import the result. ``None`` while running.

        Returns:
            True on success, False on failure or cancel (see :attr:`error`).
        """
        if self._done:
            return self.succeeded
        if self._runner is None:
            raise RuntimeError(_("the job was not started"))
        result = self._runner.poll()
        if result is None:
            return None
        self.run_result = result
        try:
            if result.succeeded:
                if not result.sidecar:  # the done line names it (versemi's one naming rule)
                    raise RuntimeError(_("versemi predict did not report the label table beside {output}").format(output=result.output))
                self.import_result = import_prediction(
                    result.output, result.sidecar, self.volume_node, self.segmentation_node
                )
            else:
                self.error = result.error_message()
        except Exception as exc:  # noqa: BLE001 - reported to the user, scene left unchanged
            self.error = str(exc)
        finally:
            self._done = True
            self._cleanup()
        self.finished.emit(self)
        return self.succeeded

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool | None:
        """Block until done (scripts, tests). Returns :meth:`poll`'s final value, ``None`` on timeout."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)
        return status

    def cancel(self) -> None:
        """Kill the predictor's process tree; nothing is imported. Call :meth:`poll` to finish."""
        if self._runner is not None and not self._done:
            self._runner.cancel()
            self.poll()

    def _cleanup(self) -> None:
        if self._work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    @property
    def work_dir(self) -> str | None:
        return self._work_dir

    @property
    def warnings(self) -> list[str]:
        """The predictor's warnings of a finished run (``versemi predict: warning: <text>`` lines), e.g.
        a field of view far from what the model was trained on; each as ``<text>``."""
        if self.run_result is None:
            return []
        marker = ": warning: "
        return [line.split(marker, 1)[1] for line in self.run_result.stderr_tail
                if line.startswith("versemi ") and marker in line]
