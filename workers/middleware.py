"""Task observability: run counts, failures and durations, and the request id a task serves.

The id travels as the `request_id` label: set when a request enqueues the task (from the
request's context variable), put back into the context variable when the task runs, so the
task's log lines carry the id of the request that caused them.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from server import metrics
from server.observability import current_request_id, request_id_var, task_name_var

_started: ContextVar[float | None] = ContextVar("task_started", default=None)


class TaskObservability(TaskiqMiddleware):
    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        request_id = current_request_id()
        if request_id is not None and "request_id" not in message.labels:
            message.labels["request_id"] = request_id
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        # The receiver runs pre_execute, the task and post_execute in one coroutine of their
        # own, so these variables belong to this task run only.
        request_id = message.labels.get("request_id")
        request_id_var.set(str(request_id) if request_id else None)
        task_name_var.set(message.task_name)
        _started.set(time.perf_counter())
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        started = _started.get()
        elapsed = time.perf_counter() - started if started is not None else result.execution_time
        metrics.TASK_RUNS.labels(message.task_name, "failure" if result.is_err else "success").inc()
        metrics.TASK_DURATION.labels(message.task_name).observe(elapsed)
