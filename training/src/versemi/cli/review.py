"""``versemi review``: inspect and script a review folder (the calls the Slicer review panel makes).

Examples::

    versemi review list reviews/batch1 [--json]   # cases, highest score first
    versemi review next reviews/batch1            # the next case to review
    versemi review import-labels reviews/batch1 s017 s017_fixed.nrrd   # a label edited elsewhere
    versemi review reject reviews/batch1 s023 --reason "motion artefact"
    versemi review undo reviews/batch1 s023       # undo the last decision

Every action (status, mark, revisions, restore, export-csv, cleanup): docs/REVIEW.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from versemi.cli import CliError

COMMAND = "review"
HELP = "list, inspect and script a review folder of pseudo-labels (refine / reject cases)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def with_dir(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("review_dir", type=Path, help="review folder (holds manifest.json)")
        return p

    p = with_dir("list", "list the cases, highest review score first")
    p.add_argument("--status", choices=("pending", "refined", "rejected"), help="only cases with this status")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")

    p = with_dir("status", "counts per status and the next case to review")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = with_dir("next", "the pending case with the highest score")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = with_dir("reject", "mark a case rejected (stays unlabeled for training)")
    p.add_argument("case", help="case id")
    p.add_argument("--reason", help="why (kept in the case history)")
    p.add_argument("--user", help="name recorded with the change (default: login name)")
    p.add_argument("--yes", action="store_true",
                   help="reject even a refined case (its label file stays; 'undo' brings it back)")

    p = with_dir("mark", "set a case's status to pending or rejected")
    p.add_argument("case", help="case id")
    p.add_argument("status", choices=("pending", "rejected"),
                   help="new status (use import-labels to mark a case refined)")
    p.add_argument("--reason", help="why (kept in the case history)")
    p.add_argument("--user", help="name recorded with the change (default: login name)")
    p.add_argument("--yes", action="store_true", help="reject even a refined case (see 'reject')")

    p = with_dir("undo", "undo the case's last review decision (its previous status and refined label come back)")
    p.add_argument("case", help="case id")
    p.add_argument("--user", help="name recorded with the change (default: login name)")

    p = with_dir("revisions", "list every refined label saved for a case (none is ever deleted)")
    p.add_argument("case", help="case id")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = with_dir("restore", "make a revision the case's current refined label (nothing is deleted)")
    p.add_argument("case", help="case id")
    p.add_argument("revision", type=int, help="revision number (see 'revisions')")
    p.add_argument("--user", help="name recorded with the change (default: login name)")

    p = with_dir("import-labels", "save a label file edited elsewhere as the case's refined label")
    p.add_argument("case", help="case id")
    p.add_argument("label_file", type=Path,
                   help="labelmap on the case image's grid (.nii.gz, .nrrd, .mha) or a DICOM SEG (.dcm) of its series")
    p.add_argument("--user", help="name recorded with the change (default: login name)")

    p = with_dir("export-csv", "write the manifest as CSV (review order)")
    p.add_argument("output", type=Path, nargs="?", help="CSV file (default: print to stdout)")

    p = with_dir("cleanup", "delete leftovers of interrupted saves (files the manifest does not name)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")


def _case_dict(case: Any) -> dict[str, Any]:
    return {
        "case": case.case_id,
        "status": case.status,
        "score": case.score,
        "disagreement": case.disagreement,
        "entropy": case.entropy,
        "image": str(case.image),
        "pseudo_label": str(case.pseudo_label) if case.pseudo_label else None,
        "refined_label": str(case.refined_label) if case.refined_label else None,
        "label_to_edit": str(case.label_to_edit) if case.label_to_edit else None,
        "model": case.model,
        "updated_by": case.updated_by,
        "updated_at": case.updated_at,
    }


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print_table(cases: list[Any]) -> None:
    header = ("#", "case", "status", "score", "disagr.", "entropy", "updated by", "updated at")
    rows = [
        (str(i + 1), c.case_id, c.status, _num(c.score), _num(c.disagreement), _num(c.entropy),
         c.updated_by or "-", c.updated_at or "-")
        for i, c in enumerate(cases)
    ]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _reject(session: Any, args: argparse.Namespace) -> None:
    """Reject a case; a refined one only with ``--yes`` (the message names whose work it drops)."""
    case = session.case(args.case)
    if case.status == "refined" and not getattr(args, "yes", False):
        raise CliError(
            f"{args.case} has a refined label saved by {case.refined_by or 'unknown'} at {case.refined_at or '?'} "
            f"({case.refined_label}); rejecting it stops training from using that work. The file stays and "
            f"'versemi review undo' brings it back. Pass --yes to reject anyway."
        )
    session.reject(args.case, reason=args.reason, expected_revision=case.revision)
    print(f"{args.case}: rejected")


def run(args: argparse.Namespace) -> int:
    from versemi.review import ReviewError, ReviewSession

    try:
        session = ReviewSession(args.review_dir, user=getattr(args, "user", None))
        action = args.action
        if action == "list":
            cases = session.cases(status=args.status)
            if args.json:
                print(json.dumps({"review_dir": str(session.root), "counts": session.counts(),
                                  "cases": [_case_dict(c) for c in cases]}, indent=1))
            elif cases:
                _print_table(cases)
            else:
                print("no cases" + (f" with status {args.status}" if args.status else ""))
        elif action == "status":
            counts = session.counts()
            nxt = session.next_case()
            if args.json:
                print(json.dumps({"counts": counts, "next": nxt.case_id if nxt else None}))
            else:
                shown = {s: n for s, n in counts.items() if n or s != "failed"}  # failed: only when there are some
                print(", ".join(f"{n} {s}" for s, n in shown.items()) + f" ({sum(counts.values())} cases)")
                print(f"next: {nxt.case_id} (score {_num(nxt.score)})" if nxt else "next: none (no pending case)")
        elif action == "next":
            nxt = session.next_case()
            if nxt is None:
                print("null" if args.json else "no pending case")
                return 1
            print(json.dumps(_case_dict(nxt)) if args.json else
                  f"{nxt.case_id}  score {_num(nxt.score)}  image {nxt.image}  label {nxt.label_to_edit}")
        elif action == "reject" or (action == "mark" and args.status == "rejected"):
            _reject(session, args)
        elif action == "mark":  # pending: reopen a rejected or refined case
            session.reopen(args.case, reason=args.reason)
            print(f"{args.case}: pending")
        elif action == "undo":
            case = session.undo(args.case)
            print(f"{args.case}: {case.status}" + (f" ({case.refined_label})" if case.refined_label else ""))
        elif action == "revisions":
            revisions = session.revisions(args.case)
            if args.json:
                print(json.dumps([{"revision": r.number, "path": str(r.path), "action": r.action, "by": r.by,
                                   "at": r.at, "current": r.current, "exists": r.exists} for r in revisions], indent=1))
            elif not revisions:
                print(f"{args.case}: no refined label saved yet")
            for r in [] if args.json else revisions:
                note = " (current)" if r.current else (" (kept after a conflict)" if r.action == "conflict" else "")
                gone = "" if r.exists else " [file missing]"
                print(f"r{r.number}  {r.by or '-'}  {r.at or '-'}  {r.path}{note}{gone}")
        elif action == "restore":
            case = session.restore(args.case, args.revision)
            print(f"{args.case}: refined -> {case.refined_label} (revision {args.revision})")
        elif action == "import-labels":
            case = session.save_refined(args.case, args.label_file)
            print(f"{args.case}: refined -> {case.refined_label}")
        elif action == "export-csv":
            text = session.manifest.export_csv(args.output)
            if args.output is None:
                sys.stdout.write(text)
            else:
                print(f"wrote {args.output}")
        elif action == "cleanup":
            removed = session.cleanup(dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            for path in removed:
                print(f"{verb} {path}")
            print(f"{len(removed)} file(s) " + ("would be deleted" if args.dry_run else "deleted"))
    except ReviewError as exc:
        raise CliError(str(exc)) from exc
    return 0
