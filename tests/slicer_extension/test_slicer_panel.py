"""The panel's logic paths (``VerSemiSegmenterLib.panel``): failures leave the panel consistent.

The view is a plain recorder of what the widget would show; the backend stands in for the module
logic (``versemi models list``, reading prompts). The review tests use the real review controller
on a real folder and a ``slicer-core`` MRML scene.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from VerSemiSegmenterLib import panel
from VerSemiSegmenterLib.catalogue import ModelChoice, ModelInfoError, PromptInfo


class RecordingView:
    """What the widget shows, as data."""

    def __init__(self, checkpoint_answer: Optional[str] = None, confirm: bool = True) -> None:
        self.items: list[panel.ModelItem] = []
        self.current_index = -1
        self.info = ""
        self.download_visible = False
        self.install_visible = False
        self.prompts: list[PromptInfo] = []
        self.model_key = ""
        self.errors: list[str] = []
        self.checkpoint_answer = checkpoint_answer
        self.remembered: list[str] = []
        self.confirm_answer = confirm
        self.questions: list[str] = []
        self.cache_rows: list[panel.CacheRow] = []
        self.cache_card = ""
        self.cache_status = ""
        self.statuses: list[str] = []
        self.review_refreshes = 0
        self.shown_cases: list[str] = []
        self.choice_answer: Optional[int] = None
        self.choices: list[tuple[str, list[str]]] = []

    # ModelView
    def set_model_items(self, items, current):
        self.items, self.current_index = list(items), current

    def set_model_info(self, text):
        self.info = text

    def set_download_visible(self, visible):
        self.download_visible = visible

    def set_install_visible(self, visible):
        self.install_visible = visible

    def set_prompts(self, prompts):
        self.prompts = list(prompts)

    def set_model_key(self, key):
        self.model_key = key

    def saved_model_key(self):
        return self.model_key

    def show_error(self, message):
        self.errors.append(message)

    def ask_checkpoint_file(self):
        return self.checkpoint_answer

    def remembered_checkpoints(self):
        return list(self.remembered)

    def remember_checkpoint(self, path):
        self.remembered.insert(0, path)

    # CacheView / ReviewView
    def confirm(self, text):
        self.questions.append(text)
        return self.confirm_answer

    def choose(self, text, choices):
        self.choices.append((text, list(choices)))
        return self.choice_answer

    def set_cache_rows(self, rows):
        self.cache_rows = list(rows)

    def set_cache_card(self, text):
        self.cache_card = text

    def set_cache_status(self, text):
        self.cache_status = text

    def show_status(self, text):
        self.statuses.append(text)

    def refresh_review(self):
        self.review_refreshes += 1

    def show_case(self, loaded):
        self.shown_cases.append(loaded.case_id)

    # what the user sees in the selector
    @property
    def selected_label(self) -> Optional[str]:
        return self.items[self.current_index].label if 0 <= self.current_index < len(self.items) else None


class FakeBackend:
    def __init__(self, ready: bool = True, models: Optional[list[ModelChoice]] = None) -> None:
        self.ready = ready
        self.models = list(models or [])
        self.list_error: Optional[Exception] = None
        self.list_calls = 0
        self.prompts: dict[str, Any] = {}  # key -> list of prompts, an exception, or a threading.Event gate
        self.removed: list[str] = []
        self.remove_error: Optional[Exception] = None

    def backend_ready(self) -> bool:
        return self.ready

    def list_models(self) -> list[ModelChoice]:
        self.list_calls += 1
        if self.list_error is not None:
            raise self.list_error
        return list(self.models)

    def model_prompts(self, choice: ModelChoice) -> list[PromptInfo]:
        answer = self.prompts.get(choice.key, [PromptInfo("liver")])
        if isinstance(answer, tuple):  # (gate, prompts): wait for the gate (a slow read)
            gate, answer = answer
            gate.wait(10)
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    def model_card(self, choice: ModelChoice) -> str:
        return f"card of {choice.key}"

    def remove_model(self, key: str) -> str:
        if self.remove_error is not None:
            raise self.remove_error
        self.removed.append(key)
        self.models = [m for m in self.models if m.key != key]
        return f"{key}: removed"


class DeferredInstaller:
    """``ensure_backend``: records the request; :meth:`finish` "installs" and runs the callbacks."""

    def __init__(self, backend: FakeBackend, models_after: list[ModelChoice]) -> None:
        self.backend = backend
        self.models_after = models_after
        self.pending: list[Callable[[], None]] = []
        self.reasons: list[str] = []

    def __call__(self, reason: str, then: Callable[[], None]) -> None:
        self.reasons.append(reason)
        if self.backend.ready:
            then()
        else:
            self.pending.append(then)

    def finish(self) -> None:
        self.backend.ready = True
        self.backend.models = list(self.models_after)
        callbacks, self.pending = self.pending, []
        for callback in callbacks:
            callback()


def settle(controller: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while controller.poll():
        assert time.monotonic() < deadline, "background work did not finish"
        time.sleep(0.01)


def checkpoint(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(b"checkpoint bytes")
    return str(path)


def catalogue_model(key: str, path: Optional[str] = None, default: bool = False) -> ModelChoice:
    return ModelChoice(key=key, label=f"{key} ({'installed' if path else 'not installed'})", source="catalogue",
                       path=path, prompts=[PromptInfo("liver"), PromptInfo("spleen")], default=default,
                       status="installed" if path else "not installed", removable=bool(path))


def assert_consistent(view: RecordingView, models: panel.ModelPanel) -> None:
    """The selector lists the choices then "Browse...", shows the current model, and the rest follows it."""
    assert [i.key for i in view.items] == [c.key for c in models.choices] + [""]
    assert view.items[-1].browse and view.items[-1].label == panel.BROWSE_ITEM_TEXT
    expected = models.choices.index(models.current) if models.current in models.choices else -1
    assert view.current_index == expected
    assert view.model_key == (models.current.key if models.current else "")
    assert view.prompts == models.prompts


# --- models list ---------------------------------------------------------------------------------------


def test_a_failing_models_list_leaves_local_checkpoints_browse_and_an_explanation(tmp_path: Path) -> None:
    view, backend = RecordingView(), FakeBackend()
    local = checkpoint(tmp_path, "mine.pt")
    view.remembered = [local]
    backend.list_error = ModelInfoError("'versemi models list' failed: catalogue.json: invalid JSON")
    models = panel.ModelPanel(view, backend, DeferredInstaller(backend, []))
    models.enter()
    settle(models)
    assert len(view.errors) == 1
    assert "Could not list the VerSemi models" in view.errors[0] and "invalid JSON" in view.errors[0]
    assert [i.label for i in view.items] == ["mine.pt (local file)", panel.BROWSE_ITEM_TEXT]
    assert models.current.key == local and view.prompts == [PromptInfo("liver")]  # the local file still works
    assert_consistent(view, models)
    assert not models.loaded

    # Entering the module again lists again; once it works, the catalogue models appear, no new error.
    backend.list_error = None
    backend.models = [catalogue_model("abdomen@1.0", checkpoint(tmp_path, "abdomen.pt"))]
    models.enter()
    settle(models)
    assert backend.list_calls == 2 and len(view.errors) == 1 and models.loaded
    assert [i.key for i in view.items] == ["abdomen@1.0", local, ""]
    assert models.current.key == local  # the model in use stays selected
    assert_consistent(view, models)
    models.enter()
    assert backend.list_calls == 2  # a successful listing is not repeated on every visit


def test_a_failing_models_list_without_local_files_selects_nothing_and_says_why() -> None:
    view, backend = RecordingView(), FakeBackend()
    backend.list_error = ModelInfoError("cannot run PythonSlicer: [Errno 2] No such file")
    models = panel.ModelPanel(view, backend, DeferredInstaller(backend, []))
    models.enter()
    settle(models)
    assert models.current is None and view.prompts == [] and view.model_key == ""
    assert "Could not list the VerSemi models" in view.info and "No such file" in view.info
    assert_consistent(view, models)


def test_the_default_model_is_preselected_when_nothing_was_chosen(tmp_path: Path) -> None:
    view = RecordingView()
    backend = FakeBackend(models=[catalogue_model("a@1"), catalogue_model("b@1", checkpoint(tmp_path, "b.pt"), True)])
    models = panel.ModelPanel(view, backend, DeferredInstaller(backend, []))
    models.enter()
    settle(models)
    assert models.current.key == "b@1" and view.selected_label == "b@1 (installed)"
    assert_consistent(view, models)

    view2 = RecordingView()  # without a default: the first model, as before
    models2 = panel.ModelPanel(view2, FakeBackend(models=[catalogue_model("a@1"), catalogue_model("c@1")]),
                               DeferredInstaller(FakeBackend(), []))
    models2.enter()
    settle(models2)
    assert models2.current.key == "a@1" and view2.download_visible  # not installed: Download offered


# --- checkpoint read -----------------------------------------------------------------------------------


def test_a_failing_checkpoint_read_empties_the_prompts_and_keeps_the_choice(tmp_path: Path) -> None:
    good, bad = checkpoint(tmp_path, "good.pt"), checkpoint(tmp_path, "bad.pt")
    view, backend = RecordingView(), FakeBackend(models=[catalogue_model("good@1", good), catalogue_model("bad@1", bad)])
    backend.prompts["bad@1"] = ModelInfoError(f"{bad}: not a VerSemi checkpoint (no 'label_space')")
    models = panel.ModelPanel(view, backend, DeferredInstaller(backend, []))
    models.enter()
    settle(models)
    assert models.current.key == "good@1" and [p.name for p in view.prompts] == ["liver"]

    models.activate(1)
    settle(models)
    assert models.current.key == "bad@1" and view.prompts == [] and models.prompts == []
    assert len(view.errors) == 1 and "Failed to read model bad@1" in view.errors[0] and bad in view.errors[0]
    assert view.info.startswith("Cannot use bad@1")
    assert_consistent(view, models)

    models.activate(0)  # another model works normally afterwards
    settle(models)
    assert models.current.key == "good@1" and [p.name for p in view.prompts] == ["liver"] and len(view.errors) == 1
    assert_consistent(view, models)


def test_a_slow_read_for_a_model_left_behind_is_dropped(tmp_path: Path) -> None:
    slow, fast = checkpoint(tmp_path, "slow.pt"), checkpoint(tmp_path, "fast.pt")
    backend = FakeBackend(models=[catalogue_model("slow@1", slow), catalogue_model("fast@1", fast)])
    gate = threading.Event()
    backend.prompts["slow@1"] = (gate, [PromptInfo("slow_structure")])
    backend.prompts["fast@1"] = [PromptInfo("fast_structure")]
    view = RecordingView()
    models = panel.ModelPanel(view, backend, DeferredInstaller(backend, []))
    models.enter()
    while models._listing is not None:  # listing done; the read of slow@1 is blocked
        models.poll()
        time.sleep(0.01)
    assert view.info.startswith("Reading") and view.prompts == []
    models.activate(1)
    settle(models)
    gate.set()
    time.sleep(0.05)
    settle(models)
    assert models.current.key == "fast@1" and [p.name for p in view.prompts] == ["fast_structure"]
    assert_consistent(view, models)


# --- Browse after install -------------------------------------------------------------------------------


def test_browse_right_after_the_first_install_selects_the_file_not_a_model(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, "my model.pt")
    view, backend = RecordingView(checkpoint_answer=path), FakeBackend(ready=False)
    catalogue = [catalogue_model("abdomen@1.0", checkpoint(tmp_path, "a.pt"), True), catalogue_model("brain@2")]
    installer = DeferredInstaller(backend, catalogue)
    models = panel.ModelPanel(view, backend, installer)
    models.enter()
    settle(models)
    assert [i.label for i in view.items] == [panel.BROWSE_ITEM_TEXT] and models.current is None
    assert view.install_visible and "click Install" in view.info

    models.activate(0)  # "Browse local checkpoint..." (index 0 before the install)
    assert view.remembered == [path] and models.current.key == path
    assert installer.reasons == ["to read the checkpoint"]
    installer.finish()  # the install ends: the list is refilled (Browse is no longer at index 0)
    settle(models)
    assert [i.key for i in view.items] == ["abdomen@1.0", "brain@2", path, ""]
    assert models.current.key == path and view.selected_label == "my model.pt (local file)"
    assert view.model_key == path and [p.name for p in view.prompts] == ["liver"]
    assert view.errors == [] and not view.install_visible
    assert_consistent(view, models)

    # Browse again, cancelled: the selection stays on the file (the selector does not show "Browse...").
    view.checkpoint_answer = None
    models.activate(len(view.items) - 1)
    assert models.current.key == path and view.selected_label == "my model.pt (local file)"
    assert_consistent(view, models)


def test_install_button_installs_then_lists_and_preselects_the_default(tmp_path: Path) -> None:
    view, backend = RecordingView(), FakeBackend(ready=False)
    installer = DeferredInstaller(backend, [catalogue_model("x@1"), catalogue_model("d@1", checkpoint(tmp_path, "d.pt"), True)])
    models = panel.ModelPanel(view, backend, installer)
    models.enter()
    settle(models)
    assert backend.list_calls == 0 and view.install_visible
    models.install()
    assert installer.reasons == ["to list the models"] and models.current is None  # waits for the install
    installer.finish()
    settle(models)
    assert models.current.key == "d@1" and not view.install_visible and models.loaded
    assert_consistent(view, models)


def test_a_model_chosen_before_the_install_stays_chosen_after_the_list_changes(tmp_path: Path) -> None:
    view, backend = RecordingView(), FakeBackend(ready=False)
    local = checkpoint(tmp_path, "local.pt")
    view.remembered = [local]
    installer = DeferredInstaller(backend, [catalogue_model("x@1"), catalogue_model("y@1", checkpoint(tmp_path, "y.pt"))])
    models = panel.ModelPanel(view, backend, installer)
    models.enter()
    settle(models)
    models.activate(0)  # the local file, the only entry before the install
    installer.finish()
    settle(models)
    assert [i.key for i in view.items] == ["x@1", "y@1", local, ""]
    assert models.current.key == local
    assert_consistent(view, models)


# --- model cache ----------------------------------------------------------------------------------------


def test_cache_lists_installed_models_with_size_and_card_and_removes_one(tmp_path: Path) -> None:
    installed = checkpoint(tmp_path, "a.pt")
    bundled = ModelChoice(key="default@1", label="default@1", source="catalogue", path=checkpoint(tmp_path, "d.pt"),
                          default=True, description="Shipped with versemi", removable=False, status="installed")
    backend = FakeBackend(models=[catalogue_model("a@1", installed), catalogue_model("b@1"), bundled])
    view = RecordingView()
    removed: list[str] = []
    cache = panel.CachePanel(view, backend, on_removed=removed.append)
    cache.refresh()
    settle(cache)
    assert [(r.key, r.size_text, r.removable) for r in view.cache_rows] == [("a@1", "16 B", True),
                                                                           ("default@1", "16 B", False)]
    assert view.cache_status == "2 models installed, 16 B in the model cache."  # the bundled one is not in it
    cache.show_card(1)
    assert "Shipped with versemi" in view.cache_card and "Default model" in view.cache_card
    settle(cache)
    assert view.cache_card == "card of default@1"  # versemi models info, when it answers

    cache.remove(1)  # the bundled default is not in the cache
    assert len(view.errors) == 1 and "not in the model cache" in view.errors[0] and backend.removed == []
    cache.remove(0)
    settle(cache)
    assert "Remove a@1 (16 B)" in view.questions[0]
    assert backend.removed == ["a@1"] and removed == ["a@1"]
    assert [r.key for r in view.cache_rows] == ["default@1"]

    backend.remove_error = ModelInfoError("'versemi models remove default@1' failed: not installed")
    view.cache_rows = []
    cache.rows = [panel.CacheRow("default@1", "default@1", "1 B", "installed", True, "")]
    cache.remove(0)
    settle(cache)
    assert "Could not remove default@1" in view.errors[-1]
    assert [r.key for r in view.cache_rows] == ["default@1"]  # listed again after the failure


def test_cache_total_size_folder_and_clear_all(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    a, b = checkpoint(cache_dir, "a.pt"), checkpoint(cache_dir, "b.pt")
    bundled = ModelChoice(key="default@1", label="default@1", source="catalogue", path=checkpoint(tmp_path, "d.pt"),
                          default=True, description="Shipped with versemi", removable=False, status="installed")
    backend = FakeBackend(models=[catalogue_model("a@1", a), catalogue_model("b@1", b), bundled])
    view = RecordingView(confirm=False)
    removed: list[str] = []
    cache = panel.CachePanel(view, backend, on_removed=removed.append)
    assert cache.folder() is None and "no model" in view.errors[-1].lower()
    cache.refresh()
    settle(cache)
    assert view.cache_status == "3 models installed, 32 B in the model cache."
    assert cache.folder() == str(cache_dir)
    cache.clear_all()  # declined: nothing removed
    assert "Remove every model from the model cache (32 B)?" in view.questions[-1]
    assert "- a@1 (16 B)" in view.questions[-1] and "default@1" not in view.questions[-1]
    assert backend.removed == []
    view.confirm_answer = True
    cache.clear_all()
    settle(cache)
    assert backend.removed == ["a@1", "b@1"] and removed == ["a@1", "b@1"]
    assert view.cache_status == "1 model installed, 0 B in the model cache."
    errors = len(view.errors)
    cache.clear_all()
    assert len(view.errors) == errors + 1 and "holds no model to remove" in view.errors[-1]


# --- review ---------------------------------------------------------------------------------------------


@pytest.fixture
def review_folder(tmp_path: Path) -> Path:
    pytest.importorskip("SimpleITK")
    pytest.importorskip("versemi.review")
    from VerSemiSegmenterLib import selftest

    return selftest.make_review_folder(tmp_path)


def test_a_failing_review_save_keeps_the_case_open_and_redraws(mrml_scene, review_folder: Path) -> None:
    from VerSemiSegmenterLib import review

    view = RecordingView()
    reviews = panel.ReviewPanel(
        view, lambda folder: review.open_review(folder, review.MrmlReviewScene(mrml_scene), user="tester"),
        DeferredInstaller(FakeBackend(), []), lambda: [],
    )
    reviews.open(str(review_folder))
    reviews.next()
    controller = reviews.controller
    case = controller.current.case_id
    assert view.shown_cases == [case]
    # A segment whose name is not in the label table: the save is refused.
    segmentation = controller.current.segmentation_node.GetSegmentation()
    segmentation.AddEmptySegment("stray", "tumour")
    refreshes = view.review_refreshes
    reviews.save()
    assert len(view.errors) == 1 and "Failed to save the refined label" in view.errors[0]
    assert "tumour" in view.errors[0]
    assert controller.current is not None and controller.current.case_id == case  # still open, edits kept
    assert controller.session.case(case).status == "pending"
    assert view.review_refreshes == refreshes + 1 and view.statuses == []
    assert not list((review_folder / "labelsTr").glob("*.nii.gz")) if (review_folder / "labelsTr").exists() else True

    segmentation.RemoveSegment("stray")
    reviews.save()
    assert controller.session.case(case).status == "refined" and len(view.errors) == 1
    assert view.statuses and view.statuses[0].startswith(f"Saved {case}")
    assert controller.current is not None and controller.current.case_id != case  # the next case is open
    reviews.reject("test")
    assert controller.current is None and controller.session.counts()["rejected"] == 1
    controller.close_case()


def test_review_open_failures_leave_no_controller(tmp_path: Path, review_folder: Path) -> None:
    from VerSemiSegmenterLib import review

    view = RecordingView()
    reviews = panel.ReviewPanel(view, lambda folder: review.open_review(folder, None), DeferredInstaller(FakeBackend(), []),
                                lambda: [])
    reviews.open("")
    assert "choose a review folder first" in view.errors[-1]
    reviews.open(str(tmp_path / "no such folder"))
    assert reviews.controller is None and "Failed to open the review folder" in view.errors[-1]
    assert view.review_refreshes == 1
    missing = panel.ReviewPanel(view, lambda folder: None, DeferredInstaller(FakeBackend(ready=False), []),
                                lambda: ["filelock"])
    missing.open(str(review_folder))
    assert missing.controller is None  # waits for the install; nothing opened yet


def _review_panel(mrml_scene, folder: Path, user: str, view: RecordingView) -> panel.ReviewPanel:
    from VerSemiSegmenterLib import review

    return panel.ReviewPanel(
        view, lambda f: review.open_review(f, review.MrmlReviewScene(mrml_scene), user=user),
        DeferredInstaller(FakeBackend(), []), lambda: [],
    )


def test_rejecting_a_refined_case_asks_names_whose_work_and_can_be_undone(mrml_scene, review_folder: Path) -> None:
    from versemi.review import ReviewSession
    import SimpleITK as sitk

    view = RecordingView()
    reviews = _review_panel(mrml_scene, review_folder, "bob", view)
    reviews.open(str(review_folder))
    case = reviews.controller.session.next_case().case_id
    # Alice refined this case earlier (e.g. with the CLI); bob opens it.
    alice = ReviewSession(review_folder, user="alice")
    image = sitk.ReadImage(str(alice.case(case).pseudo_label))
    refined = alice.save_refined(case, image)
    reviews.open_case(case)
    assert reviews.controller.current.case_id == case

    view.confirm_answer = False  # bob says no: nothing changes
    reviews.reject("looks wrong")
    assert "refined label saved by alice" in view.questions[-1] and f"Reject case {case}?" in view.questions[-1]
    assert "Undo brings it back" in view.questions[-1]
    assert alice.case(case).status == "refined" and reviews.controller.current.case_id == case

    view.confirm_answer = True
    reviews.reject("looks wrong")
    assert alice.case(case).status == "rejected" and "Undo" in view.statuses[-1]
    reviews.undo()
    now = alice.case(case)
    assert now.status == "refined" and now.refined_label == refined.refined_label and now.refined_by == "alice"
    assert view.statuses[-1] == f"Undone: {case} is refined again."
    reviews.controller.close_case()


def test_leaving_a_case_asks_and_names_the_saved_work(mrml_scene, review_folder: Path) -> None:
    view = RecordingView(confirm=False)
    reviews = _review_panel(mrml_scene, review_folder, "bob", view)
    reviews.open(str(review_folder))
    reviews.next()
    opened = reviews.controller.current
    reviews.next()
    assert reviews.controller.current is opened  # the user said no: the case and its edits stay
    assert "unsaved edits are discarded" in view.questions[-1] and "the model's pseudo-label" in view.questions[-1]
    reviews.controller.close_case()


@pytest.mark.parametrize("answer", [0, 1, 2])
def test_two_annotators_save_the_same_case_both_kept_and_the_second_chooses(
    mrml_scene, review_folder: Path, answer: int
) -> None:
    import SimpleITK as sitk
    import numpy as np

    alice_view, bob_view = RecordingView(), RecordingView()
    alice = _review_panel(mrml_scene, review_folder, "alice", alice_view)
    bob = _review_panel(mrml_scene, review_folder, "bob", bob_view)
    alice.open(str(review_folder))
    bob.open(str(review_folder))
    alice.next()
    bob.next()
    case = alice.controller.current.case_id
    assert bob.controller.current.case_id == case
    # Bob erases a segment, alice saves first.
    segmentation = bob.controller.current.segmentation_node.GetSegmentation()
    removed = segmentation.GetNthSegmentID(0)
    segmentation.RemoveSegment(removed)
    alice.save()
    first = alice.controller.session.case(case)
    assert first.status == "refined" and first.refined_by == "alice"

    bob_view.choice_answer = answer
    bob.save()
    text, options = bob_view.choices[-1]
    assert f"Case {case} changed after you opened it" in text and "refined by alice" in text
    assert "nothing is lost" in text and options[0] == "Keep mine on top"
    session = bob.controller.session
    revisions = session.revisions(case)
    assert [(r.by, r.action) for r in revisions] == [("alice", "refined"), ("bob", "conflict")]
    assert all(r.exists for r in revisions)  # both labels on disk
    bobs = sitk.GetArrayFromImage(sitk.ReadImage(str(revisions[1].path)))
    alices = sitk.GetArrayFromImage(sitk.ReadImage(str(revisions[0].path)))
    assert not np.array_equal(bobs, alices)
    now = session.case(case)
    if answer == 0:  # keep mine on top
        assert now.refined_label == revisions[1].path and now.refined_by == "bob"
        assert bob.controller.current is None or bob.controller.current.case_id != case
    elif answer == 1:  # load the newer label (alice's); bob's edits stay as a revision
        assert now.refined_label == revisions[0].path
        assert bob.controller.current.case_id == case and bob.controller.current.edited_label == revisions[0].path
        assert "your edits are revision 2" in bob_view.statuses[-1]
    else:  # cancel: still open with the edits
        assert now.refined_label == revisions[0].path
        assert bob.controller.current.case_id == case
        assert bob.controller.current.segmentation_node.GetSegmentation().GetSegment(removed) is None
    for reviews in (alice, bob):
        reviews.controller.close_case()
