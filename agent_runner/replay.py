"""A deterministic OpenAI-compatible model: it answers with a scripted list of steps.

A script is a list of items; each request to ``/v1/chat/completions`` takes the next one:

- ``{command: "kubectl ...", thought: "..."}``: a step that runs the command;
- an item without ``command`` (``{thought: "done"}`` or ``{}``): the agent finishes;
- ``{raw: "text"}``: the reply's content is that text verbatim (malformed replies);
- ``{status: 503, error: "..."}``: an HTTP error with that status (and message) instead of a
  reply, to play endpoint failures.

When the script is used up, every further request finishes. The reply takes the shape the
request asks for: tool calls when the request offers tools, a five-step JSON object when it
asks for a JSON ``response_format``, ReAct text otherwise. The server can demand an API key
(401 otherwise) and answers 404 ``model_not_found`` for any model but its own. One server
plays one script once: start one per agent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from agentmatrix.agent_runner import scaffolds

DEFAULT_MODEL = "replay"
SCRIPT_ENDED = "The script has no more steps."


@dataclass(frozen=True)
class ReplayStep:
    command: str | None = None
    thought: str | None = None
    raw: str | None = None
    status: int | None = None
    error: str | None = None  # the error message sent with `status`


_FIELDS = {"command", "thought", "raw", "status", "error"}


def parse_steps(items: Any) -> list[ReplayStep]:
    """Validate a script (a list of mappings); raise ValueError naming the bad item."""
    if not isinstance(items, list):
        raise ValueError("a replay script is a list of steps")
    steps: list[ReplayStep] = []
    for index, item in enumerate(items, start=1):
        if item is None:
            item = {}
        if not isinstance(item, dict):
            raise ValueError(f"step {index}: expected a mapping, got {type(item).__name__}")
        unknown = set(item) - _FIELDS
        if unknown:
            raise ValueError(f"step {index}: unknown fields {sorted(unknown)} (allowed: {sorted(_FIELDS)})")
        for key in ("command", "thought", "raw", "error"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ValueError(f"step {index}: `{key}` must be a string")
        status = item.get("status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError(f"step {index}: `status` must be an HTTP error code (400-599)")
        steps.append(
            ReplayStep(item.get("command"), item.get("thought"), item.get("raw"), status, item.get("error"))
        )
    return steps


def load_script(path: Path) -> list[ReplayStep]:
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "steps" in data:
        data = data["steps"]
    return parse_steps(data)


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": code}}, status=status)


class ReplayServer:
    def __init__(
        self,
        steps: list[ReplayStep],
        *,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        report_usage: bool = True,
    ) -> None:
        self.steps = list(steps)
        self.report_usage = report_usage  # False plays a server whose replies carry no usage field
        self.model = model
        self.api_key = api_key
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []  # bodies of the chat requests received
        self._next = 0
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        return app

    # -- serving on the caller's event loop --------------------------------------------------

    async def astart(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
        return self.base_url

    async def astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- serving on a thread of its own (for synchronous callers) ----------------------------

    def start(self) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.astop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="replay-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.base_url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None
            self._loop = None

    def __enter__(self) -> ReplayServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- handlers ----------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "agentmatrix"}
        return web.json_response({"object": "list", "data": [model]})

    async def _chat(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not JSON.", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "The request body is not a JSON object.", "invalid_json")
        if body.get("model") != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "model_not_found")
        if body.get("stream"):
            return _error(400, "stream is not supported by the replay server.", "unsupported_parameter")
        self.requests.append(body)
        step = self.steps[self._next] if self._next < len(self.steps) else ReplayStep(thought=SCRIPT_ENDED)
        self._next += 1
        if step.status is not None:
            error = step.error or f"scripted HTTP {step.status}"
            return _error(step.status, error, "scripted_error", "server_error")
        message = self._message(step, body)
        prompt_text = json.dumps(body.get("messages", []))
        completion_text = json.dumps(message)
        prompt_tokens, completion_tokens = _estimate_tokens(prompt_text), _estimate_tokens(completion_text)
        reply: dict[str, Any] = {
            "id": f"chatcmpl-replay-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
        }
        if self.report_usage:
            reply["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return web.json_response(reply)

    @staticmethod
    def _message(step: ReplayStep, body: dict[str, Any]) -> dict[str, Any]:
        if step.raw is not None:
            return {"role": "assistant", "content": step.raw}
        thought = step.thought or ("Running the next command." if step.command else "The task is done.")
        if body.get("tools"):
            name, arguments = (
                (scaffolds.TOOL_RUN, {"command": step.command})
                if step.command is not None
                else (scaffolds.TOOL_FINISH, {"summary": thought})
            )
            call = {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            return {"role": "assistant", "content": thought, "tool_calls": [call]}
        if isinstance(body.get("response_format"), dict):
            action = (
                {"type": "command", "command": step.command}
                if step.command is not None
                else {"type": "finish", "summary": thought}
            )
            reply = {"explanation": thought, "gaps": "", "findings": "", "plan": "", "action": action}
            return {"role": "assistant", "content": json.dumps(reply)}
        if step.command is not None:
            return {"role": "assistant", "content": f"Thought: {thought}\nCommand: {step.command}"}
        return {"role": "assistant", "content": f"Thought: {thought}\nFinish: {thought}"}
