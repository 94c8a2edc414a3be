"""Prompt optimization on a BIG-Bench-Hard-style task: OptoPrime, TextGrad and OPRO compared.

The task (`examples/data/bbh_boolean_expressions.json`, 9 training and 21 test items)
asks for the value of Boolean expressions such as `not True or ( False and True ) is`.
A solver LLM answers each one under a trainable system prompt; the last `True`/`False` of
its reply is the answer. Each optimizer starts from the same prompt and trains it with
MinibatchAlgorithm under the same LLM budget (calls counted by the usage ledger, the
solver's calls included); the test set is scored before and after, outside the budget.

    uv run examples/prompt_optimization_bbh.py                 # configured or embedded LLM
    uv run examples/prompt_optimization_bbh.py --llm gpt-4o-mini --budget 60
    uv run examples/prompt_optimization_bbh.py --llm scripted  # offline, deterministic

The embedded model (SmolLM2-135M) can neither solve nor improve much here; a real model
shows the optimizers' differences. `--llm scripted` stands in for both the solver (it
evaluates `not` and operator precedence correctly only when the prompt explains them) and
the optimizer (it adds the missing rule when the feedback reports wrong answers).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from opto import trace
from opto.optimizers import OPRO, OptoPrime, TextGrad
from opto.trace import operators as ops
from opto.trainers import ExactMatchGuide, MinibatchAlgorithm, evaluate

DATA = Path(__file__).parent / "data" / "bbh_boolean_expressions.json"
OPTIMIZERS = {"OptoPrime": OptoPrime, "TextGrad": TextGrad, "OPRO": OPRO}
INITIAL_PROMPT = "Evaluate the Boolean expression. End your reply with True or False."


@trace.bundle()
def extract_answer(reply):
    """The last 'True' or 'False' in the reply ('' when there is none)."""
    found = re.findall(r"\b(True|False)\b", reply)
    return found[-1] if found else ""


@trace.model
class BooleanSolver:
    """An LLM answering with a trainable system prompt."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.prompt = trace.node(
            INITIAL_PROMPT,
            name="prompt",
            trainable=True,
            description="System prompt of the LLM that evaluates Boolean expressions.",
        )

    def forward(self, question: str) -> Any:
        reply = ops.call_llm(self.llm, self.prompt, f"Expression: {question}", max_tokens=400)
        return extract_answer(reply)


def load_task() -> dict[str, dict[str, list[str]]]:
    """The train and test splits as trainer datasets."""
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    return {
        split: {
            "inputs": [i["input"] for i in raw[split]],
            "infos": [i["target"] for i in raw[split]],
        }
        for split in ("train", "test")
    }


def accuracy(agent: Any, dataset: dict[str, list[str]]) -> float:
    """Mean exact-match score on `dataset`."""
    scores = evaluate(agent, ExactMatchGuide(), dataset["inputs"], dataset["infos"], num_threads=4)
    return sum(scores) / len(scores)


def compare(
    llm: Any, *, budget: int = 24, epochs: int = 3, batch_size: int = 3
) -> list[dict[str, Any]]:
    """Train one prompt per optimizer on the same budget; one result row per optimizer."""
    task = load_task()
    rows = []
    for name, optimizer_class in OPTIMIZERS.items():
        agent = BooleanSolver(llm)
        before = accuracy(agent, task["test"])
        # Replies are a short prompt plus reasoning; the cap keeps small models from rambling.
        optimizer = optimizer_class(agent.parameters(), llm=llm, max_tokens=768)
        trainer = MinibatchAlgorithm(agent, optimizer, num_threads=4, seed=0)
        result = trainer.train(
            ExactMatchGuide(),
            task["train"],
            num_epochs=epochs,
            batch_size=batch_size,
            max_llm_calls=budget,
        )
        rows.append(
            {
                "optimizer": name,
                "before": before,
                "after": accuracy(agent, task["test"]),
                "steps": result.n_iters,
                "calls": result.usage["calls"],
                "tokens": result.usage["total_tokens"],
                "cost_usd": result.usage["cost_usd"]
                if not result.usage["unknown_cost_calls"]
                else None,
                "stopped": result.stopped,
                "prompt": agent.prompt.data,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a text table."""
    header = [
        "optimizer",
        "test acc. before",
        "after",
        "steps",
        "LLM calls",
        "tokens",
        "USD",
        "stopped",
    ]
    lines = [
        [
            row["optimizer"],
            f"{row['before']:.2f}",
            f"{row['after']:.2f}",
            str(row["steps"]),
            str(row["calls"]),
            str(row["tokens"]),
            "n/a" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}",
            row["stopped"],
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in [header, *lines]]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


# --- a deterministic stand-in for the solver and the optimizers (--llm scripted) -------------

#: (marker, rule) pairs the scripted optimizer adds to the prompt, one per step.
RULES = (
    ("`not` flips", "Remember that `not` flips the value right after it: `not not True` is True."),
    (
        "before `or`",
        "Evaluate `and` before `or`, as multiplication before addition; parentheses first.",
    ),
)


def solve(expression: str, knows_not: bool, knows_precedence: bool) -> bool:
    """Evaluate `expression`; without `knows_not` every `not` is ignored, without
    `knows_precedence` `and`/`or` are applied left to right (the simulated solver's slips)."""
    tokens = expression.replace(" is", "").split()
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def unary() -> bool:
        token = take()
        if token == "not":
            value = unary()
            return (not value) if knows_not else value
        if token == "(":
            value = disjunction()
            take()  # ")"
            return value
        return token == "True"

    def conjunction() -> bool:
        value = unary()
        while peek() == "and":
            take()
            value = unary() and value
        return value

    def disjunction() -> bool:
        if not knows_precedence:
            value = unary()
            while peek() in ("and", "or"):
                operator, right = take(), unary()
                value = (value and right) if operator == "and" else (value or right)
            return value
        value = conjunction()
        while peek() == "or":
            take()
            value = conjunction() or value
        return value

    return disjunction()


def improve(prompt: str, feedback: str) -> str | None:
    """The next prompt: add the first missing rule when answers were wrong (else None)."""
    if "Incorrect" not in feedback:
        return None
    for marker, rule in RULES:
        if marker not in prompt:
            return f"{prompt} {rule}"
    return None


def scripted_reply(messages: list[dict[str, Any]], **options: Any) -> str:
    """Answers as the solver, as OptoPrime's or OPRO's LLM, or as TextGrad's."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if user.startswith("Expression: "):  # the solver
        value = solve(user[len("Expression: ") :], "`not` flips" in system, "before `or`" in system)
        return f"Working through the operators step by step, the result is {value}."
    if "gradient engine" in system:  # TextGrad: criticism of one variable
        if "Incorrect" in user:
            return "Incorrect answers: the prompt should explain how the operators work."
        return "The answers are correct; no change needed."
    if "combine several pieces of feedback" in system:  # TextGrad: merged criticism
        return user if "Incorrect" in user else "No change needed."
    if "IMPROVED_VARIABLE" in system:  # TextGrad: the update
        current = re.search(r"<VARIABLE[^>]*>\n(.*?)\n</VARIABLE>", user, re.DOTALL).group(1)
        better = improve(current, user.split("<FEEDBACK>", 1)[1])
        return "TERMINATE" if better is None else f"<IMPROVED_VARIABLE>{better}</IMPROVED_VARIABLE>"
    # OptoPrime and OPRO: a JSON suggestion for the prompt variable
    if "Current solution:" in user:  # OPRO: the current solution is the last block
        current_block = user.rsplit("Current solution:", 1)[1]
        name, current = next(
            iter(json.loads(re.search(r"\{.*?\n\}", current_block, re.DOTALL).group(0)).items())
        )
        feedback = current_block
    else:
        variables = user.split("\n#Variables\n", 1)[1].split("#Constraints", 1)[0]
        name, current = re.search(r"^\(str\) (\w+)=(.*)$", variables, re.MULTILINE).groups()
        feedback = user.split("#Feedback", 1)[1]
    better = improve(current, feedback)
    if better is None:
        return "TERMINATE"
    reasoning = "Some answers were wrong; the prompt must explain the rule they broke."
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": {name: better}})


def make_llm(choice: str | None) -> Any:
    """`scripted` (offline stand-in), a model name, or None for `LLM()`'s default."""
    if choice == "scripted":
        from opto.utils.testing import ScriptedLLM

        return ScriptedLLM(scripted_reply)
    from opto.utils.llm import LLM

    return LLM() if choice is None else LLM(choice)


def main(argv: list[str] | None = None, *, llm: Any = None) -> int:
    """Run the comparison and print the table; `llm` overrides `--llm`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="'scripted', a model name (e.g. gpt-4o-mini), or omit")
    parser.add_argument("--budget", type=int, default=24, help="LLM calls per optimizer")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    args = parser.parse_args(argv)
    llm = llm if llm is not None else make_llm(args.llm)
    rows = compare(llm, budget=args.budget, epochs=args.epochs)
    print(f"Same budget for each optimizer: {args.budget} LLM calls (solver calls included)\n")
    print(format_table(rows))
    print("\nFinal prompts:")
    for row in rows:
        print(f"  {row['optimizer']}: {row['prompt']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
