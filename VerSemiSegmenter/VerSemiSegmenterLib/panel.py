"""What the module's panel does when the user acts, and after a failure, without Qt or Slicer.

The widget (``VerSemiSegmenter.py``) forwards clicks to these controllers and implements their small
view interfaces with Qt widgets; tests implement them with plain objects. Every failure is caught
here and shown once (``view.show_error``: what happened, what to do), leaving the panel consistent;
slow work runs in a :class:`~VerSemiSegmenterLib.process.BackgroundCall` polled by :meth:`poll`, and
a result that arrives after the user moved on is dropped. Actions are resolved to what the user
chose (a model key), never to a combo-box index a refill could change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from .i18n import _
from .catalogue import ModelChoice, PromptInfo, local_checkpoint_choice, model_card_text
from .process import BackgroundCall

BROWSE_ITEM_TEXT = "Browse local checkpoint..."

# ensure_backend(reason, then): run ``then()`` once the backend is installed (at once when it is);
# the widget starts the background install flow when needed and reports its failures itself.
EnsureBackend = Callable[[str, Callable[[], None]], None]


def _start(function: Callable[..., Any], *args: Any) -> BackgroundCall:
    return BackgroundCall(function, *args).start()


@dataclass(frozen=True)
class ModelItem:
    """One entry of the model selector (the last one is always "Browse local checkpoint...")."""

    label: str
    tooltip: str
    key: str
    browse: bool = False


class ModelView(Protocol):
    """The model part of the panel (combo box, info line, download button, prompt list)."""

    def set_model_items(self, items: list[ModelItem], current: int) -> None: ...

    def set_model_info(self, text: str) -> None: ...

    def set_download_visible(self, visible: bool) -> None: ...

    def set_install_visible(self, visible: bool) -> None:
        """Show the "Install VerSemi packages" button (shown while the backend is missing)."""
        ...

    def set_prompts(self, prompts: list[PromptInfo]) -> None: ...

    def set_model_key(self, key: str) -> None:
        """Store the chosen model in the parameter node."""
        ...

    def saved_model_key(self) -> str:
        """The model stored in the parameter node (to select it again after a refresh)."""
        ...

    def show_error(self, message: str) -> None: ...

    def ask_checkpoint_file(self) -> Optional[str]: ...

    def remembered_checkpoints(self) -> list[str]: ...

    def remember_checkpoint(self, path: str) -> None: ...


class ModelBackend(Protocol):
    """What the model panel needs from the module logic."""

    def backend_ready(self) -> bool:
        """versemi and the predictor's packages are installed (cheap: package metadata only)."""
        ...

    def list_models(self) -> list[ModelChoice]: ...

    def model_prompts(self, choice: ModelChoice) -> list[PromptInfo]: ...


class ModelPanel:
    """The model selector: listing, choosing (or browsing for) a model, and its prompts.

    Args:
        view: the widgets (:class:`ModelView`).
        backend: the module logic (:class:`ModelBackend`).
        ensure_backend: installs what is missing, then calls back (see :data:`EnsureBackend`).
        start_call: starts a background call (tests may run it inline).
    """

    def __init__(
        self,
        view: ModelView,
        backend: ModelBackend,
        ensure_backend: EnsureBackend,
        start_call: Callable[..., Any] = _start,
    ) -> None:
        self.view = view
        self.backend = backend
        self.ensure_backend = ensure_backend
        self.start_call = start_call
        self.choices: list[ModelChoice] = []
        self.items: list[ModelItem] = [ModelItem(BROWSE_ITEM_TEXT, "Choose a .pt checkpoint file", "", True)]
        self.current: Optional[ModelChoice] = None
        self.prompts: list[PromptInfo] = []
        self.loaded = False  # a listing succeeded (entering the module again does not list again)
        self.list_error: Optional[str] = None
        self._listing: Optional[BackgroundCall] = None
        self._listing_select: Optional[str] = None
        self._reading: Optional[BackgroundCall] = None
        self._reading_key: Optional[str] = None

    # --- listing ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._listing is not None or self._reading is not None

    def enter(self) -> None:
        """Entering the module: list the models unless a listing succeeded or is running."""
        if not self.loaded and self._listing is None:
            self.refresh()

    def refresh(self, select_key: Optional[str] = None) -> None:
        """List the models in the background, then select ``select_key`` (or the saved/default one)."""
        self._listing_select = select_key
        if not self.backend.backend_ready():
            self._apply_listing([], None)
            return
        self.view.set_model_info(_("Listing VerSemi models..."))
        self._listing = self.start_call(self.backend.list_models)

    def poll(self) -> bool:
        """Hand finished background work to the view. Returns True while work is pending."""
        if self._listing is not None and self._listing.poll():
            call, self._listing = self._listing, None
            self._apply_listing(call.result or [], call.error)
        if self._reading is not None and self._reading.poll():
            call, self._reading = self._reading, None
            self._apply_prompts(call, self._reading_key)
        return self.busy

    def _apply_listing(self, models: list[ModelChoice], error: Optional[BaseException]) -> None:
        if error is not None:
            self.list_error = f"Could not list the VerSemi models: {error}"
            self.loaded = False  # try again next time the module is entered
        else:
            self.list_error = None
            self.loaded = self.backend.backend_ready()
        local_paths = [p for p in self.view.remembered_checkpoints() if os.path.isfile(p)]
        keys = {m.key for m in models}
        local = [local_checkpoint_choice(p) for p in local_paths if os.path.abspath(p) not in keys]
        self.choices = list(models) + local
        self.items = [ModelItem(c.label, c.description or c.key, c.key) for c in self.choices]
        self.items.append(ModelItem(BROWSE_ITEM_TEXT, "Choose a .pt checkpoint file", "", True))
        wanted = self._listing_select or self.view.saved_model_key()
        self._listing_select = None
        choice = self._find(wanted) or next((c for c in self.choices if c.default and c.installed), None)
        if choice is None and self.choices:
            choice = self.choices[0]
        self._select(choice)
        if error is not None:
            self.view.show_error(
                _("{list_error}\n\nLocal checkpoints can still be used ('{bROWSE_ITEM_TEXT}'); the list is "
                   "read again the next time you open the module.").format(list_error=self.list_error, bROWSE_ITEM_TEXT=BROWSE_ITEM_TEXT)
            )

    def _find(self, key: Optional[str]) -> Optional[ModelChoice]:
        return next((c for c in self.choices if key and c.key == key), None)

    # --- choosing --------------------------------------------------------------------------------
    def activate(self, index: int) -> None:
        """The user picked entry ``index`` of the selector (resolved to that entry right away)."""
        if not 0 <= index < len(self.items):
            return
        item = self.items[index]
        if item.browse:
            self.browse()
            return
        choice = self._find(item.key)
        self._select(choice)
        if choice is not None and not self.backend.backend_ready():
            key = choice.key
            self.ensure_backend("to use the model", lambda: self.refresh(select_key=key))

    def install(self) -> None:
        """The user asked to install the backend: install (asks first), then list the models."""
        key = self.current.key if self.current else None
        self.ensure_backend("to list the models", lambda: self.refresh(select_key=key))

    def browse(self) -> None:
        """Ask for a checkpoint file; select it (installing the backend first if needed)."""
        path = self.view.ask_checkpoint_file()
        if not path:
            self._select(self.current)  # the selector shows "Browse..." otherwise: put the model back
            return
        path = os.path.abspath(path)
        self.view.remember_checkpoint(path)
        choice = self._find(path) or local_checkpoint_choice(path)
        if choice not in self.choices:
            self.choices.append(choice)
            self.items.insert(len(self.items) - 1, ModelItem(choice.label, choice.key, choice.key))
        self._select(choice)
        if not self.backend.backend_ready():
            self.ensure_backend("to read the checkpoint", lambda: self.refresh(select_key=path))

    def _select(self, choice: Optional[ModelChoice]) -> None:
        self.current = choice
        index = self.choices.index(choice) if choice in self.choices else -1
        self.view.set_model_items(list(self.items), index)
        self.view.set_model_key(choice.key if choice else "")
        self._reading = None  # a pending read for another model is dropped
        self._reading_key = None
        installed = self.backend.backend_ready()
        self.view.set_install_visible(not installed)
        self.view.set_download_visible(
            installed and choice is not None and choice.source != "local" and not choice.installed
        )
        prompts = list(choice.prompts) if choice else []
        if not installed:
            info = (_("VerSemi's Python packages are not installed yet: click Install (asks first, then lists "
                       "the models), or choose a checkpoint file.") if choice is None
                    else _("VerSemi's Python packages are needed to use this model: installing them asks first."))
        elif self.list_error and choice is None:
            info = self.list_error
        elif choice is None:
            info = _("No model found: choose '{bROWSE_ITEM_TEXT}' or install one (see the documentation).").format(bROWSE_ITEM_TEXT=BROWSE_ITEM_TEXT)
        elif choice.source != "local" and not choice.installed:
            info = _("Not installed yet: click Download (SHA-256 verified), or import a file with 'versemi "
                      "models import'.")
        else:
            info = _("Reading {path}...").format(path=choice.path)
            prompts = []
            self._reading_key = choice.key
            self._reading = self.start_call(self.backend.model_prompts, choice)
        self.prompts = prompts
        self.view.set_model_info(info)
        self.view.set_prompts(prompts)

    def _apply_prompts(self, call: BackgroundCall, key: Optional[str]) -> None:
        choice = self.current
        if choice is None or choice.key != key:
            return  # the user chose another model meanwhile
        self._reading_key = None
        if call.error is not None:
            self.prompts = []
            self.view.set_model_info(_("Cannot use {label}: {error}").format(label=choice.label, error=call.error))
            self.view.set_prompts([])
            self.view.show_error(
                _("Failed to read model {key}:\n{error}\n\nChoose another model or checkpoint file.").format(key=choice.key, error=call.error)
            )
            return
        self.prompts = list(call.result or [])
        self.view.set_model_info(choice.path or choice.key)
        self.view.set_prompts(self.prompts)


# --- model cache --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheRow:
    """An installed model as the Model cache section shows it."""

    key: str
    label: str
    size_text: str
    status: str
    removable: bool
    card: str
    size: Optional[int] = None
    path: str = ""


def human_size(size: Optional[int]) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def cache_rows(models: list[ModelChoice]) -> list[CacheRow]:
    """The installed models (file on disk) of a ``versemi models list``, with size and card."""
    rows = []
    for choice in models:
        if not choice.installed:
            continue
        try:
            size: Optional[int] = os.path.getsize(choice.path or "")
        except OSError:
            size = choice.size
        rows.append(CacheRow(choice.key, choice.key, human_size(size), choice.status or "installed",
                             choice.removable, model_card_text(choice), size, choice.path or ""))
    return rows


def cache_summary(rows: list[CacheRow]) -> str:
    """``"3 models installed, 1.2 GiB in the model cache."`` (bundled models are not in the cache)."""
    cached = [r for r in rows if r.removable]
    total = sum(r.size or 0 for r in cached)
    if len(rows) == 1:
        text = _("1 model installed")
    else:
        text = _("{count} models installed").format(count=len(rows))
    return _("{installed}, {size} in the model cache.").format(installed=text, size=human_size(total))


def cache_folder(rows: list[CacheRow]) -> Optional[str]:
    """The model cache folder (where the removable models lie), or ``None`` while it holds none."""
    folders = sorted({os.path.dirname(r.path) for r in rows if r.removable and r.path})
    return folders[0] if folders else None


class CacheView(Protocol):
    def set_cache_rows(self, rows: list[CacheRow]) -> None: ...

    def set_cache_card(self, text: str) -> None: ...

    def set_cache_status(self, text: str) -> None: ...

    def confirm(self, text: str) -> bool: ...

    def show_error(self, message: str) -> None: ...


class CacheBackend(Protocol):
    def backend_ready(self) -> bool:
        """versemi and the predictor's packages are installed (cheap: package metadata only)."""
        ...

    def list_models(self) -> list[ModelChoice]: ...

    def model_card(self, choice: ModelChoice) -> str: ...

    def remove_model(self, key: str) -> str: ...


class CachePanel:
    """The Model cache section: installed models, their size and card, and removing one.

    Args:
        view: :class:`CacheView`.
        backend: :class:`CacheBackend`.
        on_removed: called with the key after a model was removed (the model selector refreshes).
        start_call: starts a background call.
    """

    def __init__(
        self,
        view: CacheView,
        backend: CacheBackend,
        on_removed: Callable[[str], None] = lambda key: None,
        start_call: Callable[..., Any] = _start,
    ) -> None:
        self.view = view
        self.backend = backend
        self.on_removed = on_removed
        self.start_call = start_call
        self.models: list[ModelChoice] = []
        self.rows: list[CacheRow] = []
        self._calls: list[tuple[str, BackgroundCall, Any]] = []

    @property
    def busy(self) -> bool:
        return bool(self._calls)

    def refresh(self) -> None:
        if not self.backend.backend_ready():
            self._set_rows([])
            self.view.set_cache_status(_("VerSemi's Python packages are not installed yet."))
            return
        self.view.set_cache_status(_("Reading the model cache..."))
        self._calls.append(("list", self.start_call(self.backend.list_models), None))

    def show_card(self, index: int) -> None:
        if not 0 <= index < len(self.rows):
            self.view.set_cache_card("")
            return
        row = self.rows[index]
        self.view.set_cache_card(row.card)
        choice = next((m for m in self.models if m.key == row.key), None)
        if choice is not None:
            self._calls.append(("card", self.start_call(self.backend.model_card, choice), row.key))

    def remove(self, index: int) -> None:
        if not 0 <= index < len(self.rows):
            return
        row = self.rows[index]
        if not row.removable:
            self.view.show_error(
                _("{key} is not in the model cache (it ships with versemi or was chosen as a local file), "
                   "so it is not removed from here.").format(key=row.key)
            )
            return
        if not self.view.confirm(_("Remove {key} ({size_text}) from the model cache? It can be downloaded or imported again later.").format(key=row.key, size_text=row.size_text)):
            return
        self.view.set_cache_status(_("Removing {key}...").format(key=row.key))
        self._calls.append(("remove", self.start_call(self.backend.remove_model, row.key), row.key))

    def folder(self) -> Optional[str]:
        """The model cache folder to open, or ``None`` (shown as an error) while it holds no model."""
        folder = cache_folder(self.rows)
        if folder is None:
            self.view.show_error(_("No model has been downloaded or imported into the model cache yet."))
        return folder

    def clear_all(self) -> None:
        """Remove every model of the cache after one question listing them and their total size."""
        removable = [r for r in self.rows if r.removable]
        if not removable:
            self.view.show_error(_("The model cache holds no model to remove (models shipped with versemi stay)."))
            return
        listing = "\n".join(f"- {r.key} ({r.size_text})" for r in removable)
        total = human_size(sum(r.size or 0 for r in removable))
        if not self.view.confirm(_("Remove every model from the model cache ({size})?\n\n{models}\n\nThey can be "
                                   "downloaded or imported again later.").format(size=total, models=listing)):
            return
        keys = [r.key for r in removable]
        self.view.set_cache_status(_("Removing {count} models...").format(count=len(keys)))

        def remove_all() -> str:
            return "\n".join(self.backend.remove_model(key) for key in keys)

        self._calls.append(("clear", self.start_call(remove_all), ", ".join(keys)))

    def poll(self) -> bool:
        for entry in [e for e in self._calls if e[1].poll()]:
            self._calls.remove(entry)
            kind, call, key = entry
            if kind == "list":
                if call.error is not None:
                    self._set_rows([])
                    self.view.set_cache_status(_("Could not read the model cache: {error}").format(error=call.error))
                    self.view.show_error(_("Could not read the model cache:\n{error}").format(error=call.error))
                else:
                    self.models = list(call.result or [])
                    self._set_rows(cache_rows(self.models))
                    self.view.set_cache_status(cache_summary(self.rows))
            elif kind == "card":
                if call.error is None and call.result:
                    self.view.set_cache_card(str(call.result))
            elif kind == "clear":
                if call.error is not None:
                    self.view.show_error(_("Could not remove every model:\n{error}").format(error=call.error))
                else:
                    self.view.set_cache_status(_("Removed {keys}.").format(keys=key))
                for removed in key.split(", "):
                    self.on_removed(removed)
                self.refresh()
            elif kind == "remove":
                if call.error is not None:
                    self.view.set_cache_status(_("{key} was not removed.").format(key=key))
                    self.view.show_error(_("Could not remove {key}:\n{error}").format(key=key, error=call.error))
                else:
                    self.view.set_cache_status(str(call.result or f"Removed {key}."))
                    self.on_removed(key)
                self.refresh()
        return self.busy

    def _set_rows(self, rows: list[CacheRow]) -> None:
        self.rows = rows
        self.view.set_cache_rows(list(rows))
        self.view.set_cache_card("")


# --- review -------------------------------------------------------------------------------------------


class ReviewView(Protocol):
    def confirm(self, text: str) -> bool: ...

    def choose(self, text: str, choices: list[str]) -> Optional[int]:
        """Ask the user to pick one of ``choices`` (buttons); ``None`` when the dialog is closed."""
        ...

    def show_error(self, message: str) -> None: ...

    def show_status(self, text: str) -> None: ...

    def refresh_review(self) -> None:
        """Redraw the table, status line and buttons from :attr:`ReviewPanel.controller`."""
        ...

    def show_case(self, loaded: Any) -> None:
        """Show an opened case in the slice views."""
        ...


def saved_work_text(case: Any) -> str:
    """Whose saved work a case holds, in words (for questions that could affect it)."""
    if case is not None and getattr(case, "refined_label", None) is not None:
        return _("the refined label saved by {user} at {time}").format(
            user=case.refined_by or _("unknown"), time=case.refined_at or "?")
    return _("the model's pseudo-label")


class ReviewPanel:
    """The Review section's actions: each one ends with the panel redrawn, also after a failure.

    Nothing an annotator did is lost without a question: leaving a case with unsaved edits and
    rejecting ask first and say whose work is affected; a rejection can be undone; a save on a case
    someone changed meanwhile keeps both labels and lets the user choose (:meth:`save`).

    Args:
        view: :class:`ReviewView`.
        open_review: makes a ``ReviewController`` for a folder.
        ensure_backend: installs ``versemi``/``filelock`` when missing, then calls back.
        missing_packages: the review packages not installed (``review.missing_review_packages``).
    """

    CONFLICT_CHOICES = ("keep", "load", "cancel")

    def __init__(
        self,
        view: ReviewView,
        open_review: Callable[[str], Any],
        ensure_backend: EnsureBackend,
        missing_packages: Callable[[], list[str]],
    ) -> None:
        self.view = view
        self.open_review = open_review
        self.ensure_backend = ensure_backend
        self.missing_packages = missing_packages
        self.controller: Any = None
        # The last decision that Undo takes back: (case id, the case's revision right after it).
        self.undoable: Optional[tuple[str, int]] = None

    def _attempt(self, what: str, action: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, action()
        except Exception as exc:  # shown to the user; the panel is redrawn by the caller
            self.view.show_error(_("{what}:\n{error}").format(what=what, error=exc))
            return False, None

    def _confirm_leave(self) -> bool:
        if self.controller is None or self.controller.current is None:
            return True
        loaded = self.controller.current
        return self.view.confirm(
            _("Leave case {case} without saving? Your unsaved edits are discarded; {work} stays as it is.").format(
                case=loaded.case_id, work=saved_work_text(loaded.case))
        )

    def open(self, folder: str) -> None:
        if not folder:
            self.view.show_error(_("Failed to open the review folder:\nchoose a review folder first."))
            return
        if self.missing_packages():
            self.ensure_backend(_("to review pseudo-labels"), lambda: self.open(folder))
            return
        if not self._confirm_leave():
            return
        if self.controller is not None:
            self._attempt(_("Failed to close the open case"), self.controller.close_case)
            self.controller = None
        ok, controller = self._attempt(_("Failed to open the review folder"), lambda: self.open_review(folder))
        self.controller = controller if ok else None
        self.undoable = None
        self.view.refresh_review()

    def next(self) -> None:
        if self.controller is None or not self._confirm_leave():
            return
        self._load_next()

    def open_case(self, case_id: str) -> None:
        if self.controller is None:
            return
        if self.controller.current is not None and self.controller.current.case_id == case_id:
            return
        if not self._confirm_leave():
            return
        self._attempt(_("Failed to open case {case}").format(case=case_id), lambda: self.controller.open_case(case_id))
        self._show()

    def save(self) -> None:
        """Save the open case; if someone changed it since it was opened, both labels are kept and
        the user chooses: keep theirs (the user's) on top, load the newer label, or cancel."""
        if self.controller is None:
            return
        from versemi.review import ReviewConflict  # installed once a review is open

        try:
            saved = self.controller.save_refined(move_on=False)
        except ReviewConflict as conflict:
            self._resolve_conflict(conflict)
            return
        except Exception as exc:
            self.view.show_error(_("Failed to save the refined label:\n{error}").format(error=exc))
            self.view.refresh_review()  # the case stays open with its edits: save again or reject
            return
        self.undoable = None
        self.view.show_status(_("Saved {case} as {path}").format(case=saved.case_id, path=saved.refined_label))
        self._load_next()

    def _resolve_conflict(self, conflict: Any) -> None:
        newer = "; ".join(
            _("{action} by {user} at {time}").format(action=e.get("action"), user=e.get("by") or _("unknown"),
                                                     time=e.get("at") or "?")
            for e in conflict.newer
        )
        question = _(
            "Case {case} changed after you opened it: {changes}.\n\nYour label was saved as revision {revision} "
            "without replacing the newer one, so nothing is lost. What now?"
        ).format(case=conflict.case.case_id, changes=newer, revision=conflict.kept.number)
        choice = self.view.choose(question, [
            _("Keep mine on top"), _("Load the newer label"), _("Cancel (keep editing)")])
        action = self.CONFLICT_CHOICES[choice] if choice is not None else "cancel"
        if action == "keep":
            ok, saved = self._attempt(_("Failed to keep your label"), lambda: self.controller.keep_mine(conflict))
            if ok:
                self.view.show_status(_("Saved {case} as {path} (on top of the newer label)").format(
                    case=saved.case_id, path=saved.refined_label))
                self._load_next()
                return
        elif action == "load":
            self._attempt(_("Failed to load the newer label"), self.controller.load_newer)
            self.view.show_status(_("Loaded the newer label of {case}; your edits are revision {revision}.").format(
                case=conflict.case.case_id, revision=conflict.kept.number))
            self._show()
            return
        self.view.refresh_review()

    def reject(self, reason: str) -> None:
        """Reject the open case after asking (the question names whose saved work it sets aside)."""
        if self.controller is None or self.controller.current is None:
            return
        loaded = self.controller.current
        question = _("Reject case {case}? It will not be used for training. Your unsaved edits are discarded.").format(
            case=loaded.case_id)
        if loaded.case is not None and loaded.case.refined_label is not None:
            question += "\n\n" + _(
                "Training will no longer use {work}. The file stays on disk and Undo brings it back.").format(
                work=saved_work_text(loaded.case))
        if not self.view.confirm(question):
            return
        ok, rejected = self._attempt(_("Failed to reject the case"),
                                     lambda: self.controller.reject((reason or "").strip() or None, move_on=False))
        if ok:
            self.undoable = (rejected.case_id, rejected.revision)
            self.view.show_status(_("Rejected {case}. Undo takes it back.").format(case=rejected.case_id))
            self._load_next()
        else:
            self.view.refresh_review()

    def undo(self) -> None:
        """Take back the last rejection (its previous status and refined label come back)."""
        if self.controller is None or self.undoable is None:
            return
        case_id, revision = self.undoable
        ok, case = self._attempt(_("Failed to undo"), lambda: self.controller.undo(case_id, revision))
        if ok:
            self.undoable = None
            self.view.show_status(_("Undone: {case} is {status} again.").format(case=case_id, status=case.status))
        self.view.refresh_review()

    def reopen(self, case_id: str) -> None:
        """Set a rejected or refined case back to pending (its refined label stays the label to edit)."""
        if self.controller is None:
            return
        ok, case = self._attempt(_("Failed to reopen case {case}").format(case=case_id),
                                 lambda: self.controller.reopen(case_id))
        if ok:
            self.view.show_status(_("Reopened {case}: it is pending again.").format(case=case_id))
        self.view.refresh_review()

    def _load_next(self) -> None:
        self._attempt(_("Failed to load the next case"), self.controller.next_case)
        self._show()

    def _show(self) -> None:
        loaded = self.controller.current if self.controller is not None else None
        if loaded is not None:
            self._attempt(_("Failed to show the case"), lambda: self.view.show_case(loaded))
        self.view.refresh_review()
