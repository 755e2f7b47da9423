"""The review manifest: rows, ordering, paths, atomic writes, the inter-process lock, CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from versemi.data.dataset import Case, DatasetError
from versemi.review import (
    ManifestError,
    ReviewManifest,
    UncertaintyScore,
    refined_cases,
    review_label_table,
    unrefined_cases,
)
from versemi.review.manifest import CSV_COLUMNS

from .conftest import LABELS

MODEL = {"name": "tiny", "version": "1", "sha256": "00" * 32}


def _add(m: ReviewManifest, case: str, score: float | None, root: Path) -> None:
    m.upsert(case, image=root / "scans" / f"{case}.nii.gz", pseudo_label=m.root / "pseudo" / f"{case}.nii.gz",
             model=MODEL, score=score, user="bot")


def test_upsert_sorts_by_score_and_stores_relative_paths(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path / "review")
    _add(m, "b", 0.2, tmp_path)
    _add(m, "a", 0.2, tmp_path)
    _add(m, "c", 0.9, tmp_path)
    _add(m, "d", None, tmp_path)
    assert [r.case for r in m.rows()] == ["c", "a", "b", "d"]  # score desc, ties by id, unscored last
    raw = json.loads(m.path.read_text())
    assert raw["format"] == "versemi-review-manifest" and raw["format_version"] == 2
    assert [r["case"] for r in raw["cases"]] == ["c", "a", "b", "d"]
    row = raw["cases"][0]
    assert row["pseudo_label"] == "pseudo/c.nii.gz"  # inside the folder: relative (movable)
    assert row["image"] == str((tmp_path / "scans" / "c.nii.gz").resolve())  # outside: absolute
    assert row["status"] == "pending" and row["refined_label"] is None
    assert row["updated_by"] == "bot" and row["updated_at"].endswith("+00:00")
    assert row["history"][0]["action"] == "pseudolabel" and row["model"] == MODEL
    assert m.row("c").pseudo_label == m.root / "pseudo" / "c.nii.gz"
    assert [r.case for r in m.pending()] == ["c", "a", "b", "d"]
    assert m.counts() == {"pending": 4, "refined": 0, "rejected": 0, "failed": 0}


def test_uncertainty_components_and_extra_are_kept(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path)
    m.upsert("x", image=tmp_path / "x.nii.gz", pseudo_label=None, score=UncertaintyScore(0.6, 0.7, 0.5, 9),
             extra={"sidecar": "x.json"})
    row = m.row("x")
    assert row.score == 0.6
    assert row.uncertainty == {"disagreement": 0.7, "entropy": 0.5, "support_voxels": 9}
    assert row.extra == {"sidecar": "x.json"}


def test_new_pseudolabel_keeps_review_decisions(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path / "review")
    _add(m, "a", 0.5, tmp_path)
    m.set_status("a", "refined", user="alice", refined_label=m.root / "labelsTr" / "a.r1.nii.gz")
    _add(m, "a", 0.1, tmp_path)  # a later model run
    row = m.row("a")
    assert row.status == "refined" and row.refined_label == m.root / "labelsTr" / "a.r1.nii.gz"
    assert row.score == 0.1
    assert [e["action"] for e in row.history] == ["pseudolabel", "refined", "pseudolabel"]
    m.upsert("a", image=row.image, pseudo_label=row.pseudo_label, score=0.3, reset_status=True)
    assert m.row("a").status == "pending"


def test_set_status_errors(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path)
    _add(m, "a", 0.5, tmp_path)
    with pytest.raises(KeyError, match="no case 'zz'"):
        m.set_status("zz", "rejected")
    with pytest.raises(ManifestError, match="unknown status"):
        m.set_status("a", "done")
    with pytest.raises(ManifestError, match="needs the refined label"):
        m.set_status("a", "refined")
    m.set_status("a", "rejected", user="bob", reason="motion artefact")
    row = m.row("a")
    assert row.status == "rejected" and row.updated_by == "bob"
    assert row.history[-1]["reason"] == "motion artefact"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read review manifest"),
        ('{"cases": []}', "not a VerSemi review manifest"),
        ('{"format": "versemi-review-manifest", "format_version": 99, "cases": []}', "newer than"),
        ('{"format": "versemi-review-manifest", "format_version": 1, "cases": [{"case": "a"}]}', "missing key"),
        ('{"format": "versemi-review-manifest", "format_version": 1, "cases": '
         '[{"case": "a", "image": "x", "status": "done"}]}', "status 'done'"),
        ('{"format": "versemi-review-manifest", "format_version": 1, "cases": '
         '[{"case": "a", "image": "x"}, {"case": "a", "image": "y"}]}', "listed twice"),
    ],
)
def test_bad_manifest_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ManifestError, match=message) as info:
        ReviewManifest(tmp_path).load()
    assert "manifest.json" in str(info.value)


def test_failed_write_leaves_old_manifest_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = ReviewManifest(tmp_path)
    _add(m, "a", 0.5, tmp_path)
    before = m.path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        m.set_status("a", "rejected")
    monkeypatch.undo()
    assert m.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".manifest.json")) == []
    # An exception inside a transaction writes nothing either.
    with pytest.raises(RuntimeError):
        with m.transaction() as state:
            state.rows["a"].status = "rejected"
            raise RuntimeError("changed my mind")
    assert m.path.read_bytes() == before


def test_label_table_cannot_change_under_refined_cases(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path)
    m.set_label_table(LABELS)
    _add(m, "a", 0.5, tmp_path)
    m.set_label_table(list(reversed(LABELS)))  # same values and names: fine
    m.set_status("a", "refined", refined_label=tmp_path / "labelsTr" / "a.r1.nii.gz")
    with pytest.raises(ManifestError, match="already refined"):
        m.set_label_table([{"value": 1, "name": "kidney"}])
    with pytest.raises(ManifestError, match="positive int"):
        m.set_label_table([{"value": 0, "name": "background"}])
    with pytest.raises(ManifestError, match="duplicate"):
        m.set_label_table([{"value": 1, "name": "a"}, {"value": 1, "name": "b"}])
    assert review_label_table(tmp_path) == {"background": 0, "spleen": 1, "liver": 2}


def test_export_csv(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path / "review")
    _add(m, "a", 0.25, tmp_path)
    m.upsert("b", image=tmp_path / "b.nii.gz", pseudo_label=None, score=UncertaintyScore(0.75, 0.5, 1.0, 3))
    out = tmp_path / "review.csv"
    text = m.export_csv(out)
    assert out.read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["case"] for r in rows] == ["b", "a"]
    assert rows[0]["score"] == "0.750000" and rows[0]["entropy"] == "1.000000"
    assert rows[1]["model_name"] == "tiny" and rows[1]["status"] == "pending"


def test_training_views_give_cases(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path / "review")
    for c in ("a", "b", "c"):
        _add(m, c, 0.5, tmp_path)
    label = m.root / "labelsTr" / "a.r1.nii.gz"
    label.parent.mkdir()
    label.write_bytes(b"x")
    m.set_status("a", "refined", refined_label=label)
    m.set_status("c", "rejected")
    assert refined_cases(m.root) == [Case("a", ((tmp_path / "scans" / "a.nii.gz").resolve(),), label, "review")]
    unlabeled = unrefined_cases(m.root)
    assert [(c.case_id, c.label_path, c.dataset) for c in unlabeled] == [("b", None, "review"), ("c", None, "review")]
    label.unlink()
    with pytest.raises(DatasetError, match="refined but its label"):
        refined_cases(m.root)
    with pytest.raises(DatasetError, match="manifest not found"):
        refined_cases(tmp_path / "elsewhere")


_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from versemi.review import ReviewManifest
    root, prefix, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    m = ReviewManifest(root)
    for i in range(n):
        m.upsert(f"{prefix}{i:03d}", image=root / "img.nii.gz", pseudo_label=None, score=i / n, user=prefix)
        if i % 3 == 0:
            m.set_status(f"{prefix}{i:03d}", "rejected", user=prefix)
    """
)


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    """Two processes update the same manifest at once; every change of both survives."""
    n = 25
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), prefix, str(n)])
        for prefix in ("p", "q")
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    rows = ReviewManifest(tmp_path).rows()
    assert len(rows) == 2 * n
    assert sum(r.status == "rejected" for r in rows) == 2 * len(range(0, n, 3))


def test_lock_blocks_a_second_process(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path)
    _add(m, "a", 0.5, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom versemi.review import ReviewManifest\n"
         "with ReviewManifest(sys.argv[1]).locked():\n    print('held', flush=True); time.sleep(30)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        impatient = ReviewManifest(tmp_path, lock_timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(ManifestError, match="locked by another process"):
            impatient.set_status("a", "rejected")
        assert time.monotonic() - t0 >= 0.15  # it waited (for its 0.3 s) instead of failing at once
        assert impatient.row("a").status == "pending"  # reads need no lock
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops the lock of a killed process: writing works again at once.
    ReviewManifest(tmp_path, lock_timeout=5).set_status("a", "rejected")
    assert m.row("a").status == "rejected"


def test_failures_never_discard_a_pseudo_label_or_review_work(tmp_path: Path) -> None:
    m = ReviewManifest(tmp_path / "review")
    _add(m, "a", 0.5, tmp_path)
    m.set_status("a", "rejected", user="alice")
    new = m.record_failure("b", image=tmp_path / "scans" / "b.nii.gz", error="b.nii.gz: truncated", model=MODEL)
    assert new.status == "failed" and new.pseudo_label is None and new.error == "b.nii.gz: truncated"
    kept = m.record_failure("a", image=tmp_path / "scans" / "a.nii.gz", error="out of memory", model=MODEL)
    assert kept.status == "rejected" and kept.pseudo_label is not None and kept.error == "out of memory"
    assert [e["action"] for e in kept.history] == ["pseudolabel", "rejected", "failed"]
    with pytest.raises(ManifestError, match="pseudo-labelling failed"):
        m.set_status("b", "pending")
    with pytest.raises(ManifestError, match="unknown status 'failed'"):
        m.set_status("a", "failed")
    assert m.counts() == {"pending": 0, "refined": 0, "rejected": 1, "failed": 1}
    _add(m, "b", 0.7, tmp_path)  # a later run succeeds
    assert m.row("b").status == "pending" and m.row("b").error is None
    assert list(csv.DictReader(io.StringIO(m.export_csv())))[1]["error"] == "out of memory"
