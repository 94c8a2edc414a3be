"""Quickstart: optimize a small support agent end to end with opto (the README's main job).

    uv run --locked --all-packages --extra local examples/quickstart.py

The agent answers customer-support tickets. It has two trainable parts: its closing line
(a trainable text node — the agent's prompt) and `route`, a trainable `@bundle` function
that picks the team (billing or tech) with a keyword rule. A guide scores each reply (0.5
for the right team, 0.5 for a closing line that is polite, thanks the customer, is a full
sentence and is short) and says what is wrong. OptoPrime reads the trace of a minibatch
and that feedback and proposes new values; BasicSearchAlgorithm asks for several proposals
per step, validates each on the training tickets and keeps the best, so even a weak
model's occasional good proposal is kept and a worse one never is.

The LLM (`--llm MODEL`): by default `OPTO_LLM_MODEL` or a provider key (`OPENAI_API_KEY`,
`ANTHROPIC_API_KEY`, ...) when set, else the embedded offline model (SmolLM2-135M, the
`local` extra; `--llm local` picks it explicitly). `--llm gpt-4o-mini` (or any model name)
uses that model; `--llm scripted` a scripted stand-in (no model; used by the tests). The
embedded model gets CompactOptoPrime's short prompt, which a tiny model can follow.

It prints a progress bar, one summary table of the steps, before/after scores on held-out
tickets, and says plainly whether the run found a real improvement (a change is shown as
one only when the search kept it and the held-out score rose); then the LLM usage, where
the run is stored (SQLite) and the commands to resume or inspect it. It writes the trace
graph (DOT, and SVG when Graphviz's `dot` is installed) and a score-per-step plot (PNG,
with matplotlib) to the output folder (`examples/output/` by default).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import math
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from opto import trace
from opto.optimizers import CompactOptoPrime, OptoPrime
from opto.trace import operators as ops
from opto.trace.utils import is_code_name
from opto.trainers import BasicSearchAlgorithm, Guide, evaluate
from opto.trainers.loggers import ConsoleLogger
from opto.utils.llm.errors import LLMConfigurationError
from opto.utils.storage import default_storage_url, open_storage, storage_url_of
from rich.console import Console
from rich.table import Table
from rich.text import Text

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "support_tickets.json"
BATCH_SIZE = 2  # tickets per step: small prompts, fast steps
DEFAULT_STEPS = 4
DEFAULT_PROPOSALS = 4
RUN_PREFIX = "quickstart"  # this script's runs, among others in a shared storage
LATEST = "latest"  # `--resume` without a run name
#: OptoPrime's options here: a short reasoning and the suggestion, no "answer" field.
OPTIMIZER_OPTIONS: dict[str, Any] = {
    "max_tokens": 450,
    "reasoning_max_chars": 120,
    "json_keys": {"answer": None},
}

console = Console(highlight=False, soft_wrap=True)


# -- the agent ------------------------------------------------------------------------------


@trace.model
class SupportAgent:
    """Answers a support ticket: names the team that will handle it, then a closing line."""

    def __init__(self) -> None:
        self.closing = trace.node(
            "Stop writing to us, we are busy.",
            name="closing",
            trainable=True,
            description="The closing line of every reply to the customer.",
        )

    @trace.bundle(trainable=True)
    def route(self, question):
        """Return the team that should answer the question: 'billing' or 'tech'."""
        return "billing" if "invoice" in question.lower() else "tech"

    def forward(self, question):
        team = self.route(question)
        return ops.format(
            "Our {team} team will get back to you within a day. {closing}",
            team=team,
            closing=self.closing,
        )


class SupportGuide(Guide):
    """Scores a reply out of 1: 0.5 for naming the right team, and 0.5 for the closing line.

    The closing line earns nothing unless a person would accept it: a polite sentence
    (capital first letter, at least three words, plain words, ending with '.' or '!') that
    thanks the customer. Such a line gets the full 0.5 up to 15 words, less the longer it
    is. The feedback names every problem.
    """

    RUDE = ("stop writing", "busy", "go away")
    MAX_WORDS = 15

    @classmethod
    def closing_problems(cls, closing: str) -> list[str]:
        """What keeps `closing` from being a closing line a person would accept."""
        words = closing.split()
        problems = []
        if any(rude in closing.lower() for rude in cls.RUDE):
            problems.append(
                "The closing line is rude: never tell the customer to stop writing or that "
                "we are busy."
            )
        if "thank" not in closing.lower():
            problems.append(
                "The closing line must thank the customer, for example: "
                "Thank you for contacting Acme!"
            )
        if not is_sentence(closing):
            problems.append(
                "The closing line must be one plain sentence: a capital letter first, at "
                "least three words, ending with '.' or '!'."
            )
        if len(words) > cls.MAX_WORDS:
            problems.append(f"The closing line is too long: use at most {cls.MAX_WORDS} words.")
        return problems

    @classmethod
    def closing_credit(cls, closing: str) -> float:
        """From 0 to 1: 0 unless the line is polite, thanks the customer and is a sentence."""
        if any(p for p in cls.closing_problems(closing) if "too long" not in p):
            return 0.0
        return min(1.0, cls.MAX_WORDS / max(1, len(closing.split())))

    def get_feedback(
        self, query: Any, response: Any, reference: Any = None, **kwargs: Any
    ) -> tuple[float, str]:
        text = str(response)
        closing = text.split(". ", 1)[1].strip() if ". " in text else ""
        score, problems = 0.0, []
        if f"our {reference} team" in text.lower():
            score += 0.5
        else:
            problems.append(f"Wrong team: this ticket belongs to the {reference} team.")
        score += 0.5 * self.closing_credit(closing)
        problems += self.closing_problems(closing)
        return round(score, 4), " ".join(problems) or "Correct."


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[,;:]?")


def is_sentence(text: str) -> bool:
    """Whether `text` reads as one plain sentence: a capital letter first, three or more
    words of letters (no code, digits, underscores or markup), '.' or '!' at the end."""
    words = text.split()
    if len(words) < 3 or not text[:1].isupper() or not text.endswith((".", "!")):
        return False
    body = [*words[:-1], words[-1][:-1]]  # the last word without its final mark
    return all(_WORD.fullmatch(word) for word in body)


# -- the LLM ----------------------------------------------------------------------------------


def choose_llm(choice: str | None) -> tuple[Any, str, str]:
    """The optimizer's LLM for `--llm`, a one-line description of it, and its kind
    ("scripted", "local" for the embedded model, "configured" for any other).

    `choice`: None or "auto" (OPTO_LLM_MODEL / a provider key, else the embedded model),
    "scripted", "local" (the embedded model), or a model name such as "gpt-4o-mini".
    """
    if choice == "scripted":
        return scripted_llm(), "a scripted stand-in (no model; see scripted_llm())", "scripted"
    from opto.utils.llm import LLM
    from opto.utils.llm.config import env_model, local_model_available, provider_default_model

    auto = choice in (None, "auto")
    if choice not in (None, "auto", "local"):
        llm = LLM(choice)
        return llm, llm.model_name, "configured"
    if auto and (env_model() or provider_default_model() or not local_model_available()):
        llm = LLM()  # OPTO_LLM_MODEL / a provider key; a clear error when nothing is set up
        return llm, f"{llm.model_name} (from the environment)", "configured"
    # Sampling (temperature 0.7) makes the proposals of one step differ from each other.
    llm = LLM("local", temperature=0.7)
    label = f"the embedded offline model {llm.model_name} (tiny: for trying opto offline)"
    return llm, label, "local"


#: What the scripted stand-in proposes, in turn: variable kind -> new value.
SCRIPTED_PROPOSALS: list[dict[str, str]] = [
    # junk that an earlier rubric scored above the original line: never kept
    {"closing": "The code is not a normal response and you need to improve your code."},
    {"closing": "Thank you for contacting Acme!"},  # fixes the closing line
    {  # fixes routing for most billing words
        "code": (
            "def route(self, question):\n"
            '    """Return the team that should answer the question: \'billing\' or \'tech\'."""\n'
            '    words = ("invoice", "charge", "refund", "bill")\n'
            '    return "billing" if any(w in question.lower() for w in words) else "tech"\n'
        )
    },
    {"code": "def route(self, question) return 'tech'"},  # does not compile: rejected
]


def scripted_llm() -> Any:
    """A ScriptedLLM playing a mediocre optimizer: each call gives the next proposal of
    SCRIPTED_PROPOSALS for the variables named in the requested JSON schema."""
    from opto.utils.testing import ScriptedLLM

    counter = itertools.count()
    lock = threading.Lock()

    def kind(name: str) -> str:
        return "code" if is_code_name(name) else "closing"

    def reply(messages: Any, **options: Any) -> str:
        with lock:
            proposal = SCRIPTED_PROPOSALS[next(counter) % len(SCRIPTED_PROPOSALS)]
        schema = options["response_format"]["json_schema"]["schema"]
        names = schema["properties"]["suggestion"]["properties"]
        suggestion = {name: proposal[kind(name)] for name in names if kind(name) in proposal}
        return json.dumps({"reasoning": "Address the feedback.", "suggestion": suggestion})

    return ScriptedLLM(reply, model="scripted", cost_per_call=0.0)


# -- reporting --------------------------------------------------------------------------------


def held_out_scores(agent: SupportAgent, guide: Guide, test: list[dict[str, str]]) -> list[float]:
    """The agent's score on every held-out ticket."""
    return evaluate(
        agent, guide, [t["question"] for t in test], [t["team"] for t in test], min_score=0.0
    )


def show_before_after(
    test: list[dict[str, str]], before: list[float], after: list[float]
) -> tuple[float, float]:
    """The held-out table; returns the mean scores before and after."""
    table = Table(title="Held-out tickets (never seen in training)")
    table.add_column("ticket")
    table.add_column("team")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for ticket, b, a in zip(test, before, after):
        table.add_row(ticket["question"], ticket["team"], f"{b:.2f}", f"{a:.2f}")
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    table.add_row("[bold]mean", "", f"[bold]{mean_before:.3f}", f"[bold]{mean_after:.3f}")
    console.print(table)
    console.print(f"Held-out score: {mean_before:.3f} -> {mean_after:.3f}")
    return mean_before, mean_after


def changed_parameters(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """The parameters whose value differs between two parameter sets (name -> new value)."""
    return {name: value for name, value in end.items() if start.get(name) != value}


def show_outcome(changes: dict[str, Any], mean_before: float, mean_after: float) -> bool:
    """Say plainly whether the run found a real improvement; show the change only if so.

    A change counts when the search kept it (better on the training tickets) and the agent
    scores higher on the held-out tickets. Returns whether it did.
    """
    improved = bool(changes) and mean_after > mean_before
    if not changes:
        console.print(
            "No real improvement found: no proposal scored better than the current agent on "
            "the training tickets, so the agent is unchanged."
        )
    elif not improved:
        console.print(
            "No real improvement found: the search kept a change that scored better on the "
            "training tickets, but the agent does no better on the held-out tickets."
        )
    else:
        console.print("[bold]Improvement found.[/bold] What changed:")
    for name, value in changes.items():
        code = _is_code(name)
        label = "route() now" if code else f"{name} now"
        if improved:
            console.print(f"{label}:", markup=False)
            console.print(str(value).rstrip() if code else repr(value), markup=False)
        else:
            console.print(f"  (kept by the search, not an improvement) {label}: {value!r}")
    return improved


def _is_code(name: str) -> bool:
    """Whether a parameter-set key is the code of a trainable function (here: route)."""
    return is_code_name(name) or name.split(".")[-1] == "route"


def show_summary(steps: list[Any], start: dict[str, Any]) -> None:
    """One table for the whole run: the scores of every step and the change it kept."""
    table = Table(title="Steps (scores are means: train batch, validation, held-out test)")
    for column in ("step", "train", "validation", "test", "change kept"):
        table.add_column(column, justify="right" if column != "change kept" else "left")
    previous = start
    for step in steps:
        scores = step.scores
        shown = [
            f"{scores[k]:.3f}" if scores.get(k) is not None else "-"
            for k in ("train", "validation", "test")
        ]
        changes = changed_parameters(previous, step.parameters)
        kept = ", ".join(
            "route()" if _is_code(name) else f"{name} = {value!r}"
            for name, value in changes.items()
        )
        table.add_row(str(step.iteration), *shown, Text(kept or "none"))
        previous = step.parameters
    console.print(table)


def show_usage(usage: dict[str, Any]) -> None:
    cost = f"${usage['cost_usd']:.4f}"
    if usage.get("unknown_cost_calls"):
        cost += f" (+{usage['unknown_cost_calls']} calls at an unknown price)"
    console.print(
        f"LLM usage: {usage['calls']} calls, {usage['prompt_tokens']} prompt + "
        f"{usage['completion_tokens']} completion = {usage['total_tokens']} tokens, {cost}"
    )


def write_trace_graph(agent: SupportAgent, guide: Guide, ticket: dict[str, str], out: Path) -> None:
    """Run one ticket, send its feedback back through the graph and draw that graph."""
    reply = agent(ticket["question"])
    _, feedback = guide(ticket["question"], reply.data, ticket["team"])
    digraph = reply.backward(feedback, visualize=True)
    dot_path = out / "trace_graph.dot"
    dot_path.write_text(digraph.source, encoding="utf-8")
    console.print(f"Trace graph: {dot_path}")
    dot = shutil.which("dot")
    if dot is None:
        console.print("(install Graphviz's `dot` program to also get trace_graph.svg)")
        return
    svg_path = out / "trace_graph.svg"
    done = subprocess.run(
        [dot, "-Tsvg", str(dot_path), "-o", str(svg_path)], capture_output=True, text=True
    )
    if done.returncode == 0:
        console.print(f"Trace graph: {svg_path}")
    else:  # the SVG is a bonus; the DOT file is written
        console.print(f"(dot could not render the SVG: {done.stderr.strip()})", markup=False)


def write_plot(history: list[dict[str, Any]], test_scores: list[dict[str, Any]], out: Path) -> None:
    """Score per step (train batch, validation, held-out test) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("(install matplotlib to get scores.png: uv sync --group examples)")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    series = {
        "train batch": [(h["step"], h["scores"].get("train")) for h in history],
        "validation (best kept)": [(h["step"], h["scores"].get("validation")) for h in history],
        "held-out test": [(t["step"], t["score"]) for t in test_scores],
    }
    styles = {"train batch": "o-", "validation (best kept)": "s--", "held-out test": "^-"}
    for label, points in series.items():
        points = [(s, v) for s, v in points if v is not None]
        if points:
            ax.plot(*zip(*points), styles[label], label=label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("step")
    ax.set_ylabel("mean score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("opto quickstart: score per step")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / "scores.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    console.print(f"Score plot: {path}")


def quickstart_runs(url: str) -> list[str]:
    """The names of this script's runs in the storage at `url`, oldest first (the storage
    may hold other programs' runs too)."""
    with open_storage(url) as storage:
        return [r.name for r in storage.list_runs() if r.name.startswith(f"{RUN_PREFIX}-")]


def new_run_name() -> str:
    """A fresh run name: the prefix and the UTC time."""
    return f"{RUN_PREFIX}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S.%f}"


def inspect_runs(url: str) -> int:
    """Print the runs kept in the storage at `url` and the steps of the latest quickstart run."""
    with open_storage(url) as storage:
        runs = storage.list_runs()
        ours = [r for r in runs if r.name.startswith(f"{RUN_PREFIX}-")]
        if not ours:
            console.print(f"No quickstart runs in {url} yet: run the quickstart first.")
            return 1
        table = Table(title=f"Runs in {url}")
        for column in ("run", "status", "created (UTC)"):
            table.add_column(column, overflow="fold")
        for run in runs:
            created = run.created_at.strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(run.name, run.status.value, created)
        console.print(table)
        latest = ours[-1]
        steps = Table(title=f"Steps of {latest.name}")
        for column in ("step", "scores", "closing line"):
            steps.add_column(column)
        for step in storage.list_steps(latest.name):
            closing = next((v for k, v in step.parameters.items() if "closing" in k), "")
            scores = ", ".join(f"{k}={v:.3f}" for k, v in step.scores.items() if v is not None)
            steps.add_row(str(step.iteration), scores, Text(repr(closing)))
        console.print(steps)
    return 0


# -- main -------------------------------------------------------------------------------------


def rerun_command(args: argparse.Namespace, kind: str, *extra: str) -> str:
    """The command that runs this script again with the options of this run, plus `extra`."""
    hosted = kind == "configured" and args.llm is not None
    command = [
        "uv run --locked --all-packages --extra litellm examples/quickstart.py"
        if hosted
        else "uv run --locked --all-packages --extra local examples/quickstart.py"
    ]
    if args.llm is not None:
        command += ["--llm", args.llm]
    if args.proposals != DEFAULT_PROPOSALS:
        command += ["--proposals", str(args.proposals)]
    if args.output.resolve() != (HERE / "output").resolve():
        command += ["--output", shlex.quote(str(args.output))]
    return " ".join([*command, *extra])


#: Closing lines the embedded model chooses from (a 135M model cannot write one that a
#: person would accept, but it can pick one; the rubric and the search judge the pick).
CLOSING_CHOICES = (
    "Stop writing to us, we are busy.",
    "Thank you for contacting Acme!",
    "See you.",
    "Thanks for your patience, we are on it.",
    "Please do not reply to this message.",
    "Thank you for your message, have a great day!",
)


def make_optimizer(agent: SupportAgent, llm: Any, kind: str) -> OptoPrime:
    """OptoPrime; for the embedded model CompactOptoPrime, whose short prompt a tiny model
    can follow, choosing the closing line from CLOSING_CHOICES instead of writing one."""
    if kind == "local":
        choices = {agent.closing: CLOSING_CHOICES}
        return CompactOptoPrime(agent.parameters(), llm=llm, choices=choices, **OPTIMIZER_OPTIONS)
    return OptoPrime(agent.parameters(), llm=llm, **OPTIMIZER_OPTIONS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--llm",
        metavar="MODEL",
        help="a model name (e.g. gpt-4o-mini), 'local' for the embedded model, or 'scripted' "
        "for a scripted stand-in (no model); default: OPTO_LLM_MODEL / a provider key, else "
        "the embedded model",
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimization steps")
    parser.add_argument(
        "--proposals", type=int, default=DEFAULT_PROPOSALS, help="proposals per step"
    )
    parser.add_argument("--output", type=Path, default=HERE / "output", help="output folder")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=LATEST,
        metavar="RUN",
        help="continue a quickstart run, by default the latest one (up to --steps in all)",
    )
    parser.add_argument("--inspect", action="store_true", help="show the stored runs and exit")
    parser.add_argument(
        "--storage",
        help="run storage URL or SQLite file (default: $OPTO_STORAGE_URL, else ./opto-runs.db, "
        "where opto-runs looks)",
    )
    args = parser.parse_args(argv)

    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage_url = storage_url_of(args.storage) if args.storage else default_storage_url()
    if args.inspect:
        return inspect_runs(storage_url)
    run_name = new_run_name()
    if args.resume is not None:
        known = quickstart_runs(storage_url)
        if not known:
            console.print(f"No quickstart run in {storage_url} to resume: run without --resume.")
            return 1
        run_name = known[-1] if args.resume == LATEST else args.resume
    # Library warnings (e.g. rejected code suggestions) go to a log file, not the screen.
    logging.basicConfig(
        filename=out / "quickstart.log",
        level=logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )

    data = json.loads(DATA.read_text(encoding="utf-8"))
    train = {
        "inputs": [t["question"] for t in data["train"]],
        "infos": [t["team"] for t in data["train"]],
    }
    test = data["test"]

    try:
        llm, llm_label, llm_kind = choose_llm(args.llm)
    except (LLMConfigurationError, ImportError) as exc:
        console.print(str(exc), markup=False)
        console.print(
            "Or run this script with the embedded model: uv run --locked --all-packages "
            "--extra local examples/quickstart.py (or --llm scripted for no model at all).",
            markup=False,
        )
        return 2
    console.print(f"[bold]opto quickstart[/bold] — optimizer LLM: {llm_label}")
    agent, guide = SupportAgent(), SupportGuide()
    start = SupportAgent().state_dict()
    optimizer = make_optimizer(agent, llm, llm_kind)
    # A progress bar while it runs; one summary table at the end instead of one per step.
    logger = ConsoleLogger(verbose=True, table=False)
    trainer = BasicSearchAlgorithm(agent, optimizer, num_threads=4, logger=logger, seed=0)

    before = held_out_scores(SupportAgent(), guide, test)
    started = time.perf_counter()
    result = trainer.train(
        guide,
        train,
        batch_size=BATCH_SIZE,
        num_epochs=math.ceil(args.steps * BATCH_SIZE / len(train["inputs"])),
        max_steps=args.steps,
        num_proposals=args.proposals,
        validate_dataset=train,
        test_dataset={"inputs": [t["question"] for t in test], "infos": [t["team"] for t in test]},
        storage=storage_url,
        run_name=run_name,
        resume=args.resume is not None,
        # The run storage is this script's own file: resuming may run the code it trained.
        trust_code=args.resume is not None,
        verbose=True,
    )
    elapsed = time.perf_counter() - started
    after = held_out_scores(agent, guide, test)

    console.rule("Result")
    console.print(
        f"{result.n_iters} steps in all ({result.stopped}); this run took {elapsed:.0f} s"
    )
    with open_storage(storage_url) as storage:
        show_summary(storage.list_steps(result.run_name), start)
    mean_before, mean_after = show_before_after(test, before, after)
    show_outcome(changed_parameters(start, agent.state_dict()), mean_before, mean_after)
    show_usage(result.usage)
    console.print(f"Run stored in {result.storage_url} as {result.run_name!r}")
    more = f"--resume {result.run_name} --steps {result.n_iters + DEFAULT_STEPS}"
    where = "" if storage_url == default_storage_url() else f"--storage {storage_url}"
    extra = [where] if where else []
    console.print(f"  continue it: {rerun_command(args, llm_kind, more, *extra)}", markup=False)
    runs_cli = " ".join(["opto-runs", *extra, "show", str(result.run_name)])
    console.print(f"  inspect it:  {runs_cli}", markup=False)
    console.print(
        f"           or  {rerun_command(args, llm_kind, '--inspect', *extra)}", markup=False
    )
    console.print(
        "  or in Python: opto.utils.storage.open_storage(url).list_steps(run_name)", markup=False
    )
    write_trace_graph(agent, guide, test[0], out)
    write_plot(result.history, result.test_scores, out)
    console.print(f"Log of the optimizer's decisions: {out / 'quickstart.log'}")
    if llm_kind == "local":
        console.print(
            "\n[bold]Note:[/bold] the embedded model is tiny (135M parameters): it gets a short "
            "prompt, the search samples several proposals per step and keeps one only when it "
            "scores better, and most steps keep nothing. A stronger model does far better — "
            "set OPTO_LLM_MODEL or pass --llm gpt-4o-mini (with OPENAI_API_KEY) and it fixes "
            "route() too."
        )
    elif llm_kind == "scripted":
        console.print(
            "\n[bold]Note:[/bold] these were scripted proposals. Run without --llm scripted "
            "to optimize with a real model (the embedded one when nothing is configured)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
