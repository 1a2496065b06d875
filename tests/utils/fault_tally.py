"""The fault suite's bookkeeping: what was tried, what the service acknowledged, what the database holds."""

from __future__ import annotations

import pytest


def tally(
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    *,
    tried: int,
    answers: list[tuple[str, str]],
    rows: dict[str, list[str]],
) -> None:
    """Print the counts of one fault scenario; assert that no acknowledged frame was lost, doubled or
    answered with two ids.

    Args:
        tried: requests sent.
        answers: (frame_id, inspection id) of every request answered 200, repeats included.
        rows: frame_id -> the inspection ids the database holds, for the frames of this scenario.
    """
    ids_given: dict[str, set[str]] = {}
    for frame, inspection_id in answers:
        ids_given.setdefault(frame, set()).add(inspection_id)
    second_answers = sorted(frame for frame, ids in ids_given.items() if len(ids) > 1)
    lost = sorted(frame for frame, ids in ids_given.items() if not ids <= set(rows.get(frame, [])))
    duplicates = sum(len(ids) - 1 for ids in rows.values())
    with capsys.disabled():
        print(
            f"\n[fault] {scenario}: tried {tried}, acknowledged {len(answers)} ({len(ids_given)} frames), "
            f"rows found {sum(len(ids) for ids in rows.values())}, duplicates {duplicates}, "
            f"second answers {len(second_answers)}, lost {len(lost)}"
        )
    assert second_answers == [], {frame: ids_given[frame] for frame in second_answers}
    assert duplicates == 0, rows
    assert lost == [], {frame: (ids_given[frame], rows.get(frame)) for frame in lost}
