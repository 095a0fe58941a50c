"""An in-process fake model for unit tests of turns and handlers: queue answers, inspect what was asked."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from llm import Completion, LLMError, Request


class FakeModel:
    """Stands in for `llm.LLMClient`: answers from a queue (an error in the queue is raised)."""

    def __init__(self) -> None:
        self.queue: deque[Completion | LLMError] = deque()
        self.requests: list[Request] = []

    def answer(self, *answers: Completion | LLMError | str) -> None:
        self.queue.extend(Completion(a) if isinstance(a, str) else a for a in answers)

    def complete(self, request: Request, on_delta: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None, **_: object) -> Completion:
        self.requests.append(request)
        reply = self.queue.popleft() if self.queue else Completion(f"echo: {request.messages[-1]['content']}")
        if isinstance(reply, LLMError):
            raise reply
        if on_delta is not None and reply.text:
            on_delta(reply.text)
        return reply

    def roles(self, index: int = -1) -> list[str]:
        return [str(m["role"]) for m in self.requests[index].messages]
