"""Small stand-ins for what the Slicer application provides around the module file.

``slicer-core`` gives the real MRML scene, nodes and ``slicer.util`` array helpers, but not the Qt
application: ``qt``, ``ctk``, ``slicer.app`` and the Qt-based ``slicer.ScriptedLoadableModule`` /
``slicer.parameterNodeWrapper`` modules. These fakes provide only what ``VerSemiSegmenter.py``'s
logic and self-test touch, so the module file itself is imported and its ``VerSemiSegmenterTest``
methods run one by one, as ctest runs them (``--testing``: ``slicer.app.testingEnabled()`` is true).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import unittest
from pathlib import Path
from typing import Any

MODULE_DIR = Path(__file__).resolve().parents[2] / "VerSemiSegmenter"


class FakeEnvironment:
    """``QProcessEnvironment`` as ``slicer.app.startupEnvironment()`` returns it."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = dict(env)

    def keys(self) -> list[str]:
        return list(self._env)

    def value(self, key: str) -> str:
        return self._env.get(key, "")


class FakeApp:
    """``slicer.app`` in testing mode (as ctest starts Slicer)."""

    def __init__(self, temporary_path: str, version: str = "5.10.0") -> None:
        self.temporaryPath = temporary_path
        self.applicationVersion = version
        self.slicerHome = ""
        self.processed_events = 0

    def testingEnabled(self) -> bool:
        return True

    def processEvents(self, *args: Any) -> None:
        self.processed_events += 1

    def startupEnvironment(self) -> FakeEnvironment:
        return FakeEnvironment(dict(os.environ))

    def connect(self, *args: Any) -> None:
        pass  # startupCompleted() never fires here

    def commandOptions(self) -> Any:
        return types.SimpleNamespace(testingEnabled=True)


def _qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")

    class QTimer:
        def __init__(self) -> None:
            self.active = False

        def setInterval(self, ms: int) -> None:
            pass

        def connect(self, *args: Any) -> None:
            pass

        def start(self) -> None:
            self.active = True

        def stop(self) -> None:
            self.active = False

    qt.QTimer = QTimer
    qt.Qt = types.SimpleNamespace(WaitCursor=0, ToolTipRole=3, UserRole=256, Checked=2, Unchecked=0)
    return qt


def _scripted_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent: Any) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None) -> None:
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent: Any = None) -> None:
            self.moduleName = type(self).__name__[: -len("Logic")]

        def getParameterNode(self) -> Any:
            import slicer

            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetModuleName(self.moduleName)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, msec: int = 1000) -> None:
            pass

    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return module


def _parameter_node_wrapper_module() -> types.ModuleType:
    module = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls: type) -> type:
        def __init__(self: Any, node: Any) -> None:
            self.parameterNode = node

        cls.__init__ = __init__
        return cls

    module.parameterNodeWrapper = parameterNodeWrapper
    module.Choice = lambda values: ("Choice", tuple(values))
    return module


def load_module(monkeypatch: Any, temporary_path: str, version: str = "5.10.0") -> types.ModuleType:
    """Import ``VerSemiSegmenter.py`` with the fakes in place (undone by ``monkeypatch``)."""
    import slicer

    if not hasattr(slicer, "vtkMRMLScene"):
        raise RuntimeError("slicer-core is needed")
    app = FakeApp(temporary_path, version)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    scripted = _scripted_module()
    wrapper = _parameter_node_wrapper_module()
    monkeypatch.setitem(sys.modules, "qt", _qt_module())
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", scripted, raising=False)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", wrapper, raising=False)
    if str(MODULE_DIR) not in sys.path:
        monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "VerSemiSegmenter", raising=False)
    return importlib.import_module("VerSemiSegmenter")
