"""Code optimization: an LLM fixes a buggy, trainable sorting function from test feedback.

`sort_numbers` is a `@trace.bundle(trainable=True)` function whose body only does one
bubble-sort pass. Each step runs the unit tests through the traced function, turns the
failures (wrong outputs or exceptions) into feedback, and lets OptoPrime rewrite the code.
The optimizer compiles every suggestion, keeps the function's name and signature, and
asks for a restriction (`forbidden_modules`): the code is checked and runs under
RestrictedPython (`opto-trace[sandbox]`, in the examples group), so `os`, `subprocess` and
`shutil` are out of reach (see docs/security.md).

    uv run examples/code_optimization.py                 # the configured or embedded LLM
    uv run examples/code_optimization.py --llm gpt-4o-mini
    uv run examples/code_optimization.py --llm scripted  # offline, deterministic stand-in

The embedded model (SmolLM2-135M) is far too small to write correct code; a real model
usually fixes the function in one or two steps. `--llm scripted` replays what a good model
does, reading the prompt, so the example (and its test) run offline in a second.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from typing import Any

from opto import trace
from opto.optimizers import OptoPrime
from opto.trace import operators as ops

#: (input, expected output) pairs: the unit tests the function must pass.
TESTS: list[tuple[list[int], list[int]]] = [
    ([3, 1, 2], [1, 2, 3]),
    ([5, 4, 3, 2, 1], [1, 2, 3, 4, 5]),
    ([], []),
    ([7], [7]),
    ([2, 2, 1], [1, 2, 2]),
    ([-1, 10, 0, -5], [-5, -1, 0, 10]),
    ([1, 2, 3, 9, 8], [1, 2, 3, 8, 9]),
]


def make_sorter() -> Any:
    """A fresh trainable `sort_numbers` (its code is the parameter the LLM rewrites)."""

    @trace.bundle(trainable=True)
    def sort_numbers(numbers):
        """Return a new list with the numbers in ascending order."""
        result = list(numbers)
        for i in range(len(result) - 1):
            if result[i] > result[i + 1]:
                result[i], result[i + 1] = result[i + 1], result[i]
        return result

    return sort_numbers


def run_tests(sort_numbers: Any) -> tuple[Any, int, str]:
    """Run every test through the traced function: (output node, tests passed, feedback)."""
    outputs, failures = [], []
    for numbers, expected in TESTS:
        try:
            output = sort_numbers(numbers)
        except trace.ExecutionError as error:  # the code raised: its error is the feedback
            outputs.append(error.exception_node)
            failures.append(f"sort_numbers({numbers}) raised {error.exception_node.data}")
            continue
        outputs.append(output)
        if output.data != expected:
            failures.append(f"sort_numbers({numbers}) returned {output.data}, expected {expected}")
    passed = len(TESTS) - len(failures)
    if failures:
        feedback = f"{len(failures)} of {len(TESTS)} tests failed:\n" + "\n".join(failures)
    else:
        feedback = f"All {len(TESTS)} tests passed."
    return ops.make_list(*outputs), passed, feedback


def optimize(llm: Any, *, max_steps: int = 5, show: bool = True) -> dict[str, Any]:
    """Fix `sort_numbers` with OptoPrime until every test passes (or `max_steps` steps).

    Returns the tests passed before each step and at the end, the final code, and whether
    the final function also sorts random lists.
    """
    sort_numbers = make_sorter()
    optimizer = OptoPrime(
        sort_numbers.parameters(),
        llm=llm,
        forbidden_modules={"os", "subprocess", "shutil"},
        max_tokens=1024,  # a reply is short code plus reasoning; caps a rambling small model
    )
    history = []
    for step in range(max_steps + 1):
        output, passed, feedback = run_tests(sort_numbers)
        history.append(passed)
        if show:
            print(f"step {step}: {passed}/{len(TESTS)} tests pass")
        if passed == len(TESTS) or step == max_steps:
            break
        optimizer.zero_feedback()
        optimizer.backward(output, feedback)
        optimizer.step()
        record = optimizer.last_step
        if show and record is not None and record.rejected:
            print(f"  rejected: {record.rejected}")
    code = sort_numbers.parameter.data
    rng = random.Random(0)
    samples = [[rng.randint(-50, 50) for _ in range(rng.randint(0, 12))] for _ in range(50)]
    with trace.stop_tracing():
        generalizes = all(_safe_call(sort_numbers, s) == sorted(s) for s in samples)
    return {"passed": history, "code": code, "generalizes": generalizes, "steps": len(history) - 1}


def _safe_call(function: Any, numbers: list[int]) -> Any:
    try:
        return function(numbers).data
    except trace.ExecutionError:
        return None


# --- a deterministic stand-in for a capable LLM (--llm scripted) ------------------------------

_ATTEMPT_1 = '''def sort_numbers(numbers):
    """Return a new list with the numbers in ascending order."""
    result = list(numbers)
    for _ in range(len(result) - 1):
        for i in range(len(result) - 2):
            if result[i] > result[i + 1]:
                result[i], result[i + 1] = result[i + 1], result[i]
    return result
'''

_ATTEMPT_2 = '''def sort_numbers(numbers):
    """Return a new list with the numbers in ascending order."""
    result = list(numbers)
    for done in range(len(result)):
        for i in range(len(result) - 1 - done):
            if result[i] > result[i + 1]:
                result[i], result[i + 1] = result[i + 1], result[i]
    return result
'''


def scripted_reply(messages: list[dict[str, Any]], **options: Any) -> str:
    """What a good model answers to OptoPrime: repeat bubble-sort passes, then fix the bounds.

    It reads the prompt: the name of the code variable and its current source.
    """
    prompt = messages[-1]["content"]
    name = re.search(r"\(code\) (\w+):", prompt).group(1)
    if "range(len(result) - 2)" in prompt:
        reasoning = "The inner loop stops one element early, so the last pair is never compared."
        code = _ATTEMPT_2
    elif "tests failed" in prompt:
        reasoning = "One pass of bubble sort only moves the largest element; repeat the passes."
        code = _ATTEMPT_1
    else:
        return "TERMINATE"
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": {name: code}})


def make_llm(choice: str | None) -> Any:
    """`scripted` (offline stand-in), a model name, or None for `LLM()`'s default."""
    if choice == "scripted":
        from opto.utils.testing import ScriptedLLM

        return ScriptedLLM(scripted_reply)
    from opto.utils.llm import LLM

    return LLM() if choice is None else LLM(choice)


def main(argv: list[str] | None = None, *, llm: Any = None) -> int:
    """Run the example; `llm` overrides `--llm`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="'scripted', a model name (e.g. gpt-4o-mini), or omit")
    parser.add_argument("--steps", type=int, default=5, help="most optimizer steps")
    args = parser.parse_args(argv)
    llm = llm if llm is not None else make_llm(args.llm)
    result = optimize(llm, max_steps=args.steps)
    print(f"\nFinal code after {result['steps']} step(s):\n{result['code']}")
    print(f"Sorts 50 random lists correctly: {result['generalizes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
