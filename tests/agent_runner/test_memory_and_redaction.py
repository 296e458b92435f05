"""Memory stays within its budget and keeps the newest steps; secrets never get through."""

from __future__ import annotations

from pathlib import Path

from agentmatrix.agent_runner.memory import Exchange, Memory, estimate_tokens
from agentmatrix.agent_runner.redaction import REDACTED, Redactor, kubeconfig_secrets


def exchange(index: int, output_chars: int) -> Exchange:
    return Exchange(
        {"role": "assistant", "content": f"Command: echo {index}"},
        [{"role": "user", "content": f"output {index}: " + "x" * output_chars}],
        f"step {index}: `echo {index}` -> exit 0",
    )


def test_everything_is_sent_while_it_fits() -> None:
    memory = Memory("system", "task", budget_tokens=10_000)
    for index in range(3):
        memory.add(exchange(index, 10))
    messages = memory.messages()
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[1]["content"] == "task"


def test_oldest_steps_are_dropped_and_listed() -> None:
    memory = Memory("system", "task", budget_tokens=1_000)
    for index in range(20):
        memory.add(exchange(index, 800))
    messages = memory.messages()
    assert estimate_tokens(messages) <= 1_000
    assert messages[0] == {"role": "system", "content": "system"}
    assert messages[-2]["content"] == "Command: echo 19", "the newest step is always there"
    assert "Command: echo 0" not in str(messages[2:])
    note = messages[1]["content"]
    assert note.startswith("task\n\nEarlier steps, not shown in full")
    assert "step 0: `echo 0` -> exit 0" in note


def test_a_single_huge_step_is_cut_in_the_middle() -> None:
    memory = Memory("system", "task", budget_tokens=600)
    memory.add(exchange(1, 50_000))
    messages = memory.messages()
    assert estimate_tokens(messages) <= 700
    assert "characters cut" in messages[-1]["content"]
    assert messages[-1]["content"].startswith("output 1: ")


def test_redactor_hides_known_secrets_and_token_shapes() -> None:
    redactor = Redactor(["my-api-key-value"])
    text = (
        "key my-api-key-value\n"
        "Authorization: Bearer abcdefghijklmnop\n"
        "token: eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ\n"
        '{"api_key": "sk-proj-abcdefghijklmnopqrstuv"}\n'
        "client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ==\n"
        "replicas: 4, prompt_tokens: 1234567890\n"
    )
    out = redactor.text(text)
    for secret in ("my-api-key-value", "abcdefghijklmnop", "eyJhbGci", "sk-proj", "LS0tLS1CRUdJTi"):
        assert secret not in out
    assert out.count(REDACTED) == 5
    assert "replicas: 4, prompt_tokens: 1234567890" in out
    assert redactor.value({"a": ["x my-api-key-value"], "n": 3}) == {"a": [f"x {REDACTED}"], "n": 3}


def test_kubeconfig_secrets(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "users:\n- name: a\n  user:\n    token: tok-123456789\n"
        "- name: b\n  user:\n    client-key-data: KEYDATA99\n"
    )
    assert kubeconfig_secrets(path) == ["tok-123456789", "KEYDATA99"]
    assert kubeconfig_secrets(tmp_path / "missing") == []
