"""Finishing async requests in batches: each one's object on S3, its notification, then one commit.

The dispatcher hands completions over as they come; a batch is written on a worker thread in one
go, so a busy queue pays one thread hop and one queue commit for many requests. Order within a
request is what makes "exactly one outcome" and "no missed notification" hold across a crash:
the object is written first, then the notification is published, then the queue records the
outcome. A crash before the commit leaves the request ``running``; on restart the dispatcher finds
the object by the request id in its metadata and publishes again rather than miss it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from coldbrew.async_inference.notifications import Notifier, message
from coldbrew.async_inference.objects import NewObject, Objects
from coldbrew.async_inference.queue import AsyncQueue, Outcome
from coldbrew.async_inference.requests import AsyncRequest, location

log = logging.getLogger("coldbrew.async")


@dataclass(frozen=True)
class Completion:
    request: AsyncRequest
    succeeded: bool
    body: bytes | None
    """What to write: the result, or the failure's body; None when an earlier run wrote it."""
    content_type: str
    reason: str | None = None
    """Why it failed (a failure's notification and the queue's record)."""

    @classmethod
    def result(cls, request: AsyncRequest, body: bytes, content_type: str) -> Completion:
        return cls(request, True, body, content_type)

    @classmethod
    def failure(
        cls, request: AsyncRequest, reason: str, body: bytes | None = None, content_type: str | None = None
    ) -> Completion:
        """The model's own error response as the failure object, else coldbrew's reason as a JSON
        error body (what clients' JSON deserializers expect, like the worker's own errors)."""
        if body is None:
            body, content_type = json.dumps({"message": reason}).encode(), "application/json"
        return cls(request, False, body, content_type or "application/octet-stream", reason)

    @classmethod
    def found(cls, request: AsyncRequest, succeeded: bool) -> Completion:
        return cls(request, succeeded, None, "", None if succeeded else "See the FailureLocation.")


class OutcomeWriter:
    def __init__(
        self,
        queue: AsyncQueue,
        objects: Objects,
        notifier: Notifier,
        region: str,
        clock: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.objects = objects
        self.notifier = notifier
        self.region = region
        self.clock = clock

    def write(self, completions: list[Completion]) -> list[None]:
        """Blocking: the batch's objects (one index commit), its notifications, then its outcomes
        (one queue commit)."""
        done = self._store(completions)
        outcomes = []
        for original, completion in zip(completions, done, strict=True):
            self._notify(completion)
            detail = "found after a restart" if original.body is None else completion.reason
            outcomes.append(
                Outcome(completion.request.id, completion.succeeded, (detail or "")[:1000] or None)
            )
        self.queue.update(outcomes, self.clock())
        return [None] * len(completions)

    def _store(self, completions: list[Completion]) -> list[Completion]:
        """Write each completion's object; a result that cannot be written becomes a failure."""
        pending = [(i, c) for i, c in enumerate(completions) if c.body is not None]
        done = list(completions)
        for _ in range(2):  # results, then the failures of results that could not be written
            if not pending:
                break
            errors = self.objects.write_many([self._object(c) for _, c in pending])
            retry = []
            for (i, completion), error in zip(pending, errors, strict=True):
                if error is None:
                    continue
                if completion.succeeded:
                    reason = f"The model answered, but its result could not be written: {error}"
                    done[i] = Completion.failure(completion.request, reason)
                    retry.append((i, done[i]))
                else:
                    log.error("async: request %s failed (%s); its failure could not be written: %s",
                              completion.request.id, completion.reason, error)  # fmt: skip
            pending = retry
        return done

    @staticmethod
    def _object(completion: Completion) -> NewObject:
        request = completion.request
        url = request.output_location if completion.succeeded else request.failure_location
        assert completion.body is not None
        return location(url), completion.body, completion.content_type, request.id

    def _notify(self, completion: Completion) -> None:
        request = completion.request
        topic = request.success_topic if completion.succeeded else request.error_topic
        if not topic:
            return
        body = message(
            request,
            succeeded=completion.succeeded,
            region=self.region,
            now=self.clock(),
            response_content_type=completion.content_type or None,
            response=completion.body,
            failure_reason=completion.reason,
        )
        self.notifier.publish(topic, body)
