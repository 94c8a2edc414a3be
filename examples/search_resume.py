"""Beam search with checkpoints in SQLite: killed mid-run, then resumed where it stopped.

The agent converts Celsius to Fahrenheit as `slope * celsius + offset`, both trainable
numbers, starting from 1.0 and 0.0. BeamSearch (OptoPrime proposals, 2 beams, 5 depths)
searches for better values from feedback such as "f(20) = 20.0, expected 68.0". After every
depth the trainer writes the step and a checkpoint to SQLite in one transaction.

By default the example shows the whole story: it starts the training in a child process,
kills it with SIGKILL once two depths are stored, and resumes the run from its last
checkpoint in this process; the resumed run ends exactly where an uninterrupted one would.

    uv run examples/search_resume.py                  # the configured or embedded LLM
    uv run examples/search_resume.py --llm scripted   # offline, deterministic stand-in
    uv run examples/search_resume.py --mode train --run-name mine          # just train
    uv run examples/search_resume.py --mode train --run-name mine --resume # continue it
    opto-runs latest                                # inspect it (runs go to ./opto-runs.db)

`--llm scripted` moves both numbers halfway to the least-squares fit of the examples in the
feedback at each step (and `--delay` makes its replies slow enough to be killed). The
embedded model (SmolLM2-135M) makes little progress here; a real model does much better.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

from opto import trace
from opto.optimizers import OptoPrime
from opto.trainers import BeamSearch, Guide
from opto.utils.storage import default_storage_url

CELSIUS = [-40, -10, 0, 10, 20, 30, 37, 100]
DATA = {"inputs": CELSIUS, "infos": [c * 9 / 5 + 32 for c in CELSIUS]}
SEARCH = {"beam_width": 2, "num_proposals": 2, "max_depth": 5, "validation_dataset_size": 8}


@trace.model
class Converter:
    """Fahrenheit from Celsius with a trainable slope and offset."""

    def __init__(self) -> None:
        self.slope = trace.node(
            1.0, trainable=True, name="slope", description="Multiplies celsius."
        )
        self.offset = trace.node(0.0, trainable=True, name="offset", description="Added last.")

    def forward(self, celsius: float) -> Any:
        return self.slope * celsius + self.offset


class ConversionGuide(Guide):
    """Score `1 / (1 + |error|)`; the feedback shows the output and the expected value."""

    def get_feedback(self, query: Any, response: Any, reference: Any = None, **kwargs: Any):
        error = abs(response - reference)
        feedback = f"f({query}) = {response:.2f}, expected {reference:.2f}"
        return 1.0 / (1.0 + error), ("Correct." if error < 1e-6 else feedback)


def train(llm: Any, storage: str, run_name: str, *, resume: bool = False) -> dict[str, Any]:
    """Run (or, with `resume`, continue) the beam search; a JSON-able summary."""
    agent = Converter()
    optimizer = OptoPrime(agent.parameters(), llm=llm, max_tokens=1024)  # caps rambling
    trainer = BeamSearch(agent, optimizer, num_threads=4, seed=0)
    result = trainer.train(
        ConversionGuide(),
        DATA,
        batch_size=2,
        storage=storage,
        run_name=run_name,
        resume=resume,
        **SEARCH,
    )
    return {
        "run_name": result.run_name,
        "depths": result.n_iters,
        "parameters": result.final_parameters,
        "train_scores": result.train_scores,
        "history": [entry["scores"] for entry in result.history],
        "stopped": result.stopped,
    }


def steps_stored(storage: str, run_name: str) -> int:
    """How many steps of the run are in the storage (0 before it exists)."""
    from opto.utils.storage import RunNotFoundError, open_storage

    with open_storage(storage) as opened:
        try:
            return len(opened.list_steps(run_name))
        except RunNotFoundError:
            return 0


def kill_and_resume(args: argparse.Namespace, llm: Any) -> dict[str, Any]:
    """Train in a child process, SIGKILL it after `args.kill_after` depths, then resume."""
    command = [sys.executable, __file__, "--mode", "train", "--storage", args.storage]
    command += ["--run-name", args.run_name, "--delay", str(args.delay)]
    command += ["--llm", args.llm] if args.llm else []
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    print(f"Training in process {child.pid}; it is killed after {args.kill_after} depths ...")
    while steps_stored(args.storage, args.run_name) < args.kill_after and child.poll() is None:
        time.sleep(0.05)
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
        child.wait()
        done = steps_stored(args.storage, args.run_name)
        print(f"Killed it with SIGKILL after {done} of {SEARCH['max_depth']} depths.")
    else:
        print("The training finished before it could be killed; resuming finds nothing to do.")
    print("Resuming from the last checkpoint ...")
    return train(llm, args.storage, args.run_name, resume=True)


# --- a deterministic stand-in for a capable LLM (--llm scripted) ------------------------------

_POINT = re.compile(r"f\((-?[\d.]+)\) = (-?[\d.]+), expected (-?[\d.]+)")


def scripted_reply(messages: list[dict[str, Any]], **options: Any) -> str:
    """Move slope and offset halfway to the least-squares fit of the examples in #Feedback."""
    prompt = messages[-1]["content"]
    names = dict(re.findall(r"^\(float\) ((slope|offset)\d*)=", prompt, re.MULTILINE))
    current = {
        role: float(re.search(rf"^\(float\) {name}=(-?[\d.e+-]+)", prompt, re.MULTILINE).group(1))
        for name, role in names.items()
    }
    points = {float(x): float(y) for x, _, y in _POINT.findall(prompt.split("#Feedback", 1)[1])}
    if len(points) < 2:
        return "TERMINATE"
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    offset = mean_y - slope * mean_x
    new = {
        "slope": round((current["slope"] + slope) / 2, 4),
        "offset": round((current["offset"] + offset) / 2, 4),
    }
    suggestion = {name: new[role] for name, role in names.items()}
    reasoning = "Moving slope and offset halfway towards the line through the examples."
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": suggestion})


def make_llm(choice: str | None, delay: float = 0.0) -> Any:
    """`scripted` (offline stand-in; `delay` seconds per reply), a model name, or None."""
    if choice == "scripted":
        from opto.utils.testing import ScriptedLLM

        def slow_reply(messages: list[dict[str, Any]], **options: Any) -> str:
            time.sleep(delay)
            return scripted_reply(messages, **options)

        return ScriptedLLM(slow_reply)
    from opto.utils.llm import LLM

    return LLM() if choice is None else LLM(choice)


def main(argv: list[str] | None = None, *, llm: Any = None) -> int:
    """Run the example; `llm` overrides `--llm` (in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="'scripted', a model name (e.g. gpt-4o-mini), or omit")
    parser.add_argument("--mode", choices=["demo", "train"], default="demo")
    parser.add_argument(
        "--storage",
        default=default_storage_url(),
        help="run storage URL (default: $OPTO_STORAGE_URL, else ./opto-runs.db, where opto-runs "
        "looks)",
    )
    parser.add_argument("--run-name", help="the run's name (default: a new timestamped one)")
    parser.add_argument("--resume", action="store_true", help="train: continue the run")
    parser.add_argument("--kill-after", type=int, default=2, help="demo: depths before SIGKILL")
    parser.add_argument("--delay", type=float, default=0.3, help="scripted LLM reply delay (s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.run_name is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        args.run_name = f"celsius-{stamp}"
    llm = llm if llm is not None else make_llm(args.llm, args.delay)
    if args.mode == "train":
        summary = train(llm, args.storage, args.run_name, resume=args.resume)
    else:
        summary = kill_and_resume(args, llm)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"\nRun {summary['run_name']!r}: {summary['depths']} depths, {summary['stopped']}")
    for depth, scores in enumerate(summary["history"], start=1):
        print(f"  depth {depth}: {scores}")
    print(f"Final parameters: {summary['parameters']}  (exact: slope 1.8, offset 32)")
    where = "" if args.storage == default_storage_url() else f" --storage {args.storage}"
    print(f"Inspect it: opto-runs{where} show {summary['run_name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
