"""Multi-objective search: accuracy against cost, compared under an ObjectiveConfig.

The agent computes square roots with Newton's method; its trainable `iterations` sets how
many steps it takes. More iterations make the answer more accurate but cost more. The
guide reports both metrics (`get_score_dict`): `error` (the absolute error) and `cost`
(the iterations used), both to be minimized, while its feedback (what the optimizer reads)
only talks about accuracy, so the optimizer keeps asking for more iterations.

The same BasicSearch runs three times, with a different `objective_config`:

* "error only": `ObjectiveConfig(score_key="error", minimize={"error"})` keeps accepting
  more iterations while the error shrinks;
* "weighted": `mode="weighted"` with `weights={"error": 1, "cost": 0.25}` stops where one
  more iteration costs more than the accuracy it buys;
* "pareto": `mode="pareto"` keeps only candidates that no other one beats on both metrics
  (here every iteration count is such a trade-off) and breaks the tie with the weights.

Every metric is kept: the step records hold `validation/error` and `validation/cost` next
to the scalar `validation`, so `opto-runs show` and `opto-runs export` list them.

    uv run examples/multi_objective.py                 # the configured or embedded LLM
    uv run examples/multi_objective.py --llm scripted  # offline, deterministic stand-in
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from opto import trace
from opto.optimizers import OptoPrime
from opto.trainers import BasicSearchAlgorithm, Guide
from opto.trainers.objectives import ObjectiveConfig

HERE = Path(__file__).resolve().parent
DEFAULT_STORAGE = f"sqlite:///{HERE / 'output' / 'runs.db'}"
NUMBERS = [2.0, 10.0, 50.0, 200.0]
DATA = {"inputs": NUMBERS, "infos": [x**0.5 for x in NUMBERS]}

OBJECTIVES = {
    "error only": ObjectiveConfig(score_key="error", minimize={"error"}),
    "weighted": ObjectiveConfig(
        mode="weighted", weights={"error": 1.0, "cost": 0.25}, minimize={"error", "cost"}
    ),
    "pareto": ObjectiveConfig(
        mode="pareto", weights={"error": 1.0, "cost": 0.25}, minimize={"error", "cost"}
    ),
}


@trace.bundle()
def newton_sqrt(x: float, iterations: int) -> dict[str, float]:
    """Square root of x by `iterations` Newton steps from the guess x; returns the value
    and the iterations spent."""
    guess = x
    steps = max(0, int(iterations))
    for _ in range(steps):
        guess = (guess + x / guess) / 2
    return {"value": guess, "iterations": steps}


@trace.model
class SqrtAgent:
    """Square roots with a trainable number of Newton iterations."""

    def __init__(self) -> None:
        self.iterations = trace.node(
            1,
            trainable=True,
            name="iterations",
            description="How many Newton steps to take (an int >= 0).",
        )

    def forward(self, x: float) -> Any:
        return newton_sqrt(x, self.iterations)


class AccuracyAndCost(Guide):
    """Two metrics: the absolute error and the iterations spent; the feedback is about
    accuracy only."""

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        error = abs(response["value"] - reference)
        feedback = (
            f"sqrt({query:g}) = {response['value']:.6g}, expected {reference:.6g} "
            f"(error {error:.3g}); be more accurate."
        )
        return -error, ("Correct." if error < 1e-9 else feedback)

    def get_score_dict(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        return {
            "error": abs(response["value"] - reference),
            "cost": float(response["iterations"]),
        }


def search(llm: Any, name: str, storage: str | None = None, steps: int = 8) -> dict[str, Any]:
    """BasicSearch under the objective `name`; a JSON-able summary."""
    agent = SqrtAgent()
    optimizer = OptoPrime(agent.parameters(), llm=llm, max_tokens=1024)
    trainer = BasicSearchAlgorithm(agent, optimizer, num_threads=4, seed=0)
    result = trainer.train(
        AccuracyAndCost(),
        DATA,
        batch_size=2,
        num_proposals=1,
        num_epochs=steps,
        max_steps=steps,
        objective_config=OBJECTIVES[name],
        storage=storage,
        run_name=None if storage is None else f"multi-objective-{name.replace(' ', '-')}",
    )
    return {
        "objective": name,
        "iterations": result.final_parameters["iterations"],
        "history": [
            {k: v for k, v in entry["scores"].items() if k.startswith("validation")}
            for entry in result.history
        ],
        "run_name": result.run_name,
    }


# --- a deterministic stand-in for a capable LLM (--llm scripted) ------------------------------

_CURRENT = re.compile(r"^\(int\) (iterations\d*)=(-?\d+)", re.MULTILINE)


def scripted_reply(messages: list[dict[str, Any]], **options: Any) -> str:
    """Ask for one more iteration while the feedback says the answers are inaccurate."""
    prompt = messages[-1]["content"]
    name, value = _CURRENT.search(prompt).groups()
    if "be more accurate" not in prompt.split("#Feedback", 1)[-1]:
        return "TERMINATE"
    return json.dumps(
        {
            "reasoning": "The answers are not accurate enough: take one more Newton step.",
            "answer": "",
            "suggestion": {name: int(value) + 1},
        }
    )


def make_llm(choice: str | None) -> Any:
    """`scripted` (offline stand-in), a model name, or None (the configured LLM)."""
    if choice == "scripted":
        from opto.utils.testing import ScriptedLLM

        return ScriptedLLM(scripted_reply)
    from opto.utils.llm import LLM

    return LLM() if choice is None else LLM(choice)


def main(argv: list[str] | None = None, *, llm: Any = None) -> int:
    """Run the three searches and print what each objective chose."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="'scripted', a model name (e.g. gpt-4o-mini), or omit")
    parser.add_argument("--steps", type=int, default=8, help="search steps per objective")
    parser.add_argument("--storage", default=None, help="run storage URL to keep the runs in")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(argv)
    llm = llm if llm is not None else make_llm(args.llm)
    summaries = [search(llm, name, args.storage, args.steps) for name in OBJECTIVES]
    if args.json:
        print(json.dumps(summaries))
        return 0
    for summary in summaries:
        print(f"\n{summary['objective']}: {summary['iterations']} Newton iterations")
        for step, scores in enumerate(summary["history"], start=1):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in scores.items() if v is not None)
            print(f"  step {step}: {shown}")
    if args.storage is not None:
        print(f"\nInspect them: opto-runs --storage {args.storage} list")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
