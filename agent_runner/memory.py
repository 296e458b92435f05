"""The agent's memory: every earlier exchange, trimmed to fit the model's context budget.

The system message and the task are always sent. Earlier steps are sent newest first for as
long as they fit; the steps that do not fit are replaced by a one-line-per-step list of the
commands they ran and their exit codes, so the model still knows what it has done. Sizes are
estimated at three characters a token (YAML and JSON output tokenize densely); an endpoint
that still finds the prompt too long makes the loop halve the budget and ask again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
_OMITTED_LIST_MAX_LINES = 40


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    chars = sum(len(json.dumps(m, ensure_ascii=False)) for m in messages)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(messages)


@dataclass
class Exchange:
    """One earlier step: what the model said, and what it was told back."""

    assistant: dict[str, Any]
    replies: list[dict[str, Any]]  # user messages, or tool messages answering each tool call
    summary: str  # one line for the omitted-steps list

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [self.assistant, *self.replies]


@dataclass
class Memory:
    system: str
    task: str
    budget_tokens: int
    exchanges: list[Exchange] = field(default_factory=list)

    def add(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    def messages(self, prompt: str | None = None) -> list[dict[str, Any]]:
        """The messages for the next request; `prompt` is a last user message, if any."""
        tail = [{"role": "user", "content": prompt}] if prompt else []
        kept = self._newest_that_fit(estimate_tokens(self._head(0) + tail))
        while True:
            messages = (
                self._head(len(self.exchanges) - len(kept)) + [m for e in kept for m in e.messages] + tail
            )
            if len(kept) <= 1 or estimate_tokens(messages) <= self.budget_tokens:
                return messages
            kept = kept[1:]  # the list of omitted steps grew: make room for it

    def _newest_that_fit(self, used: int) -> list[Exchange]:
        kept: list[Exchange] = []
        for exchange in reversed(self.exchanges):
            cost = estimate_tokens(exchange.messages)
            if used + cost > self.budget_tokens:
                if kept:
                    break
                exchange = _shrunk(exchange, self.budget_tokens - used)
                cost = estimate_tokens(exchange.messages)
            kept.append(exchange)
            used += cost
        kept.reverse()
        return kept

    def _head(self, omitted_count: int) -> list[dict[str, Any]]:
        task = self.task
        if omitted_count:
            omitted = self.exchanges[:omitted_count]
            lines = [e.summary for e in omitted][-_OMITTED_LIST_MAX_LINES:]
            note = f"Earlier steps, not shown in full to fit the context ({len(omitted)}):\n"
            if len(omitted) > len(lines):
                note += f"... {len(omitted) - len(lines)} older steps\n"
            task = f"{task}\n\n{note}" + "\n".join(lines)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": task}]


def _shrunk(exchange: Exchange, budget_tokens: int) -> Exchange:
    """The newest step alone is over budget: cut the middle of its long texts."""
    room_chars = max(budget_tokens, 200) * CHARS_PER_TOKEN // max(1, len(exchange.messages))
    return Exchange(
        assistant=_cut_content(exchange.assistant, room_chars),
        replies=[_cut_content(m, room_chars) for m in exchange.replies],
        summary=exchange.summary,
    )


def _cut_content(message: dict[str, Any], room_chars: int) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, str) or len(content) <= room_chars:
        return message
    half = room_chars // 2
    cut = len(content) - 2 * half
    return {**message, "content": f"{content[:half]}\n[... {cut} characters cut ...]\n{content[-half:]}"}
