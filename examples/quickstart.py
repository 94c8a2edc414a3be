"""Quickstart: trace a small agent, give it feedback, and see what an optimizer would read.

Run it with `uv run --locked examples/quickstart.py` (see the README). It needs no LLM and
no network: it builds the trace graph of a tiny support agent over a few examples, scores
the answers, propagates the feedback back through the graph, and shows the compact view of
that graph that opto's optimizers put into their prompts. It writes the graph as DOT text
(and SVG when graphviz's `dot` program is installed) to `examples/output/`.

The optimizers (OptoPrime, TextGrad, OPRO) that rewrite the trainable prompt and code from
this feedback ship in `opto-optimizers`; the training loops in `opto-trainers`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from opto import trace
from opto.trace import operators as ops
from opto.trace.propagators import GraphPropagator, node_to_function_feedback

HERE = Path(__file__).parent
DATA = HERE / "data" / "support_questions.json"


@trace.model
class SupportAgent:
    """Answers customer questions with a greeting, a canned reply and a sign-off."""

    def __init__(self) -> None:
        self.greeting = trace.node(
            "Hello.", name="greeting", trainable=True, description="Opening line of every reply."
        )

    @trace.bundle(trainable=True)
    def route(self, question):
        """Pick the team that should answer the question: 'billing' or 'tech'."""
        return "billing" if "invoice" in question.lower() else "tech"

    def forward(self, question):
        team = self.route(question)
        body = ops.format("Our {team} team will get back to you.", team=team)
        return self.greeting + " " + body


def score(reply: str, expected_team: str) -> tuple[float, str]:
    """The guide: 1.0 when the reply names the expected team, with a sentence of feedback."""
    if expected_team in reply:
        return 1.0, "Correct team."
    return 0.0, f"Wrong team: this question belongs to the {expected_team} team."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "output", help="where to write")
    args = parser.parse_args(argv)

    examples = json.loads(DATA.read_text(encoding="utf-8"))
    agent = SupportAgent()
    print(f"Trainable parameters: {[p.py_name for p in agent.parameters()]}")

    # Forward: one traced run per example; combine the outputs so one backward covers all.
    outputs, feedbacks, total = [], [], 0.0
    for example in examples:
        reply = agent(example["question"])
        value, feedback = score(reply.data, example["team"])
        total += value
        outputs.append(reply)
        feedbacks.append(f"{example['question']!r} -> {reply.data!r}: {feedback}")
        print(f"  {value:.0f}  {example['question']:<45} -> {reply.data}")
    print(f"Score: {total:.0f}/{len(examples)}")

    batch = ops.make_list(*outputs)
    propagator = GraphPropagator()
    digraph = batch.backward("\n".join(feedbacks), propagator=propagator, visualize=True)

    # What an optimizer reads: the feedback each trainable parameter received, as code.
    trace_graph = sum(propagator.aggregate(p.feedback) for p in agent.parameters())
    summary = node_to_function_feedback(trace_graph)
    print("\nThe graph as an optimizer sees it:")
    for _, line in summary.graph[:8]:
        print(f"  {line}")
    if len(summary.graph) > 8:
        print(f"  ... ({len(summary.graph) - 8} more lines)")
    print(f"Feedback:\n  {summary.user_feedback.replace(chr(10), chr(10) + '  ')}")

    args.output.mkdir(parents=True, exist_ok=True)
    dot_path = args.output / "trace_graph.dot"
    dot_path.write_text(digraph.source, encoding="utf-8")
    print(f"\nWrote {dot_path}")
    if shutil.which("dot"):
        svg = digraph.render(str(args.output / "trace_graph"), format="svg", cleanup=True)
        print(f"Wrote {svg}")
    else:
        print("(install graphviz's `dot` program to render it as SVG)")
    print(
        "\nNext: opto-optimizers turns this feedback into new values for the trainable "
        "greeting and the code of `route`; opto-trainers runs that loop over a dataset."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
