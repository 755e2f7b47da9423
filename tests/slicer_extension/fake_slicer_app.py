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


def _accepted_arguments(slot: Any, given: int) -> int:
    import inspect

    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return given
    return min(given, sum(1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)))


class FakeQObject:
    """A Qt widget/object: properties are plain attributes, signals are recorded and emitted by tests.

    Methods the tests do not care about (``setSelectionBehavior``, ``addRow``...) do nothing and
    return another fake, so chained calls (``table.horizontalHeader().setStretchLastSection(...)``)
    work as in Qt.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_slots"] = {}
        self.enabled = True
        self.visible = True
        text = args[0] if args and isinstance(args[0], str) else ""
        if callable(getattr(type(self), "text", None)):
            self._text = text  # items: text() is a method
        else:
            self.text = text  # widgets: text is a property
        self.toolTip = ""

    def connect(self, signal: str, slot: Any) -> None:
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args: Any) -> None:
        """What a user action would make Qt emit (e.g. ``"clicked(bool)"``)."""
        for slot in self._slots.get(signal, []):
            slot(*args[: _accepted_arguments(slot, len(args))])  # PythonQt drops extra arguments

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: FakeQObject()


class FakeLayout(FakeQObject):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.widgets: list[Any] = []

    def addWidget(self, widget: Any, *args: Any) -> None:
        self.widgets.append(widget)

    def insertWidget(self, index: int, widget: Any, *args: Any) -> None:
        self.widgets.insert(index, widget)

    def count(self) -> int:
        return len(self.widgets)


class FakeUIWidget(FakeQObject):
    def __init__(self) -> None:
        super().__init__()
        self._layout = FakeLayout()

    def layout(self) -> FakeLayout:
        return self._layout


class FakeComboBox(FakeQObject):
    def __init__(self, *args: Any) -> None:
        super().__init__()
        self.items: list[list[Any]] = []  # [text, data, tooltip]
        self.currentIndex = -1

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex][0] if 0 <= self.currentIndex < len(self.items) else ""

    def addItem(self, text: str, data: Any = None) -> None:
        self.items.append([text, data, ""])
        if self.currentIndex < 0:
            self.currentIndex = 0

    def addItems(self, texts: list[str]) -> None:
        for text in texts:
            self.addItem(text)

    def clear(self) -> None:
        self.items, self.currentIndex = [], -1

    def setItemData(self, index: int, value: Any, role: int) -> None:
        self.items[index][2] = value

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index

    def itemText(self, index: int) -> str:
        return self.items[index][0]


class FakeListWidgetItem(FakeQObject):
    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self._data: dict[int, Any] = {}
        self._check = 0
        self._hidden = False

    def setData(self, role: int, value: Any) -> None:
        self._data[role] = value

    def data(self, role: int) -> Any:
        return self._data.get(role)

    def flags(self) -> int:
        return 0

    def setCheckState(self, state: int) -> None:
        self._check = state

    def checkState(self) -> int:
        return self._check

    def setHidden(self, hidden: bool) -> None:
        self._hidden = hidden

    def isHidden(self) -> bool:
        return self._hidden


FakeListWidgetItem.text = lambda self: self._text  # QListWidgetItem.text() is a method


class FakeListWidget(FakeQObject):
    def __init__(self, *args: Any) -> None:
        super().__init__()
        self.items: list[FakeListWidgetItem] = []

    @property
    def count(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items = []

    def addItem(self, item: FakeListWidgetItem) -> None:
        self.items.append(item)

    def item(self, index: int) -> FakeListWidgetItem:
        return self.items[index]


class FakeTableWidgetItem(FakeQObject):
    pass


FakeTableWidgetItem.text = lambda self: self._text


class FakeTableWidget(FakeQObject):
    def __init__(self, rows: int = 0, columns: int = 0) -> None:
        super().__init__()
        self.cells: dict[tuple[int, int], Any] = {}
        self.rows = rows
        self.selected = -1

    def setRowCount(self, rows: int) -> None:
        self.rows = rows
        self.cells = {k: v for k, v in self.cells.items() if k[0] < rows}

    def setItem(self, row: int, column: int, item: Any) -> None:
        self.cells[(row, column)] = item

    def item(self, row: int, column: int) -> Any:
        return self.cells.get((row, column))

    def selectRow(self, row: int) -> None:
        self.selected = row

    def currentRow(self) -> int:
        return self.selected


class FakeSettings:
    store: dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.store.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self.store[key] = value


class FakeFileDialog:
    answer = ""  # what the user picks in the next file dialog

    @staticmethod
    def getOpenFileName(*args: Any) -> str:
        return FakeFileDialog.answer


class FakeTimer(FakeQObject):
    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


# .ui widget classes with behaviour the module relies on; every other class is a FakeQObject.
UI_CLASSES = {"QComboBox": FakeComboBox, "QListWidget": FakeListWidget}


def _qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    qt.QSettings = FakeSettings
    qt.QFileDialog = FakeFileDialog
    qt.QListWidgetItem = FakeListWidgetItem
    qt.QTableWidget = FakeTableWidget
    qt.QTableWidgetItem = FakeTableWidgetItem
    for name in ("QLabel", "QPushButton", "QLineEdit", "QPlainTextEdit", "QPixmap", "QColor", "QIcon"):
        setattr(qt, name, FakeQObject)
    for name in ("QFormLayout", "QHBoxLayout", "QVBoxLayout"):
        setattr(qt, name, FakeLayout)
    qt.QAbstractItemView = types.SimpleNamespace(NoEditTriggers=0, SelectRows=1, SingleSelection=1)
    qt.Qt = types.SimpleNamespace(WaitCursor=0, ToolTipRole=3, UserRole=256, Checked=2, Unchecked=0,
                                  ItemIsUserCheckable=16)
    return qt


def _ctk_module() -> types.ModuleType:
    ctk = types.ModuleType("ctk")

    class ctkPathLineEdit(FakeQObject):
        Dirs = 1

        def __init__(self) -> None:
            super().__init__()
            self.currentPath = ""

    ctk.ctkCollapsibleButton = FakeQObject
    ctk.ctkPathLineEdit = ctkPathLineEdit
    return ctk


def load_ui(path: str) -> FakeUIWidget:
    """``slicer.util.loadUI``: a fake widget holding one fake per widget named in the .ui file."""
    import xml.etree.ElementTree as ET

    widget = FakeUIWidget()
    widget.children_by_name = {}
    for element in ET.parse(path).getroot().iter("widget"):
        cls = UI_CLASSES.get(element.get("class"), FakeQObject)
        widget.children_by_name[element.get("name")] = cls()
    return widget


def child_widget_variables(widget: FakeUIWidget) -> types.SimpleNamespace:
    return types.SimpleNamespace(**widget.children_by_name)


def _scripted_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent: Any) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None) -> None:
            self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)

        def setup(self) -> None:
            self.layout = FakeLayout()

        def resourcePath(self, relative: str) -> str:
            return str(MODULE_DIR / "Resources" / relative)

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
        """Fields as plain attributes (no GUI binding); the rest goes to the parameter node."""

        def __init__(self: Any, node: Any) -> None:
            self.__dict__["parameterNode"] = node
            for name in getattr(cls, "__annotations__", {}):
                if not hasattr(cls, name):
                    self.__dict__[name] = None

        def __getattr__(self: Any, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            return getattr(self.__dict__["parameterNode"], name)

        cls.__init__ = __init__
        cls.__getattr__ = __getattr__
        cls.connectGui = lambda self, ui: "gui-tag"
        cls.disconnectGui = lambda self, tag: None
        return cls

    module.parameterNodeWrapper = parameterNodeWrapper
    module.Choice = lambda values: ("Choice", tuple(values))
    return module


def _i18n_module() -> types.ModuleType:
    """``slicer.i18n`` with no translation loaded: the text comes back unchanged."""
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
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
    FakeSettings.store = {}
    FakeFileDialog.answer = ""
    monkeypatch.setitem(sys.modules, "qt", _qt_module())
    monkeypatch.setitem(sys.modules, "ctk", _ctk_module())
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    i18n = _i18n_module()
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setattr(slicer, "i18n", i18n, raising=False)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", scripted, raising=False)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", wrapper, raising=False)
    if str(MODULE_DIR) not in sys.path:
        monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "VerSemiSegmenter", raising=False)
    return importlib.import_module("VerSemiSegmenter")
