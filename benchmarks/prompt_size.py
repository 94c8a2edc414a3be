"""Prompt size of one OptoPrime step: opto vs trace-opt, on the same traced program.

The program has 20 trainable integer parameters (each with a description) combined by 20
traced calls; one backward with a feedback sentence, then one ``OptoPrime.step()`` whose
prompt is captured by a stand-in LLM (no network). The size is counted in tokens with
tiktoken's ``cl100k_base`` when that encoding is available offline, else in characters.

    .venv/bin/python benchmarks/prompt_size.py --reference-python /tmp/traceopt/bin/python

With ``--local-model N`` the embedded model (opto-utils[local]) also answers each side's
prompt N times, with the response format that side asks for (ours: the JSON schema of the
variables; trace-opt: ``json_object``), and each side's own parser and converter decide
whether a reply yields a valid update (a new value for at least one variable, nothing
rejected). trace-opt's replies are judged in trace-opt's interpreter.

The reference side runs this same file in trace-opt's interpreter (``--side``), using only
API both libraries share: ``trace.node(..., description=...)``, operators,
``OptoPrime(params, llm=callable)``, ``optimizer.backward``/``step``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PARAMETERS = 20
CALLS = 20
REFERENCE_VENV = Path(__file__).resolve().parent / "_trace_opt_venv" / "bin" / "python"


def _reply(messages: list[dict[str, str]], captured: list[list[dict[str, str]]]) -> Any:
    captured.append(messages)
    content = json.dumps({"reasoning": "", "answer": "", "suggestion": {}})
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=content))])


def build(llm: Any, **options: Any) -> Any:
    """The 20-parameter/20-call program, backpropagated, and an OptoPrime over it."""
    from opto import trace
    from opto.optimizers import OptoPrime

    params = [
        trace.node(i, name=f"w{i}", trainable=True, description=f"weight {i}, an integer >= 0")
        for i in range(PARAMETERS)
    ]
    total = params[0] * 1
    for p in params[1:]:
        total = total + p
    assert CALLS == PARAMETERS  # one multiply, then one add per further parameter
    optimizer = OptoPrime(params, llm=llm, **options)
    optimizer.zero_feedback()
    optimizer.backward(total, "The total should be 100; it is too small.")
    return optimizer


def capture_prompt() -> dict[str, Any]:
    """Run one step of the program and return its prompt."""
    captured: list[list[dict[str, str]]] = []

    def llm(messages: list[dict[str, str]], **options: Any) -> Any:
        return _reply(messages, captured)

    build(llm).step()
    messages = captured[-1]
    return {"system": messages[0]["content"], "user": messages[1]["content"]}


def judge_replies(replies: list[str]) -> list[bool]:
    """Whether each reply yields a valid update, by this interpreter's OptoPrime."""
    optimizer = build(lambda messages, **options: _reply(messages, []))
    valid = []
    for reply in replies:
        try:
            update = optimizer.construct_update_dict(optimizer.extract_llm_suggestion(reply))
        except Exception:
            update = {}
        valid.append(bool(update))
    return valid


def ours_with_local_model(samples: int, max_tokens: int) -> tuple[list[bool], list[str]]:
    """Our OptoPrime proposing ``samples`` times with the embedded model."""
    from opto.utils.llm import LocalLLM

    llm = LocalLLM(cache=False, temperature=0.8)
    optimizer = build(llm, max_tokens=max_tokens)
    valid, replies = [], []
    for seed in range(samples):
        llm.options["seed"] = seed
        update = optimizer.step(bypassing=True)
        record = optimizer.last_step
        replies.append(record.raw_reply or "")
        valid.append(bool(update) and not record.rejected and record.parse_error is None)
    return valid, replies


def reference_replies(prompt: dict[str, str], samples: int, max_tokens: int) -> list[str]:
    """The embedded model's replies to trace-opt's prompt, as trace-opt asks (json_object)."""
    from opto.utils.llm import LocalLLM

    llm = LocalLLM(cache=False, temperature=0.8)
    messages = [
        {"role": "system", "content": prompt["system"]},
        {"role": "user", "content": prompt["user"]},
    ]
    return [
        llm(
            messages=messages,
            response_format={"type": "json_object"},
            max_tokens=max_tokens,
            seed=seed,
        ).content
        or ""
        for seed in range(samples)
    ]


def _count(text: str) -> tuple[int, str]:
    try:
        import tiktoken

        return len(tiktoken.get_encoding("cl100k_base").encode(text)), "tokens"
    except Exception:  # tiktoken missing, or its encoding cannot be fetched offline
        return len(text), "chars"


def _measure(prompt: dict[str, str]) -> dict[str, Any]:
    text = prompt["system"] + prompt["user"]
    size, unit = _count(text)
    return {
        "size": size,
        "unit": unit,
        "chars": len(text),
        "system_chars": len(prompt["system"]),
        "user_chars": len(prompt["user"]),
        "has_descriptions": "weight 7, an integer >= 0" in text,
    }


def _in_reference(python: str, *args: str) -> Any:
    """Run this file in trace-opt's interpreter with ``args``; returns what it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        subprocess.run(
            [python, str(Path(__file__).resolve()), *args, "--side", str(out)],
            check=True,
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default=None, help="python of a trace-opt venv")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--show", action="store_true", help="print both prompts")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--local-model", type=int, default=0, metavar="N", help="ask the embedded model N times"
    )
    parser.add_argument("--max-tokens", type=int, default=400, help="per reply (--local-model)")
    parser.add_argument("--judge", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        if args.judge:
            result: Any = judge_replies(json.loads(Path(args.judge).read_text()))
        else:
            result = capture_prompt()
        Path(args.side).write_text(json.dumps(result))
        return 0
    prompts = {"opto": capture_prompt()}
    reference = args.reference_python or (str(REFERENCE_VENV) if REFERENCE_VENV.exists() else None)
    if reference:
        prompts["trace-opt 0.1.3.8"] = _in_reference(reference)
    results = {side: _measure(prompt) for side, prompt in prompts.items()}
    if args.local_model:
        valid, _ = ours_with_local_model(args.local_model, args.max_tokens)
        results["opto"]["valid_replies"] = sum(valid) / len(valid)
        if reference:
            replies = reference_replies(
                prompts["trace-opt 0.1.3.8"], args.local_model, args.max_tokens
            )
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(replies, handle)
            try:
                judged = _in_reference(reference, "--judge", handle.name)
            finally:
                os.unlink(handle.name)
            results["trace-opt 0.1.3.8"]["valid_replies"] = sum(judged) / len(judged)
    print(f"prompt of one OptoPrime step, {PARAMETERS} parameters / {CALLS} calls")
    print(f"{'side':<20}{'size':>10} {'unit':<7}{'chars':>8}  descriptions shown")
    for side, r in results.items():
        shown = "yes" if r["has_descriptions"] else "no"
        print(f"{side:<20}{r['size']:>10} {r['unit']:<7}{r['chars']:>8}  {shown}")
    if args.local_model:
        for side, r in results.items():
            if "valid_replies" in r:
                print(f"{side:<20} embedded model: {r['valid_replies']:.0%} of replies valid")
    if len(results) == 2:
        ours, theirs = results.values()
        verdict = "no larger" if ours["size"] <= theirs["size"] else "LARGER"
        print(f"ratio opto / trace-opt: {ours['size'] / theirs['size']:.2f} ({verdict})")
    else:
        print("(trace-opt not measured: pass --reference-python)")
    if args.show:
        for side, prompt in prompts.items():
            print(f"\n===== {side} =====\n{prompt['system']}\n----- user -----\n{prompt['user']}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
