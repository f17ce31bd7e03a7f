"""Transform jobs' durable state: their rows in the control store and each job's plan.

A job's plan is written once, when the job first starts; each object is marked done in the same
commit that follows the write of its output, so a job resumed after a crash processes only what was
not finished (an output written just before a crash is written again, never left half-done: S3
objects appear whole).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from coldbrew.control.store import Store, loads
from coldbrew.serving.targets import S3Url
from coldbrew.transform.plan import PlannedObject

IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
ACTIVE = (IN_PROGRESS, STOPPING)
MAX_REASON = 1024


@dataclass(frozen=True)
class JobRow:
    name: str
    status: str
    request: dict[str, Any]
    model: dict[str, Any]
    """The model as it was when the job was created (deleting the model later does not change it)."""
    runs: int


@dataclass(frozen=True)
class PlanRow:
    planned: PlannedObject
    done: bool


class JobStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def job(self, name: str) -> JobRow | None:
        row = self.store.query_one("SELECT * FROM transform_jobs WHERE name_key = ?", [name.lower()])
        if row is None:
            return None
        spec = loads(row["spec"])
        return JobRow(row["name"], row["status"], spec["Request"], spec["Model"], row["runs"])

    def active(self) -> list[str]:
        rows = self.store.query(
            "SELECT name FROM transform_jobs WHERE status IN (?, ?) ORDER BY created_at", list(ACTIVE)
        )
        return [r["name"] for r in rows]

    def started(self, name: str) -> None:
        """A run begins: the first sets TransformStartTime."""
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE transform_jobs SET runs = runs + 1, started_at = coalesce(started_at, ?), "
                "modified_at = ? WHERE name_key = ?",
                [now, now, name.lower()],
            )

    def finish(self, name: str, status: str, reason: str | None = None) -> None:
        """The job ends (Completed, Failed or Stopped) unless it already has."""
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE transform_jobs SET status = ?, failure_reason = ?, ended_at = ?, modified_at = ? "
                "WHERE name_key = ? AND status IN (?, ?)",
                [status, (reason or "")[:MAX_REASON] or None, now, now, name.lower(), *ACTIVE],
            )

    def request_stop(self, name: str) -> bool:
        """InProgress -> Stopping; False if the job was not in progress."""
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "UPDATE transform_jobs SET status = ?, stop_requested = 1, modified_at = ? "
                "WHERE name_key = ? AND status = ?",
                [STOPPING, time.time(), name.lower(), IN_PROGRESS],
            )
            return cursor.rowcount > 0

    # --- the plan ---------------------------------------------------------------------------------

    def plan(self, name: str) -> list[PlanRow] | None:
        rows = self.store.query(
            "SELECT position, input_key, output_key, done FROM transform_objects WHERE job = ? "
            "ORDER BY position",
            [name.lower()],
        )
        if not rows:
            return None
        return [
            PlanRow(
                PlannedObject(r["position"], _url(r["input_key"]), _url(r["output_key"])), bool(r["done"])
            )
            for r in rows
        ]

    def save_plan(self, name: str, objects: list[PlannedObject]) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM transform_objects WHERE job = ?", [name.lower()])
            conn.executemany(
                "INSERT INTO transform_objects (job, position, input_key, output_key) VALUES (?, ?, ?, ?)",
                [(name.lower(), o.position, str(o.input), str(o.output)) for o in objects],
            )

    def mark_done(self, name: str, position: int, records: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE transform_objects SET done = 1, records = ? WHERE job = ? AND position = ?",
                [records, name.lower(), position],
            )


def _url(text: str) -> S3Url:
    url = S3Url.parse(text)
    assert url is not None, text
    return url
