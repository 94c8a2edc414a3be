"""Scaling out: the same beam search on local threads and on Ray, with the same result.

A support-ticket router (a trainable instruction for the LLM and a trainable function that
turns its reply into a team name) is trained with BeamSearch twice: once with threads in
this process, once on Ray, where every validation rollout and every exploration job
(forward, backward and proposals of one beam) is a Ray task returning plain records. The
LLM clients are unpickled, hence created, in the Ray workers; their usage is added to the
driver's ledger. With a deterministic LLM both runs end with the same parameters.

    uv sync --all-packages --extra ray   # or: pip install 'opto-trainers[ray]'
    uv run --all-packages --extra ray examples/ray_scaleout.py                 # local Ray
    uv run --all-packages --extra ray examples/ray_scaleout.py --address auto  # a cluster
    uv run --all-packages --extra ray examples/ray_scaleout.py --llm scripted  # offline

The embedded model (SmolLM2-135M) is loaded once in every Ray worker and is weak at this;
a real model does far better. `--llm scripted` plays the router's LLM (it answers in one
word only when asked to) and the optimizer's (it asks for one word, then maps the reply).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from opto import trace
from opto.optimizers import OptoPrime
from opto.trace import operators as ops
from opto.trainers import BeamSearch, ExactMatchGuide

HERE = Path(__file__).resolve().parent
TICKETS = [
    ("I was charged twice for my subscription.", "billing"),
    ("The app crashes when I upload a photo.", "tech"),
    ("Can I get a discount for 50 seats?", "sales"),
    ("My invoice shows the wrong VAT number.", "billing"),
    ("Password reset emails never arrive.", "tech"),
    ("Do you offer an enterprise plan?", "sales"),
    ("Refund my last payment, please.", "billing"),
    ("The API returns error 500 since this morning.", "tech"),
]
DATA = {"inputs": [t for t, _ in TICKETS], "infos": [team for _, team in TICKETS]}
SEARCH = {"beam_width": 2, "num_proposals": 2, "max_depth": 3, "validation_dataset_size": 8}


@trace.model
class Router:
    """Routes a ticket to a team: an LLM call and a parsing function, both trainable."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.instruction = trace.node(
            "Which team should handle this ticket?",
            name="instruction",
            trainable=True,
            description="System prompt of the routing LLM; the teams are billing, tech, sales.",
        )

    def forward(self, ticket: str) -> Any:
        return self.parse_team(ops.call_llm(self.llm, self.instruction, ticket, max_tokens=60))

    @trace.bundle(trainable=True)
    def parse_team(self, reply):
        """Turn the LLM's reply into a team name: 'billing', 'tech' or 'sales'."""
        return reply.strip().lower()


def train(llm: Any, executor: Any) -> dict[str, Any]:
    """One beam search on `executor` ("threads" or a RayExecutor); a JSON-able summary."""
    agent = Router(llm)
    optimizer = OptoPrime(agent.parameters(), llm=llm, max_tokens=1024)  # caps rambling
    trainer = BeamSearch(agent, optimizer, num_threads=4, executor=executor, seed=0)
    start = time.perf_counter()
    result = trainer.train(ExactMatchGuide(), DATA, batch_size=4, **SEARCH)
    return {
        "parameters": result.final_parameters,
        "validation": [entry["scores"].get("validation") for entry in result.history],
        "calls": result.usage["calls"],
        "seconds": round(time.perf_counter() - start, 2),
    }


def run_both(llm: Any, address: str | None, workers: int = 2) -> dict[str, dict[str, Any]]:
    """The same training on threads and on Ray (a local runtime unless `address`), where
    `workers` Ray actors run the tasks."""
    import ray
    from opto.trainers import RayExecutor

    results = {"threads": train(llm, "threads")}
    # The workers import this file by name to rebuild the agent's bundled functions (they
    # are pickled by reference): ship its directory as the job's working directory.
    runtime_env = {"working_dir": str(HERE), "excludes": ["output/", "data/", "*.db"]}
    if address is None:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(address=address, runtime_env=runtime_env)
    try:
        with RayExecutor(max_workers=workers) as executor:
            results["ray"] = train(llm, executor)
    finally:
        ray.shutdown()
    return results


# --- a deterministic stand-in for a capable LLM (--llm scripted) ------------------------------

_TEAM_WORDS = {
    "billing": ("charged", "invoice", "refund", "payment"),
    "sales": ("discount", "plan", "seats"),
}

_PARSE_TEAM = '''def parse_team(self, reply):
    """Turn the LLM's reply into a team name: 'billing', 'tech' or 'sales'."""
    for team in ("billing", "tech", "sales"):
        if team in reply.lower():
            return team
    return "tech"
'''


def _router_reply(instruction: str, ticket: str) -> str:
    team = next(
        (name for name, words in _TEAM_WORDS.items() if any(w in ticket.lower() for w in words)),
        "tech",
    )
    return team if "one word" in instruction else f"This ticket is for the {team} team."


def scripted_reply(messages: list[dict[str, Any]], **options: Any) -> str:
    """Plays the router's LLM (system + ticket) or the optimizer's (an OptoPrime prompt)."""
    if len(messages) == 2 and "#Variables" not in messages[-1]["content"]:
        return _router_reply(messages[0]["content"], messages[1]["content"])
    prompt = messages[-1]["content"]
    variables = prompt.split("\n#Variables\n", 1)[1].split("#Constraints", 1)[0]
    instruction = re.search(r"^\(str\) (\w+)=(.*)$", variables, re.MULTILINE)
    code = re.search(r"^\(code\) (\w+):def parse_team", variables, re.MULTILINE)
    suggestion = {}
    if instruction and "one word" not in instruction.group(2):
        suggestion[instruction.group(1)] = "Reply in one word: billing, tech or sales."
    elif code and "for team in" not in prompt:
        suggestion[code.group(1)] = _PARSE_TEAM
    if not suggestion or "Incorrect" not in prompt.split("#Feedback", 1)[1]:
        return "TERMINATE"
    return json.dumps({"reasoning": "Answers must be team names.", "suggestion": suggestion})


def make_llm(choice: str | None) -> Any:
    """`scripted` (offline stand-in), a model name, or None for `LLM()`'s default."""
    if choice == "scripted":
        from opto.utils.testing import ScriptedLLM

        return ScriptedLLM(scripted_reply)
    from opto.utils.llm import LLM

    return LLM() if choice is None else LLM(choice)


def main(argv: list[str] | None = None, *, llm: Any = None) -> int:
    """Train on threads and on Ray and compare; `llm` overrides `--llm`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="'scripted', a model name (e.g. gpt-4o-mini), or omit")
    parser.add_argument("--address", help="Ray cluster address (default: a local runtime)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors running tasks")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print(
            "This example needs Ray: uv sync --all-packages --extra ray "
            "(or pip install 'opto-trainers[ray]')"
        )
        return 2
    llm = llm if llm is not None else make_llm(args.llm)
    results = run_both(llm, args.address, args.workers)
    if args.json:
        print(json.dumps(results))
        return 0
    for where, result in results.items():
        print(f"\n{where}: {result['seconds']} s, {result['calls']} LLM calls")
        print(f"  validation score per depth: {result['validation']}")
        for name, value in result["parameters"].items():
            print(f"  {name}: {value}")
    same = results["threads"]["parameters"] == results["ray"]["parameters"]
    print(f"\nSame parameters on threads and on Ray: {same}")
    if not same:
        print("(a sampling LLM varies from run to run; a deterministic one gives the same result)")
    print(
        "Ray pays off when LLM calls are slow and many machines share the work; with instant "
        "scripted replies, starting the workers and shipping tasks dominates."
    )
    return 0


if __name__ == "__main__":
    # Run the module imported under its own name, not as __main__, so that Ray workers can
    # import the agent's classes and bundled functions from it.
    from ray_scaleout import main as imported_main

    raise SystemExit(imported_main())
