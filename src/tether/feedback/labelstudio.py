"""Label Studio interchange: export items + labels as Label Studio tasks, import a Label Studio JSON export.

Use this labeling config in Label Studio (pairwise choice over two responses)::

    <View>
      <Text name="prompt" value="$prompt"/>
      <Text name="response_a" value="$response_a"/>
      <Text name="response_b" value="$response_b"/>
      <Choices name="preference" toName="prompt" choice="single">
        <Choice value="A"/><Choice value="B"/><Choice value="Tie"/><Choice value="Both bad"/>
      </Choices>
    </View>

Imported items keep ``data.item_id`` when it is free; an item the store already has (the same
prompt and responses) is not added twice, and its labels are attached to the stored item.
"""

from __future__ import annotations

import math
from typing import Any

from tether.data import DataError
from tether.feedback.store import MAX_SECONDS, Item, StoredLabel

CHOICES = {"A": 0, "B": 1}
VALUES = ("A", "B", "Tie", "Both bad")


def to_labelstudio(items: list[Item], labels: list[StoredLabel]) -> list[dict[str, Any]]:
    """Pairwise items as Label Studio tasks, each with its labels as annotations."""
    by_item: dict[str, list[StoredLabel]] = {}
    for lab in labels:
        by_item.setdefault(lab.item_id, []).append(lab)
    tasks = []
    for n, item in enumerate(items, start=1):
        if len(item.responses) != 2:
            continue
        annotations = []
        for lab in by_item.get(item.item_id, []):
            if lab.skipped:
                continue
            value = "Both bad" if lab.both_bad else "Tie" if lab.tie or lab.choice is None else "AB"[lab.choice]
            annotations.append({"completed_by": lab.annotator, "lead_time": lab.seconds,
                                "result": [{"from_name": "preference", "to_name": "prompt", "type": "choices",
                                            "value": {"choices": [value]}}]})
        tasks.append({"id": n, "data": {"item_id": item.item_id, "prompt": item.prompt,
                                        "response_a": item.responses[0], "response_b": item.responses[1]},
                      "annotations": annotations})
    return tasks


def _annotator(completed_by: Any) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "unknown")
    return str(completed_by)


def _lead_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"lead_time must be a number of seconds >= 0, got {value!r}")
    return float(value) if value <= MAX_SECONDS else None  # longer than a day: not a measured judgement


def _label(annotation: Any, item_id: str, where: str, problems: list[str]) -> StoredLabel | None:
    """One Label Studio annotation as a label, or None (with a problem) when it is not one choice of VALUES."""
    results = annotation.get("result", []) if isinstance(annotation, dict) else None
    if not isinstance(results, list):
        problems.append(f"{where}, field 'annotations': expected objects with a 'result' list")
        return None
    choices = [r.get("value", {}).get("choices", []) for r in results
               if isinstance(r, dict) and r.get("type") == "choices" and isinstance(r.get("value"), dict)]
    flat = [c for group in choices if isinstance(group, list) for c in group]
    if len(flat) != 1 or flat[0] not in VALUES:
        problems.append(f"{where}, field 'annotations': expected one choice of A, B, Tie or Both bad, got {flat}")
        return None
    try:
        seconds = _lead_time(annotation.get("lead_time"))
    except ValueError as exc:
        problems.append(f"{where}, field 'lead_time': {exc}")
        return None
    choice = CHOICES.get(flat[0])
    return StoredLabel(_annotator(annotation.get("completed_by")), item_id, choice, tie=flat[0] == "Tie",
                       both_bad=flat[0] == "Both bad", seconds=seconds)


def from_labelstudio(tasks: Any, source: str) -> tuple[list[Item], list[StoredLabel]]:
    """Parse a Label Studio JSON export (list of tasks); problems name the task and field."""
    if not isinstance(tasks, list):
        raise DataError(f"{source}: expected a Label Studio JSON export (a list of tasks)")
    items, labels, problems = [], [], []
    for n, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("prompt", "response_a",
                                                                                        "response_b")):
            problems.append(f"{source} task {n}, field 'data': needs prompt, response_a and response_b text")
            continue
        item_id = str(data.get("item_id") or f"ls-{task.get('id', n)}")
        items.append(Item(item_id, data["prompt"], [data["response_a"], data["response_b"]], source="label-studio"))
        for annotation in task.get("annotations") or []:
            label = _label(annotation, item_id, f"{source} task {n}", problems)
            if label is not None:
                labels.append(label)
    if problems:
        raise DataError(problems)
    return items, labels
