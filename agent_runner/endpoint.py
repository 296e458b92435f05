"""Talk to any OpenAI-compatible endpoint, and turn its failures into end reasons.

The ``openai`` client retries 408, 409, 429, 5xx, timeouts and connection errors itself, with
exponential backoff (``max_retries`` times). What is still failing after that ends the trial:

- connection refused / DNS / TLS before any reply: ``endpoint_unreachable`` (checked once,
  without retries, before the first step, so a wrong URL ends the trial at once);
- 401 / 403: ``auth_failed``;
- 404 on the chat request: ``model_not_found`` (the endpoint does not serve that model, or
  the base URL has a wrong path);
- 429 / 5xx / timeouts / lost connections after the retries: ``endpoint_error_after_retries``;
- 400 saying the prompt exceeds the context window: the loop shrinks its memory and asks again;
- 400 / 422: options the endpoint does not know (seed, response_format, enable_thinking, ...)
  are dropped one by one when the error names them, then the request is sent again; otherwise
  ``endpoint_rejected_request``.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import openai

from agentmatrix.agent_runner.config import AgentConfig, EndReason

NO_KEY = "no-key"  # sent when no key is configured; local endpoints ignore it


class EndpointFailure(Exception):
    def __init__(self, reason: EndReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ContextTooLong(EndpointFailure):
    """The endpoint refused the prompt as longer than its context window."""


def _is_context_overflow(text: str) -> bool:
    lowered = text.lower()
    return "context" in lowered and any(word in lowered for word in ("length", "size", "exceed", "window"))


@dataclass
class Completion:
    content: str | None
    tool_calls: list[dict[str, Any]]
    reasoning_content: str | None  # separate reasoning text, where the endpoint returns it
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    dropped_options: list[str] = field(default_factory=list)
    server_timings: dict[str, Any] | None = None  # llama.cpp reports prompt and generation speed
    server_usage: bool = True  # False: the response had no usage field (the loop estimates the tokens)

    def assistant_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return str(exc.message)


class ModelClient:
    def __init__(self, config: AgentConfig, api_key: str | None) -> None:
        self.config = config
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or NO_KEY,
            max_retries=config.max_retries,
            timeout=openai.Timeout(config.request_timeout, connect=10.0),
            http_client=openai.DefaultAsyncHttpxClient(verify=tls_context()),
        )
        self.options = self._initial_options()
        self.dropped: list[str] = []

    def _initial_options(self) -> dict[str, Any]:
        cfg = self.config
        options: dict[str, Any] = {"max_tokens": cfg.max_tokens}
        if cfg.temperature is not None:
            options["temperature"] = cfg.temperature
        if cfg.seed is not None:
            options["seed"] = cfg.seed
        if cfg.frequency_penalty is not None:
            options["frequency_penalty"] = cfg.frequency_penalty
        if cfg.reasoning_effort is not None:
            options["reasoning_effort"] = cfg.reasoning_effort
        if cfg.thinking is not None:
            # Qwen3, DeepSeek and others read this through the chat template (vLLM, llama.cpp, SGLang).
            options["chat_template_kwargs"] = {"enable_thinking": cfg.thinking}
        return options

    async def close(self) -> None:
        await self.client.close()

    async def preflight(self) -> None:
        """One quick request without retries: is anything there, and does it take our key?"""
        quick = self.client.with_options(max_retries=0, timeout=openai.Timeout(15.0, connect=5.0))
        try:
            await quick.models.list()
        except openai.APIConnectionError as exc:
            raise EndpointFailure(
                EndReason.ENDPOINT_UNREACHABLE,
                f"model endpoint {self.config.base_url} is unreachable: {exc.__cause__ or exc}",
            ) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._auth_failure(exc) from exc
        except openai.APIStatusError:
            pass  # not every endpoint lists models; the chat request will tell

    def _auth_failure(self, exc: openai.APIStatusError) -> EndpointFailure:
        source = f"environment variable {self.config.api_key_env}" if self.config.api_key_env else "no key"
        return EndpointFailure(
            EndReason.AUTH_FAILED,
            f"model endpoint {self.config.base_url} refused the API key ({source}): "
            f"HTTP {exc.status_code}: {_error_text(exc)}",
        )

    def _drop_named_option(self, text: str) -> str | None:
        lowered = text.lower()
        if "max_tokens" in lowered and "max_tokens" in self.options and "max_completion_tokens" in lowered:
            self.options["max_completion_tokens"] = self.options.pop("max_tokens")
            return "max_tokens"
        candidates = [key for key in self.options if key != "max_tokens"]
        aliases = {"chat_template_kwargs": ("chat_template_kwargs", "enable_thinking")}
        for key in candidates:
            if any(name in lowered for name in aliases.get(key, (key,))):
                del self.options[key]
                return key
        return None

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        cfg = self.config
        if response_format is not None and "response_format" not in self.dropped:
            self.options.setdefault("response_format", response_format)
        dropped_now: list[str] = []
        while True:
            options = dict(self.options)
            extra_body = (
                {"chat_template_kwargs": options.pop("chat_template_kwargs")}
                if ("chat_template_kwargs" in options)
                else None
            )
            started = time.monotonic()
            try:
                response = await self.client.chat.completions.create(
                    model=cfg.model,
                    messages=messages,  # type: ignore[arg-type]
                    tools=tools if tools is not None else openai.omit,  # type: ignore[arg-type]
                    extra_body=extra_body,
                    **options,
                )
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                raise EndpointFailure(
                    EndReason.ENDPOINT_ERROR_AFTER_RETRIES,
                    f"model endpoint {cfg.base_url} failed after {cfg.max_retries} retries: "
                    f"{type(exc).__name__}: {exc.__cause__ or exc}",
                ) from exc
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise self._auth_failure(exc) from exc
            except openai.NotFoundError as exc:
                raise EndpointFailure(
                    EndReason.MODEL_NOT_FOUND,
                    f"model endpoint {cfg.base_url} does not serve model {cfg.model!r} "
                    f"(HTTP 404: {_error_text(exc)})",
                ) from exc
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                text = _error_text(exc)
                if _is_context_overflow(text):
                    raise ContextTooLong(
                        EndReason.ENDPOINT_REJECTED_REQUEST,
                        f"model endpoint {cfg.base_url} refused the prompt as too long: {text}",
                    ) from exc
                dropped = self._drop_named_option(text)
                if dropped is None:
                    raise EndpointFailure(
                        EndReason.ENDPOINT_REJECTED_REQUEST,
                        f"model endpoint {cfg.base_url} rejected the request: HTTP {exc.status_code}: {text}",
                    ) from exc
                self.dropped.append(dropped)
                dropped_now.append(dropped)
                continue
            except openai.APIStatusError as exc:  # 429, 5xx and the rest, after the client's retries
                raise EndpointFailure(
                    EndReason.ENDPOINT_ERROR_AFTER_RETRIES,
                    f"model endpoint {cfg.base_url} kept failing after {cfg.max_retries} retries: "
                    f"HTTP {exc.status_code}: {_error_text(exc)}",
                ) from exc
            return self._completion(response, time.monotonic() - started, dropped_now)

    @staticmethod
    def _completion(response: Any, seconds: float, dropped: list[str]) -> Completion:
        if not response.choices:
            raise EndpointFailure(EndReason.ENDPOINT_REJECTED_REQUEST, "model endpoint returned no choices")
        choice = response.choices[0]
        message = choice.message
        tool_calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in (message.tool_calls or [])
            if getattr(call, "function", None) is not None
        ]
        extra = message.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        usage = response.usage
        timings = (response.model_extra or {}).get("timings")
        return Completion(
            content=message.content,
            tool_calls=tool_calls,
            reasoning_content=str(reasoning) if reasoning else None,
            finish_reason=choice.finish_reason,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=seconds,
            dropped_options=dropped,
            server_timings=timings if isinstance(timings, dict) else None,
            server_usage=usage is not None,
        )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """TLS to the model endpoint with the system's trust store (and SSL_CERT_FILE/SSL_CERT_DIR),
    built once per process: reading the trust store costs tens of milliseconds, and forked runners
    inherit the context."""
    return ssl.create_default_context()


def warm_up() -> None:
    """Load what a run's requests load (the HTTP stack, the chat and models resources and the
    schemas of their requests and replies, the TLS trust store) with one preflight and one chat
    request to a local replay server: a process that forks runners calls this once, so that
    they need not."""
    from pathlib import Path

    from agentmatrix.agent_runner.replay import ReplayServer, ReplayStep
    from agentmatrix.agent_runner.scaffolds import RESPONSE_FORMAT

    tls_context()

    async def attempt() -> None:
        server = ReplayServer([ReplayStep(command="true", thought="warming up")])
        base_url = await server.astart()
        nowhere = Path("/nonexistent")
        config = AgentConfig(
            task="", base_url=base_url, model=server.model, kubeconfig=nowhere, namespace="",
            scratch_dir=nowhere, transcript_path=nowhere, max_retries=0,
        )  # fmt: skip
        client = ModelClient(config, None)
        try:
            await client.preflight()
            await client.complete([{"role": "user", "content": "warm up"}], None, RESPONSE_FORMAT)
        finally:
            await client.close()
            await server.astop()

    asyncio.run(attempt())
