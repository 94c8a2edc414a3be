"""End to end: a scripted LLM that reads OptoPrime's prompt drives a traced program to its
target (code fix first, then numbers), also as independent optimizers in parallel threads."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
from opto import trace
from opto.optimizers import OptoPrime
from opto.trace.testing import one_step
from opto.utils.testing import ScriptedLLM

TARGET = 20.5
X = 3


def section(prompt: str, header: str) -> str:
    instance = prompt.rsplit("Now you see problem instance:", 1)[-1]
    match = re.search(re.escape(header) + r"\n(.*?)(?:\n\n#\w+\n|\n=====)", instance, re.DOTALL)
    assert match is not None, f"{header} missing from the prompt"
    return match.group(1)


def variables(prompt: str) -> dict[str, str]:
    """``name -> value text`` from the #Variables lines ``(type) name=value`` and
    ``(code) name:source`` (code continues over the following lines)."""
    found: dict[str, str] = {}
    current = None
    for line in section(prompt, "#Variables").splitlines():
        match = re.match(r"\((\w+)\) (\w+)([=:])(.*)", line)
        if match:
            current = match.group(2)
            found[current] = match.group(4)
        elif current is not None:
            found[current] += "\n" + line
    return found


def reader_llm(messages: list[dict[str, str]], **options: Any) -> str:
    """Plays the LLM: reads #Feedback and #Variables, answers in several JSON styles."""
    prompt = messages[1]["content"]
    feedback = section(prompt, "#Feedback")
    values = variables(prompt)
    assert set(options["response_format"]["json_schema"]["schema"]["properties"]["suggestion"]["properties"]) == set(values)  # fmt: skip
    if feedback == "correct":
        return "TERMINATE"
    suggestion: dict[str, Any] = {}
    code_name = next(name for name in values if "__code" in name)
    if "wrong sign" in feedback:
        suggestion[code_name] = "def activation(v):\n    return v\n"
        body = json.dumps({"reasoning": "the sign is flipped", "suggestion": suggestion})
        return f"The activation negates its input.\n```json\n{body}\n```"
    output, target = map(float, re.findall(r"-?\d+(?:\.\d+)?", feedback)[:2])
    a_name = next(name for name in values if name.startswith("a"))
    b_name = next(name for name in values if name.startswith("b"))
    a, b = int(values[a_name]), float(values[b_name])
    error = target - output
    new_a = a + int(error // X)
    new_b = b + (error - (new_a - a) * X)
    # single quotes and a trailing comma: tolerated by the parser
    return (
        f"{{'reasoning': 'adjust', 'suggestion': {{'{a_name}': '{new_a}', '{b_name}': {new_b},}},}}"
    )


def build_program():
    a = trace.node(1, name="a", trainable=True, description="an integer slope")
    b = trace.node(0.0, name="b", trainable=True, description="an offset")

    @trace.bundle(trainable=True)
    def activation(v):
        """Post-process the linear value."""
        return -v

    def run(x: Any) -> Any:
        return activation(a * x + b)

    return a, b, activation, run


def guide(value: float) -> str:
    if value == TARGET:
        return "correct"
    if value < 0 < TARGET:
        return f"The output {value} has the wrong sign; the target is {TARGET}."
    return f"The output is {value} but the target is {TARGET}."


def optimize(llm: Any, max_steps: int = 6) -> tuple[list[float], Any, Any, OptoPrime]:
    a, b, activation, run = build_program()
    optimizer = OptoPrime([a, b, activation.parameter], llm=llm, memory_size=2)
    outputs = []
    for _ in range(max_steps):
        output = run(trace.node(X, name="x"))
        outputs.append(output.data)
        one_step(optimizer, output, guide)
        if optimizer.last_step.terminated:
            break
    return outputs, a, b, optimizer


@pytest.mark.usefixtures("fresh_graph")
def test_scripted_llm_reading_the_prompt_reaches_the_target():
    llm = ScriptedLLM(reader_llm)
    outputs, a, b, optimizer = optimize(llm)
    assert outputs == [-3.0, 3.0, TARGET]
    assert a.data * X + b.data == TARGET
    assert type(a.data) is int and type(b.data) is float
    records = optimizer.steps
    assert list(records[0].applied) == ["__code0"]
    assert set(records[1].applied) == {"a0", "b0"}
    assert records[2].terminated and records[2].applied == {}
    assert all(r.parse_error is None and r.rejected == {} for r in records)
    assert llm.calls == 3


def test_independent_optimizers_run_in_parallel_threads():
    llm = ScriptedLLM(reader_llm)
    results: list[Any] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            outputs, a, b, _ = optimize(llm)
            results.append((outputs[-1], type(a.data), type(b.data)))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [(TARGET, int, float)] * 4
    assert llm.calls == 12
