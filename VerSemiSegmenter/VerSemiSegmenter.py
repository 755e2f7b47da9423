"""VerSemi Segmenter: segment many structures with one task-prompted VerSemi model.

This file is the thin Slicer layer (module, GUI, logic entry points, self-test). The work is done by
the plain-Python library in ``VerSemiSegmenterLib`` (tested outside Slicer with pytest and the
``slicer-core`` package): building the ``versemi predict`` command, running it in a background
process, reading model information, installing dependencies, importing the result, and the review
loop over a ``versemi pseudolabel`` folder (``review.ReviewController``).
"""

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

from VerSemiSegmenterLib import (
    catalogue,
    dependencies,
    dicom_export,
    device,
    panel,
    parameters,
    pipeline,
    process,
    review,
    roi,
    sampledata,
    selftest,
    terms,
    volume_export,
)

SETTINGS_PREFIX = "VerSemiSegmenter"
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


#
# VerSemiSegmenter
#


class VerSemiSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("VerSemi Segmenter")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["The VerSemi project (https://github.com/versemi)"]
        self.parent.helpText = _("\nSegment many anatomical structures with ONE task-prompted 3D model trained with "
                                  "VerSemi\n(semi-supervised learning over several partially labeled datasets plus "
                                  "unlabeled scans).\nChoose a volume and a model, tick the structures, and click Apply. "
                                  "The model runs in a background\nprocess (progress, Cancel); the result is a segmentation "
                                  "with named, coloured segments carrying\nSNOMED CT terminology. The Review section walks "
                                  "a pseudo-label review folder case by case\n(highest review score first): edit, then save "
                                  "the refined label or reject the case.\n<b>Research use only: not for clinical use</b> "
                                  "(the default model's weights are CC BY-NC-SA 4.0; the\nlicence, intended use and model "
                                  "card are shown once, for acceptance, before a model's first\nsegmentation). With every "
                                  "structure ticked, only those trained on the scan's modality run. See the\n<a "
                                  'href="https://github.com/versemi/SlicerVerSemiSegmenter/blob/main/docs/SLICER.md">documentation</a>.\n')
        self.parent.acknowledgementText = _("\nBased on the VerSemi method (<a "
                                             'href="https://arxiv.org/abs/2311.11686">arXiv:2311.11686</a>).\nUses PyTorch, MONAI and '
                                             "SimpleITK. Sample data: Medical Segmentation Decathlon (CC BY-SA 4.0).\n")
        # Sample Data module entries (real scans bundled with the extension), once Slicer has started.
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Add VerSemi's sample scans to the Sample Data module (nothing happens without that module)."""
    try:
        import SampleData
    except ImportError:
        return
    for source in sampledata.sample_sources(os.path.join(MODULE_DIR, "Resources")):
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


#
# Parameter node (GUI state saved with the scene)
#


@parameterNodeWrapper
class VerSemiSegmenterParameterNode:
    """
    inputVolume - the volume to segment.
    outputSegmentation - None: create a new segmentation; a node: replace its segments.
    model - catalogue spec (name@version) or checkpoint path.
    device - auto/cpu/cuda/mps.
    quality - default/fast (the names of versemi predict --quality).
    roi - None: the whole volume; a markups ROI: segment only inside its box (versemi predict --roi).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    roi: vtkMRMLMarkupsROINode
    model: str = ""
    device: Annotated[str, Choice(list(parameters.DEVICES))] = "auto"
    quality: Annotated[str, Choice(list(parameters.QUALITIES))] = "default"


def pythonExecutable() -> str:
    """The Python that runs the predictor: Slicer's own (same site-packages as the module)."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    home = getattr(slicer.app, "slicerHome", "") if hasattr(slicer, "app") else ""
    for name in ("PythonSlicer.exe", "PythonSlicer"):
        candidate = os.path.join(home, "bin", name)
        if os.path.isfile(candidate):
            return candidate
    return sys.executable


class SlicerInstallEnvironment:
    """The :class:`VerSemiSegmenterLib.dependencies.InstallEnvironment` of Slicer."""

    def __init__(self, python: str) -> None:
        self.testing = slicer.app.testingEnabled()
        self.python_executable = python

    def confirm(self, message: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(message, "VerSemi Segmenter: install packages")

    def torch_install_args(self, requirement: str) -> list:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise dependencies.DependencyError(
                _("PyTorch is needed: install the 'PyTorch' extension from the Extensions Manager, restart "
                   "Slicer, and try again.")
            ) from None
        # The extension's own light-the-torch arguments (CUDA build for the driver, or CPU).
        arguments = getattr(PyTorchUtils.PyTorchUtilsLogic, "_getPipInstallArguments", None)
        if arguments is None:
            return ["install", requirement]
        return list(arguments(None, requirement[len("torch"):] if requirement.startswith("torch") else None))


#
# VerSemiSegmenterLogic
#


class VerSemiSegmenterLogic(ScriptedLoadableModuleLogic):
    """Entry points usable without the GUI (Python console, scripts, the self-test)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.pythonExecutable = pythonExecutable()
        # PythonSlicer is a launcher: start it from Slicer's startup environment, as Slicer does.
        process.set_base_environment(slicer.util.startupEnvironment())
        self._torchInfo = None
        self._nvidiaPresent = None
        self._backendReady = False

    def getParameterNode(self):
        return VerSemiSegmenterParameterNode(super().getParameterNode())

    def moduleResourcesDir(self) -> str:
        return os.path.join(MODULE_DIR, "Resources")

    @staticmethod
    def platformProblem() -> Optional[str]:
        """Why this Slicer cannot run VerSemi, or None (supported: Slicer 5.10+, Python 3.10+)."""
        return dependencies.platform_problem(str(slicer.app.applicationVersion), tuple(sys.version_info[:2]))

    # --- dependencies -----------------------------------------------------------------------------
    def dependencyFlow(self) -> dependencies.InstallFlow:
        """The install flow for what the predictor misses (start it, then poll it)."""
        problem = self.platformProblem()
        if problem:
            raise dependencies.DependencyError(problem)
        resources = self.moduleResourcesDir()
        requirements = dependencies.read_requirements(os.path.join(resources, "requirements.txt"))
        source = dependencies.bundled_versemi_source(resources)
        if source is None and dependencies.installed_version("versemi") is None:
            raise dependencies.DependencyError(
                _("the versemi package is neither installed nor bundled in {resources}/versemi-package").format(resources=resources)
            )
        return dependencies.InstallFlow(SlicerInstallEnvironment(self.pythonExecutable), requirements, source)

    def backendReady(self) -> bool:
        """versemi and the predictor's packages are installed (package metadata only; cached once true)."""
        if not self._backendReady:
            try:
                self._backendReady = self.dependencyFlow().plan().empty
            except dependencies.DependencyError:
                self._backendReady = False
        return self._backendReady

    def forgetInstallState(self) -> None:
        """After an install: check packages and torch again."""
        self._backendReady = False
        self._torchInfo = None

    def ensureDependencies(self, timeout: float = 3600.0) -> dependencies.InstallResult:
        """Install what the predictor misses and wait (scripts; asks first; never in testing mode).

        Raises:
            DependencyError: testing mode with something missing, declined, or a failed install.
        """
        flow = self.dependencyFlow()
        flow.start()
        deadline = time.monotonic() + timeout
        while flow.poll() is None:
            if time.monotonic() > deadline:
                flow.cancel()
            slicer.app.processEvents()
            time.sleep(0.05)
        self.forgetInstallState()
        if not flow.result.succeeded:
            raise dependencies.DependencyError(flow.result.error or "installation failed")
        return flow.result

    # --- models -----------------------------------------------------------------------------------
    def listModels(self) -> list:
        """Catalogue/imported models (``versemi models list``); empty if versemi is not installed yet."""
        if dependencies.installed_version("versemi") is None:
            return []
        return catalogue.list_catalogue_models(self.pythonExecutable)

    def modelPrompts(self, choice: catalogue.ModelChoice) -> list:
        """Prompts of a model: read from the checkpoint when it is on disk, else from the catalogue."""
        if choice.installed:
            return catalogue.with_heldout_dice(
                catalogue.read_checkpoint_prompts(choice.path, self.pythonExecutable), choice)
        return list(choice.prompts)

    def modelCard(self, choice: catalogue.ModelChoice) -> str:
        return catalogue.read_model_card(choice, self.pythonExecutable)

    def removeModel(self, key: str) -> str:
        return catalogue.remove_model(key, self.pythonExecutable)

    # --- device -----------------------------------------------------------------------------------
    def probeDevice(self) -> None:
        """Collect torch/GPU facts (slow: starts a Python; call from a worker thread)."""
        self._nvidiaPresent = device.nvidia_gpu_present()
        self._torchInfo = device.probe_torch(self.pythonExecutable)

    @property
    def deviceProbed(self) -> bool:
        return self._torchInfo is not None

    def deviceChoice(self, requested: str) -> device.DeviceChoice:
        """The device a run will use (probes first when needed: scripts; the panel probes in a thread)."""
        if self._torchInfo is None:
            self.probeDevice()
        return device.choose_device(requested, self._torchInfo, bool(self._nvidiaPresent))

    # --- segmentation -----------------------------------------------------------------------------
    def fitCropRoi(self, inputVolume, roiNode=None):
        """An ROI box around the whole ``inputVolume`` (a new node unless ``roiNode`` is given) to crop with."""
        if inputVolume is None:
            raise ValueError(_("select an input volume first"))
        if roiNode is None:
            roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{inputVolume.GetName()} crop")
            roiNode.CreateDefaultDisplayNodes()
        roi.fit_roi_to_volume(roiNode, inputVolume)
        return roiNode

    @staticmethod
    def cropBox(inputVolume, roiNode):
        """The ``--roi`` voxel box of an ROI node over the volume; None for no ROI or one covering it all.

        Raises:
            roi.ROIError: an ROI outside the volume, too thin, not placed, or under a non-linear transform.
        """
        if roiNode is None:
            return None
        box = roi.voxel_box(roiNode, inputVolume)
        return None if roi.whole_volume(box, inputVolume) else box

    def startSegmentation(
        self,
        inputVolume,
        model: str,
        prompts: list,
        device: str = "auto",
        quality: str = "default",
        outputSegmentation=None,
        roiNode=None,
    ) -> pipeline.SegmentationJob:
        """Start a background segmentation; poll the returned job (``job.poll()``) until it ends.

        ``roiNode``: a markups ROI; only the voxels inside its box are segmented.
        """
        settings = parameters.RunSettings(
            input_path="",
            output_path="",
            model=model,
            prompts=list(prompts),
            device=device,
            quality=quality,
            python_executable=self.pythonExecutable,
            output_mode="replace" if outputSegmentation is not None else "new",
            roi=self.cropBox(inputVolume, roiNode),
        )
        job = pipeline.SegmentationJob(
            inputVolume, settings, segmentation_node=outputSegmentation, temp_parent=slicer.app.temporaryPath
        )
        job.start()
        return job

    def process(
        self,
        inputVolume,
        model: str,
        prompts: list,
        device: str = "auto",
        quality: str = "default",
        outputSegmentation=None,
        timeout: Optional[float] = None,
        roiNode=None,
    ):
        """Segment and wait (keeps the GUI painting). Returns the ``ImportResult``; raises on failure."""
        job = self.startSegmentation(inputVolume, model, prompts, device, quality, outputSegmentation, roiNode)
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                job.cancel()
                raise TimeoutError(_("segmentation did not finish within {timeout} s").format(timeout=timeout))
            slicer.app.processEvents()
            time.sleep(0.05)
        if not job.succeeded:
            raise pipeline.PredictionError(job.error or "segmentation failed")
        return job.import_result

    # --- review -----------------------------------------------------------------------------------
    def openReview(self, reviewDir: str, user: Optional[str] = None) -> review.ReviewController:
        """A review controller on a ``versemi pseudolabel`` folder, loading cases into the scene."""
        return review.open_review(reviewDir, review.MrmlReviewScene(slicer.mrmlScene), user=user)


class _LogicBackend:
    """The logic under the names the panel controllers use (``panel.ModelBackend``/``CacheBackend``)."""

    def __init__(self, logic: VerSemiSegmenterLogic) -> None:
        self.logic = logic

    def backend_ready(self) -> bool:
        return self.logic.backendReady()

    def list_models(self) -> list:
        return self.logic.listModels()

    def model_prompts(self, choice) -> list:
        return self.logic.modelPrompts(choice)

    def model_card(self, choice) -> str:
        return self.logic.modelCard(choice)

    def remove_model(self, key: str) -> str:
        return self.logic.removeModel(key)


#
# VerSemiSegmenterWidget
#


class VerSemiSegmenterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI glue: the controllers in ``VerSemiSegmenterLib.panel`` decide, this class shows.

    Nothing slow runs here: listing models, reading prompts, model cards, removing models and the
    device probe are background calls; installs and segmentations are background processes; all are
    polled by one timer.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._lastResult = None  # (segmentation node, input volume) of the last successful run
        self._downloadRunner = None
        self._deviceThread = None
        self._applyPending = False
        self._installFlow = None
        self._afterInstall = []
        self._updatingPrompts = False
        self._startTime = 0.0
        self.models = None  # panel.ModelPanel
        self.cache = None  # panel.CachePanel
        self.reviewPanel = None  # panel.ReviewPanel

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = VerSemiSegmenterLogic()
        problem = self.logic.platformProblem()
        if problem:
            # Unsupported Slicer: say so and what to do, build nothing else.
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            self.ui = None
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VerSemiSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        # Choice items must exist before the parameter node binds the combo boxes.
        self.ui.deviceComboBox.addItems(list(parameters.DEVICES))
        self.ui.qualityComboBox.addItems(list(parameters.QUALITIES))
        self.ui.downloadModelButton.visible = False
        self.ui.installButton.visible = False
        self.ui.progressBar.visible = False

        backend = _LogicBackend(self.logic)
        self.models = panel.ModelPanel(self, backend, self.ensureBackend)
        self.cache = panel.CachePanel(self, backend, on_removed=lambda key: self.models.refresh())
        self.reviewPanel = panel.ReviewPanel(self, self.logic.openReview, self.ensureBackend,
                                             review.missing_review_packages)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self.ui.promptFilterLineEdit.connect("textChanged(QString)", self.onPromptFilterChanged)
        self.ui.promptListWidget.connect("itemChanged(QListWidgetItem*)", self.onPromptItemChanged)
        self.ui.selectAllButton.connect("clicked(bool)", lambda: self.setVisiblePromptsChecked(True))
        self.ui.selectNoneButton.connect("clicked(bool)", lambda: self.setVisiblePromptsChecked(False))
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.roiFitButton.connect("clicked(bool)", self.onFitRoi)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)
        self.ui.cancelTaskButton.connect("clicked(bool)", self.onCancelTask)

        self.setupCacheSection(uiWidget)
        self.setupReviewSection(uiWidget)

        # Background work (installs, predictor, download, listings, device probe) is polled here.
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPoll)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.ui is None:
            return
        self.cancelRunning()
        self.pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        if self.ui is None:
            return
        self.initializeParameterNode()
        self.models.enter()
        if self._deviceThread is None and not self.logic.deviceProbed and self.logic.backendReady():
            self.startDeviceProbe()
        self.pollTimer.start()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self._removeParameterNodeObserver()

    def _removeParameterNodeObserver(self) -> None:
        if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRunning()
        self.setParameterNode(None)
        if self.reviewPanel.controller is not None:
            self.reviewPanel.controller.forget_open_case()  # its nodes go with the scene; it stays pending
            self.refresh_review()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._removeParameterNodeObserver()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._job is not None and self._job.is_running:
            self.ui.applyButton.enabled = True
            return
        reasons = []
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if not volume:
            reasons.append(_("select an input volume"))
        elif problem := volume_export.volume_problem(volume):  # e.g. a single slice: refused before anything starts
            reasons.append(problem)
        if not self.models.current:
            reasons.append(_("select a model"))
        if not self.checkedPrompts():
            reasons.append(_("tick at least one structure"))
        busy = self._downloadRunner is not None or self._installFlow is not None or self._applyPending
        self.ui.installButton.enabled = self._installFlow is None
        self.ui.applyButton.enabled = not reasons and not busy
        self.ui.applyButton.toolTip = (
            _("Run the segmentation in the background.") if not reasons else _("To segment: ") + ", ".join(reasons) + "."
        )

    # --- views shared by the controllers ----------------------------------------------------------
    def show_error(self, message: str) -> None:
        slicer.util.errorDisplay(message, windowTitle=_("VerSemi Segmenter"))

    def confirm(self, text: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(text, windowTitle=_("VerSemi Segmenter"))

    # --- installing (background) --------------------------------------------------------------------
    def ensureBackend(self, reason: str, then) -> None:
        """Run ``then()`` once VerSemi's packages are installed: at once, or after a background install."""
        if self.logic.backendReady():
            then()
            return
        self._afterInstall.append(then)
        if self._installFlow is not None:
            return  # already installing: ``then`` runs when it is done
        try:
            flow = self.logic.dependencyFlow()
            flow.start()
        except Exception as exc:  # DependencyError (testing mode, platform) or an unreadable requirements file
            self._afterInstall = []
            self.show_error(_("VerSemi's Python packages are needed {reason}:\n{exc}").format(reason=reason, exc=exc))
            return
        self._installFlow = flow
        self.ui.progressBar.visible = True
        self.ui.progressBar.maximum = 0  # busy indicator: pip gives no fraction
        self.onInstallPoll()
        self.pollTimer.start()

    def onInstallPoll(self) -> None:
        flow = self._installFlow
        if flow is None:
            return
        result = flow.poll()
        if result is None:
            self.ui.statusLabel.text = _("{status}... (Slicer stays usable)").format(status=flow.status)
            self._checkCanApply()
            return
        self._installFlow = None
        callbacks, self._afterInstall = self._afterInstall, []
        self.ui.progressBar.maximum = 1000
        self.ui.progressBar.visible = False
        self.logic.forgetInstallState()
        if not result.succeeded:
            self.ui.statusLabel.text = _("Packages not installed.") if not result.cancelled else _("Installation cancelled.")
            if not result.cancelled:
                self.show_error(_("Could not install VerSemi's Python packages:\n{error}").format(error=result.error))
            self._checkCanApply()
            return
        self.ui.statusLabel.text = (
            _("Installed: {installed}.").format(installed=', '.join(result.installed)) if result.installed else _("VerSemi's packages are ready.")
        )
        if result.restart_needed:
            if slicer.util.confirmYesNoDisplay(
                _("Packages that Slicer had already loaded were updated. Restart Slicer now to use them?"),
                windowTitle=_("VerSemi Segmenter"),
            ):
                slicer.util.restart()
            return
        self.startDeviceProbe()
        for callback in callbacks:
            callback()
        self._checkCanApply()

    # --- models (panel.ModelView) -------------------------------------------------------------------
    def set_model_items(self, items: list, current: int) -> None:
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        for item in items:
            combo.addItem(item.label, item.key)
            combo.setItemData(combo.count - 1, item.tooltip, qt.Qt.ToolTipRole)
        combo.setCurrentIndex(current)
        combo.blockSignals(False)

    def set_model_info(self, text: str) -> None:
        self.ui.modelInfoLabel.text = text

    def set_download_visible(self, visible: bool) -> None:
        self.ui.downloadModelButton.visible = visible

    def set_install_visible(self, visible: bool) -> None:
        self.ui.installButton.visible = visible

    def set_prompts(self, prompts: list) -> None:
        self.populatePrompts(prompts)

    def set_model_key(self, key: str) -> None:
        if self._parameterNode:
            self._parameterNode.model = key

    def saved_model_key(self) -> str:
        return self._parameterNode.model if self._parameterNode else ""

    def ask_checkpoint_file(self) -> Optional[str]:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Choose a VerSemi checkpoint", "", "VerSemi checkpoints (*.pt *.pth);;All files (*)"
        )
        return path or None

    def remembered_checkpoints(self) -> list:
        value = qt.QSettings().value(f"{SETTINGS_PREFIX}/localCheckpoints", "")
        return [p for p in str(value or "").split("\n") if p]

    def remember_checkpoint(self, path: str) -> None:
        paths = [path] + [p for p in self.remembered_checkpoints() if p != path]
        qt.QSettings().setValue(f"{SETTINGS_PREFIX}/localCheckpoints", "\n".join(paths[:10]))

    def onInstallButton(self) -> None:
        self.models.install()
        self.pollTimer.start()

    def onModelActivated(self, index: int) -> None:
        self.models.activate(index)
        self.pollTimer.start()

    def onDownloadModel(self) -> None:
        choice = self.models.current
        if choice is None or self._downloadRunner is not None:
            return
        self.ensureBackend("to download a model", lambda: self.startDownload(choice))

    def startDownload(self, choice) -> None:
        runner = process.ProcessRunner(catalogue.download_command(choice.key, self.logic.pythonExecutable))
        runner.progress.connect(self.onProgress)
        try:
            runner.start()
        except OSError as exc:
            self.show_error(_("Failed to start the model download:\n{exc}").format(exc=exc))
            return
        self._downloadRunner = runner
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = _("Downloading {key}...").format(key=choice.key)
        self.pollTimer.start()
        self._checkCanApply()

    # --- prompts ----------------------------------------------------------------------------------
    def promptSettingsKey(self) -> str:
        choice = self.models.current
        model = choice.key.split("@")[0] if choice else ""
        return f"{SETTINGS_PREFIX}/selectedPrompts/{model.replace('/', '_').replace(os.sep, '_')}"

    def populatePrompts(self, prompts: list) -> None:
        saved = qt.QSettings().value(self.promptSettingsKey(), None)
        selected = set(str(saved).split(",")) if saved else None
        self._updatingPrompts = True
        widget = self.ui.promptListWidget
        widget.clear()
        for prompt in prompts:
            item = qt.QListWidgetItem(prompt.label)
            item.setData(qt.Qt.UserRole, prompt.name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            checked = (prompt.name in selected) if selected is not None else not prompt.synthetic
            item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
            if prompt.color:
                pixmap = qt.QPixmap(12, 12)
                pixmap.fill(qt.QColor(*prompt.color))
                item.setIcon(qt.QIcon(pixmap))
            widget.addItem(item)
        self._updatingPrompts = False
        self.onPromptFilterChanged(self.ui.promptFilterLineEdit.text)
        self.updatePromptCount()

    def promptItems(self) -> list:
        widget = self.ui.promptListWidget
        return [widget.item(i) for i in range(widget.count)]

    def checkedPrompts(self) -> list:
        return [item.data(qt.Qt.UserRole) for item in self.promptItems() if item.checkState() == qt.Qt.Checked]

    def onPromptFilterChanged(self, text: str) -> None:
        needle = (text or "").strip().lower()
        for item in self.promptItems():
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def setVisiblePromptsChecked(self, checked: bool) -> None:
        self._updatingPrompts = True
        for item in self.promptItems():
            if not item.isHidden():
                item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
        self._updatingPrompts = False
        self.onPromptItemChanged(None)

    def onPromptItemChanged(self, item) -> None:
        if self._updatingPrompts:
            return
        qt.QSettings().setValue(self.promptSettingsKey(), ",".join(self.checkedPrompts()))
        self.updatePromptCount()

    def updatePromptCount(self) -> None:
        count = _("{count} of {count2}").format(count=len(self.checkedPrompts()), count2=self.ui.promptListWidget.count)
        if catalogue.requested_prompts(self.checkedPrompts(), self.models.prompts) == [catalogue.ALL_PROMPTS]:
            count += _(" (all: those that fit the scan)")
        self.ui.promptCountLabel.text = count
        self._checkCanApply()

    # --- crop (ROI) ---------------------------------------------------------------------------------
    def onFitRoi(self) -> None:
        """Place an ROI box around the input volume (the selected ROI, or a new one) and select it."""
        params = self._parameterNode
        try:
            params.roi = self.logic.fitCropRoi(params.inputVolume if params else None, params.roi if params else None)
        except Exception as exc:  # no volume, a volume without geometry
            self.show_error(_("Failed to place the ROI box:\n{exc}").format(exc=exc))
            return
        self.ui.statusLabel.text = _("Drag the ROI box's faces onto the structure, then click Apply.")

    # --- device -----------------------------------------------------------------------------------
    def startDeviceProbe(self) -> None:
        if self._deviceThread is not None:
            return
        self.ui.deviceInfoLabel.text = _("will use: (checking PyTorch and GPU...)")
        self._deviceThread = threading.Thread(target=self._probeDevice, daemon=True)
        self._deviceThread.start()
        self.pollTimer.start()

    def _probeDevice(self) -> None:
        try:
            self.logic.probeDevice()
        except Exception as exc:  # the label says "cannot run" after the poll
            logging.warning(f"VerSemi: device probe failed: {exc}")

    def updateDeviceInfo(self, *args) -> None:
        if not self.logic.deviceProbed:
            self.ui.deviceInfoLabel.text = (
                _("will use: (checking PyTorch and GPU...)") if self._deviceThread is not None
                else _("will use: (known once VerSemi's packages are installed)")
            )
            return
        try:
            self.ui.deviceInfoLabel.text = self.logic.deviceChoice(self.ui.deviceComboBox.currentText).describe()
        except ValueError as exc:
            self.ui.deviceInfoLabel.text = _("cannot run: {exc}").format(exc=exc)

    # --- model cache (panel.CacheView) --------------------------------------------------------------
    def setupCacheSection(self, uiWidget) -> None:
        """The collapsible Model cache section: installed models, size, card, remove."""
        import ctk

        section = ctk.ctkCollapsibleButton()
        section.text = _("Model cache")
        section.collapsed = True
        layout = uiWidget.layout()
        layout.insertWidget(max(layout.count() - 1, 0), section)
        form = qt.QVBoxLayout(section)
        self.cacheTable = qt.QTableWidget(0, 3)
        self.cacheTable.setHorizontalHeaderLabels([_("Model"), _("Size"), _("Status")])
        self.cacheTable.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.cacheTable.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.cacheTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.cacheTable.horizontalHeader().setStretchLastSection(True)
        self.cacheTable.verticalHeader().visible = False
        form.addWidget(self.cacheTable)
        self.cacheCard = qt.QPlainTextEdit()
        self.cacheCard.readOnly = True
        self.cacheCard.placeholderText = _("Select a model to see its card.")
        self.cacheCard.setMaximumHeight(120)
        form.addWidget(self.cacheCard)
        buttons = qt.QHBoxLayout()
        self.cacheRefreshButton = qt.QPushButton(_("Refresh"))
        self.cacheRemoveButton = qt.QPushButton(_("Remove"))
        self.cacheRemoveButton.toolTip = _("Delete the selected model file from the VerSemi model cache.")
        self.cacheOpenFolderButton = qt.QPushButton(_("Open folder"))
        self.cacheOpenFolderButton.toolTip = _("Show the model cache folder in the file manager.")
        self.cacheClearButton = qt.QPushButton(_("Clear all"))
        self.cacheClearButton.toolTip = _("Delete every model of the model cache (asks first; models shipped with versemi stay).")
        for button in (self.cacheRefreshButton, self.cacheRemoveButton, self.cacheOpenFolderButton, self.cacheClearButton):
            buttons.addWidget(button)
        form.addLayout(buttons)
        self.cacheStatusLabel = qt.QLabel("")
        self.cacheStatusLabel.wordWrap = True
        form.addWidget(self.cacheStatusLabel)
        section.connect("contentsCollapsed(bool)", lambda collapsed: None if collapsed else self.refreshCache())
        self.cacheRefreshButton.connect("clicked(bool)", self.refreshCache)
        self.cacheRemoveButton.connect("clicked(bool)", self.onCacheRemove)
        self.cacheOpenFolderButton.connect("clicked(bool)", self.onCacheOpenFolder)
        self.cacheClearButton.connect("clicked(bool)", self.onCacheClearAll)
        self.cacheTable.connect("currentCellChanged(int,int,int,int)", self.onCacheRowChanged)

    def onCacheOpenFolder(self) -> None:
        folder = self.cache.folder()
        if folder:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))

    def onCacheClearAll(self) -> None:
        self.cache.clear_all()
        self.pollTimer.start()

    def refreshCache(self) -> None:
        self.cache.refresh()
        self.pollTimer.start()

    def onCacheRowChanged(self, row: int, column: int = 0, previousRow: int = -1, previousColumn: int = -1) -> None:
        self.cache.show_card(row)
        self.pollTimer.start()  # the card is read in the background

    def onCacheRemove(self) -> None:
        self.cache.remove(self.cacheTable.currentRow())
        self.pollTimer.start()

    def set_cache_rows(self, rows: list) -> None:
        table = self.cacheTable
        table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, text in enumerate((row.label, row.size_text, row.status)):
                table.setItem(index, column, qt.QTableWidgetItem(text))

    def set_cache_card(self, text: str) -> None:
        self.cacheCard.plainText = text

    def set_cache_status(self, text: str) -> None:
        self.cacheStatusLabel.text = text

    # --- review (panel.ReviewView) --------------------------------------------------------------------
    def setupReviewSection(self, uiWidget) -> None:
        """The collapsible Review section (built here: the .ui file holds the segmentation panel)."""
        import ctk

        section = ctk.ctkCollapsibleButton()
        section.text = _("Review")
        section.collapsed = True
        layout = uiWidget.layout()
        # Above the .ui's bottom spacer, so the section sits right under the others.
        layout.insertWidget(max(layout.count() - 1, 0), section)
        form = qt.QFormLayout(section)

        self.reviewFolderSelector = ctk.ctkPathLineEdit()
        self.reviewFolderSelector.filters = ctk.ctkPathLineEdit.Dirs
        self.reviewFolderSelector.settingKey = f"{SETTINGS_PREFIX}/reviewFolder"
        self.reviewFolderSelector.toolTip = _("A folder made by 'versemi pseudolabel' (it holds manifest.json).")
        self.reviewOpenButton = qt.QPushButton(_("Open"))
        folderRow = qt.QHBoxLayout()
        folderRow.addWidget(self.reviewFolderSelector, 1)
        folderRow.addWidget(self.reviewOpenButton)
        form.addRow(_("Review folder:"), folderRow)

        self.reviewTable = qt.QTableWidget(0, 4)
        self.reviewTable.setHorizontalHeaderLabels([_("Case"), _("Status"), _("Score"), _("Updated by")])
        self.reviewTable.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.reviewTable.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.reviewTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.reviewTable.horizontalHeader().setStretchLastSection(True)
        self.reviewTable.verticalHeader().visible = False
        self.reviewTable.toolTip = _("Highest review score first. Double-click a case to open it.")
        form.addRow(self.reviewTable)

        self.reviewNextButton = qt.QPushButton(_("Next case"))
        self.reviewNextButton.toolTip = _("Load the highest-scored pending case (an open case is skipped and stays pending).")
        self.reviewEditorButton = qt.QPushButton(_("Segment Editor"))
        self.reviewEditorButton.toolTip = _("Edit the open case's segmentation in the Segment Editor.")
        self.reviewSaveButton = qt.QPushButton(_("Save refined label"))
        self.reviewSaveButton.toolTip = _("Store the segments as the case's refined label (a new file), then load the next case.")
        self.reviewRejectButton = qt.QPushButton(_("Reject"))
        self.reviewRejectButton.toolTip = _("Mark the case as not worth fixing (stays unlabeled for training), then load the next case.")
        self.reviewReasonEdit = qt.QLineEdit()
        self.reviewReasonEdit.placeholderText = _("reason for rejecting (optional)")
        self.reviewUndoButton = qt.QPushButton(_("Undo"))
        self.reviewUndoButton.toolTip = _("Take back the last rejection: the case's previous status and refined label come back.")
        self.reviewReopenButton = qt.QPushButton(_("Reopen"))
        self.reviewReopenButton.toolTip = _("Set the selected rejected or refined case back to pending (a refined label stays the label to edit).")
        buttons = qt.QHBoxLayout()
        for button in (self.reviewNextButton, self.reviewEditorButton, self.reviewSaveButton, self.reviewRejectButton):
            buttons.addWidget(button)
        form.addRow(buttons)
        historyButtons = qt.QHBoxLayout()
        historyButtons.addWidget(self.reviewUndoButton)
        historyButtons.addWidget(self.reviewReopenButton)
        form.addRow(historyButtons)
        form.addRow(_("Reject reason:"), self.reviewReasonEdit)
        self.reviewStatusLabel = qt.QLabel(_("Choose a review folder and click Open."))
        self.reviewStatusLabel.wordWrap = True
        form.addRow(self.reviewStatusLabel)

        self.reviewOpenButton.connect("clicked(bool)", self.onReviewOpen)
        self.reviewNextButton.connect("clicked(bool)", self.reviewPanel.next)
        self.reviewEditorButton.connect("clicked(bool)", self.onReviewSegmentEditor)
        self.reviewSaveButton.connect("clicked(bool)", self.reviewPanel.save)
        self.reviewRejectButton.connect("clicked(bool)", self.onReviewReject)
        self.reviewUndoButton.connect("clicked(bool)", self.reviewPanel.undo)
        self.reviewReopenButton.connect("clicked(bool)", self.onReviewReopen)
        self.reviewTable.connect("cellDoubleClicked(int,int)", self.onReviewCaseDoubleClicked)
        self.refresh_review()

    def onReviewOpen(self) -> None:
        folder = self.reviewFolderSelector.currentPath
        self.reviewPanel.open(folder)
        if self.reviewPanel.controller is not None:
            self.reviewFolderSelector.addCurrentPathToHistory()

    def onReviewReject(self) -> None:
        self.reviewPanel.reject(self.reviewReasonEdit.text)
        self.reviewReasonEdit.text = ""

    def onReviewReopen(self) -> None:
        item = self.reviewTable.item(self.reviewTable.currentRow(), 0)
        if item is not None:
            self.reviewPanel.reopen(item.text())

    def choose(self, text: str, choices: list[str]) -> Optional[int]:
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle(_("VerSemi Segmenter"))
        box.setText(text)
        buttons = [box.addButton(choice, qt.QMessageBox.ActionRole) for choice in choices]
        box.exec_()
        clicked = box.clickedButton()
        return next((i for i, button in enumerate(buttons) if button is clicked), None)

    def onReviewCaseDoubleClicked(self, row: int, column: int) -> None:
        item = self.reviewTable.item(row, 0)
        if item is not None:
            self.reviewPanel.open_case(item.text())

    def onReviewSegmentEditor(self) -> None:
        controller = self.reviewPanel.controller
        loaded = controller.current if controller is not None else None
        if loaded is None:
            return
        try:
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(loaded.segmentation_node)
            editor.setSourceVolumeNode(loaded.volume_node)
        except Exception as exc:
            self.show_error(_("Failed to open the Segment Editor:\n{exc}").format(exc=exc))

    def show_status(self, text: str) -> None:
        slicer.util.showStatusMessage(text, 5000)

    def show_case(self, loaded) -> None:
        slicer.util.setSliceViewerLayers(background=loaded.volume_node, fit=True)

    def refresh_review(self) -> None:
        controller = self.reviewPanel.controller
        rows = []
        if controller is not None:
            try:
                rows = controller.rows()
                self.reviewStatusLabel.text = f"{controller.review_dir}: {controller.status_text()}"
            except ValueError as exc:  # the manifest became unreadable (ReviewError)
                self.reviewStatusLabel.text = _("Cannot read the review: {exc}").format(exc=exc)
        else:
            self.reviewStatusLabel.text = _("Choose a review folder and click Open.")
        table = self.reviewTable
        table.setRowCount(len(rows))
        current = controller.current.case_id if controller is not None and controller.current else None
        for index, row in enumerate(rows):
            for column, text in enumerate((row.case_id, row.status, row.score_text, row.updated_by or "")):
                table.setItem(index, column, qt.QTableWidgetItem(text))
            if row.case_id == current:
                table.selectRow(index)
        isOpen = current is not None
        self.reviewNextButton.enabled = controller is not None
        for button in (self.reviewEditorButton, self.reviewSaveButton, self.reviewRejectButton):
            button.enabled = isOpen
        self.reviewUndoButton.enabled = self.reviewPanel.undoable is not None
        self.reviewReopenButton.enabled = controller is not None

    # --- run --------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None and self._job.is_running:
            self.cancelRunning()
            return
        if self._applyPending:
            return
        self.ensureBackend("to segment", self.applyWhenReady)

    def applyWhenReady(self) -> None:
        output = self._parameterNode.outputSegmentation if self._parameterNode else None
        if output is not None and not slicer.util.confirmYesNoDisplay(
            _("Replace ALL segments of '{name}' with the new result?\n(Choose 'Create new segmentation' "
               "to keep them.)").format(name=output.GetName()),
            windowTitle=_("VerSemi Segmenter"),
        ):
            return
        choice = self.models.current
        gate = terms.TermsGate(lambda key: qt.QSettings().value(f"{SETTINGS_PREFIX}/{key}"),
                               lambda key, value: qt.QSettings().setValue(f"{SETTINGS_PREFIX}/{key}", value))
        if choice is not None and not gate.ask(choice, lambda: catalogue.model_card_text(choice), self.confirm):
            self.ui.statusLabel.text = _("Not started: the model's licence and intended use were not accepted.")
            return
        self._applyPending = True
        if not self.logic.deviceProbed:
            self.ui.statusLabel.text = _("Checking PyTorch and GPU...")
            self.startDeviceProbe()  # the poll starts the run when the probe is done
            self._checkCanApply()
            return
        self.startSegmentation()

    def startSegmentation(self) -> None:
        self._applyPending = False
        params = self._parameterNode
        if not self.logic.deviceProbed:  # the probe thread failed: never probe on the GUI thread
            self.ui.statusLabel.text = _("Not started.")
            self._checkCanApply()
            self.show_error(_("Failed to start the segmentation:\ncould not check PyTorch and the GPU (see the log)."))
            return
        try:
            choice = self.logic.deviceChoice(params.device)  # refuses an unusable explicit device now
            self.ui.deviceInfoLabel.text = choice.describe()
            # The request itself (auto included) goes to versemi predict: its resolver decides.
            job = self.logic.startSegmentation(
                params.inputVolume, params.model, catalogue.requested_prompts(self.checkedPrompts(), self.models.prompts),
                params.device, params.quality,
                params.outputSegmentation, params.roi,
            )
        except Exception as exc:  # bad settings, unusable device, predictor not startable
            self.ui.statusLabel.text = _("Not started.")
            self.setRunningState(False)
            self.show_error(_("Failed to start the segmentation:\n{exc}").format(exc=exc))
            return
        self._job = job
        job.progress.connect(self.onProgress)
        self._startTime = time.monotonic()
        self.setRunningState(True)
        self.ui.statusLabel.text = _("Starting ({describe})...").format(describe=choice.describe())
        frame = volume_export.sequence_frame(params.inputVolume)
        if frame is not None:  # a Sequence: say that only the frame shown is segmented
            note = frame.note(params.inputVolume.GetName())
            self.ui.statusLabel.text += " " + note
            slicer.util.showStatusMessage(note, 10000)
        self.pollTimer.start()

    def setRunningState(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = True
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (
            self.ui.inputVolumeSelector,
            self.ui.modelComboBox,
            self.ui.promptListWidget,
            self.ui.deviceComboBox,
            self.ui.qualityComboBox,
            self.ui.outputSegmentationSelector,
            self.ui.roiSelector,
            self.ui.roiFitButton,
        ):
            widget.enabled = not running
        if not running:
            self._checkCanApply()

    def onProgress(self, event) -> None:
        self.ui.progressBar.value = int(round(event.fraction * 1000))
        if event.message:
            self.ui.statusLabel.text = f"{event.stage}: {event.message}"

    def cancelRunning(self) -> None:
        if self._job is not None and self._job.is_running:
            self.ui.statusLabel.text = _("Cancelling...")
            self._job.cancel()
            self.onPoll()
        if self._downloadRunner is not None:
            self._downloadRunner.cancel()
            self.onPoll()
        # A package install is cancelled with its own button (onCancelTask): pip is never killed half-way.

    def onCancelTask(self) -> None:
        """Cancel the download or the package install (the install stops after its running pip step)."""
        if self._downloadRunner is not None:
            self._downloadRunner.cancel()
        if self._installFlow is not None:
            self._installFlow.cancel()
            self.ui.statusLabel.text = self._installFlow.status or _("Cancelling...")
        self.onPoll()

    def onPoll(self) -> None:
        self.onInstallPoll()
        self.models.poll()
        self.cache.poll()
        if self._deviceThread is not None and not self._deviceThread.is_alive():
            self._deviceThread = None
            self.updateDeviceInfo()
            if self._applyPending:
                self.startSegmentation()
        if self._job is not None and self._job.poll() is not None:  # also after a cancel
            self.onJobFinished(self._job)
        if self._downloadRunner is not None:
            result = self._downloadRunner.poll()
            if result is not None:
                self._downloadRunner = None
                self.ui.progressBar.visible = False
                if result.succeeded:
                    self.ui.statusLabel.text = _("Model downloaded and verified.")
                    self.models.refresh(select_key=self.models.current.key if self.models.current else None)
                elif result.cancelled:
                    self.ui.statusLabel.text = _("Download cancelled.")
                else:
                    self.ui.statusLabel.text = _("Download failed.")
                    self.show_error(_("Download failed:\n{error_message}").format(error_message=result.error_message()))
                self._checkCanApply()
        busy = (
            (self._job is not None and self._job.is_running) or self._downloadRunner or self._deviceThread
            or self._installFlow or self.models.busy or self.cache.busy  # after the handlers above
        )
        self.ui.cancelTaskButton.visible = bool(self._downloadRunner or self._installFlow)
        if not busy:
            self.pollTimer.stop()

    def onJobFinished(self, job) -> None:
        self._job = None
        self.setRunningState(False)
        seconds = time.monotonic() - self._startTime
        if job.succeeded:
            result = job.import_result
            node = result.segmentation_node
            node.CreateClosedSurfaceRepresentation()
            message = _("Done in {seconds:.0f} s: {count} segments in '{name}'.").format(seconds=seconds, count=len(result.segment_ids), name=node.GetName())
            if result.empty_segments:
                message += _(" Nothing found for: {empty_segments} (kept as empty segments).").format(empty_segments=', '.join(result.empty_segments))
            for warning in job.warnings:  # e.g. a field of view far from the model's training scans
                message += _(" Warning: {warning}").format(warning=warning)
            self.ui.statusLabel.text = message
            slicer.util.setSliceViewerLayers(background=job.volume_node)
            self._lastResult = (node, job.volume_node)
            self.ui.exportDicomSegButton.enabled = True
        elif job.cancelled:
            self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        else:
            self.ui.statusLabel.text = _("Failed (see the error message).")
            self.show_error(_("Segmentation failed:\n{error}").format(error=job.error))

    def onExportDicomSeg(self) -> None:
        """Open Slicer's DICOM export dialog on the result (it writes the DICOM SEG)."""
        node, volume = self._lastResult or (None, None)
        plugins = getattr(slicer.modules, "dicomPlugins", {}) or {}
        problem = dicom_export.dicom_seg_export_problem(node, volume, plugins.keys())
        if problem:
            self.show_error(problem)
            return
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        dialog = slicer.qSlicerDICOMExportDialog()
        dialog.setMRMLScene(slicer.mrmlScene)
        dialog.execDialog(shNode.GetItemByDataNode(node))


#
# VerSemiSegmenterTest
#


class VerSemiSegmenterTest(ScriptedLoadableModuleTest):
    """End-to-end checks; each ``test_*`` runs on its own (ctest) or all in a row (Reload and Test).

    In testing mode nothing is installed: a test that needs the backend (versemi, torch, MONAI in
    Slicer's Python) is skipped with the reason when it is missing.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.workDir = tempfile.mkdtemp(prefix="VerSemi test ü ")

    def tearDown(self):
        slicer.mrmlScene.Clear()
        shutil.rmtree(self.workDir, ignore_errors=True)

    def runTest(self):
        # "Reload and Test" calls runTest only; ctest runs each test_* through unittest (setUp/tearDown).
        for name in sorted(n for n in dir(self) if n.startswith("test_")):
            self.setUp()
            try:
                getattr(self, name)()
            except unittest.SkipTest as skipped:
                self.delayDisplay(_("{name} skipped: {skipped}").format(name=name, skipped=skipped))
            finally:
                self.tearDown()

    def _logicWithBackend(self) -> VerSemiSegmenterLogic:
        logic = VerSemiSegmenterLogic()
        try:
            logic.ensureDependencies()
        except dependencies.DependencyError as exc:
            self.skipTest(f"VerSemi's backend is not usable here: {exc}")
        return logic

    def _tinyCheckpoint(self, logic) -> str:
        checkpoint = os.path.join(self.workDir, "tiny model.pt")
        selftest.make_tiny_checkpoint(checkpoint, logic.pythonExecutable)
        return checkpoint

    def test_segment_with_tiny_model(self):
        self.delayDisplay(_("Segmenting a small volume with a tiny VerSemi model"))
        logic = self._logicWithBackend()
        checkpoint = self._tinyCheckpoint(logic)
        volume = selftest.add_sample_volume(slicer.mrmlScene)
        prompts = ["liver", "spleen", "organ_x"]
        colors = {p.name: p.color for p in catalogue.read_checkpoint_prompts(checkpoint, logic.pythonExecutable)}
        result = logic.process(volume, checkpoint, prompts, device="cpu", quality="default", timeout=600)
        problems = selftest.check_segmentation(
            result.segmentation_node, volume, prompts, colors, selftest.TINY_PROMPT_CODES
        )
        self.assertEqual(problems, [])
        # Replace mode: same node, new segments.
        again = logic.process(volume, checkpoint, ["spleen"], device="cpu", outputSegmentation=result.segmentation_node)
        self.assertIs(again.segmentation_node, result.segmentation_node)
        self.assertEqual(result.segmentation_node.GetSegmentation().GetNumberOfSegments(), 1)
        self.delayDisplay(_("Test passed"))

    def test_cancel_adds_nothing(self):
        self.delayDisplay(_("Cancelling a running segmentation"))
        logic = self._logicWithBackend()
        checkpoint = self._tinyCheckpoint(logic)
        volume = selftest.add_sample_volume(slicer.mrmlScene)
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        job = logic.startSegmentation(volume, checkpoint, ["liver"], device="cpu")
        pid = job.pid
        started = time.monotonic()
        job.cancel()
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertFalse(job.is_running)
        self.assertTrue(job.cancelled)
        import psutil

        self.assertFalse(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), before)
        self.delayDisplay(_("Test passed"))

    def test_default_model_on_sample_data(self):
        self.delayDisplay(_("Segmenting the bundled sample data with the default model"))
        logic = self._logicWithBackend()
        default = next((m for m in logic.listModels() if m.default and m.installed), None)
        if default is None:
            self.skipTest("no default model is installed ('versemi models list' marks none as default)")
        names = [p.name for p in logic.modelPrompts(default) if not p.synthetic]
        sample, prompts = selftest.pick_sample(names)
        if sample is None:
            self.skipTest(f"the default model {default.key} segments none of the sample structures")
        path = sampledata.sample_path(logic.moduleResourcesDir(), sample.node_name)
        volume = review.load_volume_node(path, slicer.mrmlScene, sample.node_name)
        result = logic.process(volume, default.key, prompts, device="cpu", quality="default", timeout=1800)
        self.assertEqual(selftest.check_segmentation(result.segmentation_node, volume, prompts), [])
        self.assertLess(len(result.empty_segments), len(prompts), f"nothing found in {sample.name}")
        self.delayDisplay(_("Test passed"))

    def test_ReviewRoundTrip(self):
        self.delayDisplay(_("Reviewing a tiny folder: next case, save refined, reject"))
        if review.missing_review_packages():
            self._logicWithBackend()
        # Raises selftest.SelfTestError listing the problems; removes its nodes and folder either way.
        selftest.run_review_round_trip(slicer.mrmlScene, self.workDir)
        self.delayDisplay(_("Test passed"))
