"""How often the embedded model (SmolLM2-135M) proposes something sensible for the quickstart.

    uv run --locked --all-packages --extra local benchmarks/small_model_proposals.py --steps 20

Each step starts from the quickstart's initial agent (the rude closing line, the
"invoice"-only route()), runs a batch of two training tickets, sends the guide's feedback
back and asks the optimizer for one proposal (temperature 0.7, as the quickstart does),
without applying it. The proposals are then judged mechanically:

- closing line: *changed* (differs from the current line) and *sensible* (changed, and the
  quickstart's rubric gives it credit: polite, thanks the customer, one plain sentence -
  `SupportGuide.closing_credit > 0`).
- route(): *valid* (accepted by the optimizer: a function definition that compiles and
  passes the code checks), *changed* (different source) and *sensible* (valid, and it
  routes more of the eight training tickets to the right team than the current rule).
- a step is *sensible* when at least one of its proposed values is; "best of 4" is the
  share of consecutive groups of four steps with at least one sensible proposal (what the
  quickstart's search of four proposals per step can keep).

`--prompt full` is OptoPrime's prompt, `--prompt compact` CompactOptoPrime's (writing the
values), `--prompt choose` CompactOptoPrime choosing the closing line from the quickstart's
CLOSING_CHOICES (what the quickstart runs); the default runs all three on the same batches. Prints a table and, with `--json PATH`, writes the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import quickstart  # noqa: E402
from opto.optimizers import CompactOptoPrime, OptoPrime  # noqa: E402
from opto.trace.utils import is_code_name  # noqa: E402
from opto.trainers.algorithms.minibatch import standard_optimization_step  # noqa: E402
from opto.trainers.utils import batchify, bind  # noqa: E402

PROMPTS = {"full": OptoPrime, "compact": CompactOptoPrime, "choose": CompactOptoPrime}


def routing_accuracy(agent: quickstart.SupportAgent, tickets: list[dict[str, str]]) -> int:
    """How many tickets the agent sends to the right team."""
    return sum(f"our {t['team']} team" in str(agent(t["question"]).data).lower() for t in tickets)


def judge_step(
    optimizer: OptoPrime, update: dict[Any, Any], train: list[dict[str, str]]
) -> dict[str, bool]:
    """The mechanical verdicts on one proposal (see the module docstring)."""
    record = optimizer.last_step
    suggested = {key.split(".")[-1] for key in (record.suggestion if record else {})}
    values = {p.py_name: v for p, v in update.items()}
    start = quickstart.SupportAgent()
    closing = next((v for k, v in values.items() if "closing" in k), None)
    code = next((v for k, v in values.items() if is_code_name(k)), None)
    verdict = {
        "replied": bool(suggested),
        "closing_changed": closing is not None and closing != start.closing.data,
        "route_valid": code is not None,
        "route_changed": False,
        "route_sensible": False,
    }
    verdict["closing_sensible"] = verdict["closing_changed"] and (
        quickstart.SupportGuide.closing_credit(str(closing)) > 0
    )
    if code is not None:
        current = start.parameters_dict()["route"].data
        verdict["route_changed"] = code.strip() != str(current).strip()
        if verdict["route_changed"]:
            changed = bind(start, {"route": code})
            try:
                better = routing_accuracy(changed, train) > routing_accuracy(start, train)
            except Exception:  # a proposal that fails to run is not sensible
                better = False
            verdict["route_sensible"] = better
    verdict["sensible"] = verdict["closing_sensible"] or verdict["route_sensible"]
    return verdict


def run(prompt: str, llm: Any, steps: int, train: list[dict[str, str]]) -> dict[str, Any]:
    """`steps` proposals with the `prompt` style; the counts and some examples."""
    guide = quickstart.SupportGuide()
    counts: dict[str, int] = {}
    verdicts: list[dict[str, bool]] = []
    closings: list[str] = []
    started = time.perf_counter()
    for i in range(steps):
        agent = quickstart.SupportAgent()
        batch = [train[(2 * i) % len(train)], train[(2 * i + 1) % len(train)]]
        outputs = [
            standard_optimization_step(agent, t["question"], guide, t["team"]) for t in batch
        ]
        if prompt == "choose":  # what the quickstart runs on the embedded model
            optimizer = quickstart.make_optimizer(agent, llm, "local")
        else:
            optimizer = PROMPTS[prompt](agent.parameters(), llm=llm, **quickstart.OPTIMIZER_OPTIONS)
        optimizer.zero_feedback()
        optimizer.backward(
            batchify(*[o[0] for o in outputs]), batchify(*[o[2] for o in outputs]).data
        )
        update = optimizer.step(bypassing=True)
        verdict = judge_step(optimizer, update, train)
        verdicts.append(verdict)
        for key, value in verdict.items():
            counts[key] = counts.get(key, 0) + int(value)
        closing = next((v for p, v in update.items() if "closing" in p.py_name), None)
        if closing is not None:
            closings.append(str(closing))
    groups = [verdicts[i : i + 4] for i in range(0, len(verdicts) - 3, 4)]
    prompt_chars = len(optimizer.last_step.system_prompt or "") + len(
        optimizer.last_step.user_prompt or ""
    )
    return {
        "prompt": prompt,
        "steps": steps,
        "counts": counts,
        "best_of_4": [sum(any(v["sensible"] for v in g) for g in groups), len(groups)],
        "prompt_chars": prompt_chars,
        "seconds": round(time.perf_counter() - started, 1),
        "closings": closings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="proposals per prompt style")
    parser.add_argument("--prompt", choices=[*PROMPTS, "all"], default="all")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    llm, label, _ = quickstart.choose_llm("local")
    data = json.loads(quickstart.DATA.read_text(encoding="utf-8"))
    train = data["train"]
    styles = list(PROMPTS) if args.prompt == "all" else [args.prompt]
    results = [run(style, llm, args.steps, train) for style in styles]
    print(f"{label}; {args.steps} proposals per prompt style")
    keys = ("replied", "closing_changed", "closing_sensible", "route_valid", "route_changed")
    keys += ("route_sensible", "sensible")
    print(f"{'measure':<18}" + "".join(f"{r['prompt']:>12}" for r in results))
    for key in keys:
        print(
            f"{key:<18}" + "".join(f"{r['counts'].get(key, 0):>9}/{r['steps']:<2}" for r in results)
        )
    print(
        f"{'best of 4':<18}"
        + "".join(f"{r['best_of_4'][0]:>9}/{r['best_of_4'][1]:<2}" for r in results)
    )
    print(f"{'prompt chars':<18}" + "".join(f"{r['prompt_chars']:>12}" for r in results))
    print(f"{'seconds':<18}" + "".join(f"{r['seconds']:>12}" for r in results))
    for r in results:
        shown = sorted(set(r["closings"]))[:8]
        print(f"\n{r['prompt']}: some proposed closing lines:")
        for closing in shown:
            print(f"  {closing!r}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
