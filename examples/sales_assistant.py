"""A sales assistant that greets customers in their language, by name.

The agent of the Trace README: two trainable instructions (one asks an LLM for the
customer's language, the other for their name) and two trainable functions (`decide_lang`
turns the LLM's answer into a language code, `greet` writes the greeting). At first
`decide_lang` returns nothing and `greet` always says "Hola". MinibatchAlgorithm with
OptoPrime rewrites all four from feedback on six English and Spanish messages, two per step.

    uv run examples/sales_assistant.py                 # the configured or embedded LLM
    uv run examples/sales_assistant.py --llm gpt-4o-mini
    uv run examples/sales_assistant.py --llm scripted  # offline, deterministic stand-in

The embedded model (SmolLM2-135M) rarely gets this right; a real model does in a step or
two. `--llm scripted` plays both the agent's LLM and the optimizer's, reading the prompts,
so the example (and its test) run offline in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from opto import trace
from opto.optimizers import OptoPrime
from opto.trace import operators as ops
from opto.trainers import FunctionGuide, MinibatchAlgorithm

#: (customer message, {"lang": ..., "name": ...}) pairs.
MESSAGES: list[tuple[str, dict[str, str]]] = [
    ("Hola, soy Juan.", {"lang": "es", "name": "Juan"}),
    ("Hi, I'm Anna. Do you ship to Canada?", {"lang": "en", "name": "Anna"}),
    ("Buenos días, me llamo Lucía y busco un portátil.", {"lang": "es", "name": "Lucía"}),
    ("Hello there, my name is Tom.", {"lang": "en", "name": "Tom"}),
    ("Good evening, this is Priya from Acme.", {"lang": "en", "name": "Priya"}),
    ("Buenas tardes, habla Carlos.", {"lang": "es", "name": "Carlos"}),
]

GREETING = {"en": "Hello", "es": "Hola"}
#: Token cap of the agent's LLM replies (a language or a name; keeps small models short).
MAX_REPLY = 60


@trace.model
class SalesAgent:
    """Greets a customer: asks the LLM for the language and the name, then greets."""

    def __init__(self, llm: Any, system_prompt: str = "You are a sales assistant.") -> None:
        self.llm = llm
        self.system_prompt = system_prompt
        self.instruct1 = trace.node(
            "Decide the language",
            trainable=True,
            description="Instruction to the LLM for finding the customer's language.",
        )
        self.instruct2 = trace.node(
            "Extract name if it's there",
            trainable=True,
            description="Instruction to the LLM for finding the customer's name.",
        )

    def forward(self, user_query: str) -> Any:
        response = ops.call_llm(
            self.llm, self.system_prompt, self.instruct1, user_query, max_tokens=MAX_REPLY
        )
        en_or_es = self.decide_lang(response)
        user_name = ops.call_llm(
            self.llm, self.system_prompt, self.instruct2, user_query, max_tokens=MAX_REPLY
        )
        return self.greet(en_or_es, user_name)

    @trace.bundle(trainable=True)
    def decide_lang(self, response):
        """Map the LLM's answer about the language to a language code ('en' or 'es')."""
        return

    @trace.bundle(trainable=True)
    def greet(self, lang, user_name):
        """Produce a greeting in the customer's language ('en' or 'es') with their name."""
        greeting = "Hola"
        return f"{greeting}, {user_name}!"


def feedback(query: str, response: str, reference: dict[str, str]) -> tuple[float, str]:
    """Half a point for greeting in the right language, half for the right name."""
    word, name = GREETING[reference["lang"]], reference["name"]
    problems = []
    if not response.startswith(f"{word},"):
        problems.append(f"the customer wrote in {reference['lang']!r}: greet with {word!r}")
    if not response.endswith(f" {name}!"):
        problems.append(f"address the customer by name only, as in '{word}, {name}!'")
    score = 1.0 - 0.5 * len(problems)
    if not problems:
        return score, "Correct."
    return score, f"Incorrect: {'; '.join(problems)}."


def train(llm: Any, *, epochs: int = 2, verbose: bool = False) -> dict[str, Any]:
    """Train a fresh agent: the test score before and after each step, the final
    parameters, the final greetings and the LLM usage."""
    agent = SalesAgent(llm)
    # Prompts stay within a small context window (the embedded model has 4096 tokens).
    optimizer = OptoPrime(agent.parameters(), llm=llm, max_prompt_tokens=2000, max_tokens=1024)
    trainer = MinibatchAlgorithm(agent, optimizer, num_threads=4, seed=0)
    data = {"inputs": [m for m, _ in MESSAGES], "infos": [r for _, r in MESSAGES]}
    result = trainer.train(
        FunctionGuide(feedback),
        data,
        num_epochs=epochs,
        batch_size=2,
        test_dataset=data,
        verbose=verbose,
    )
    with trace.stop_tracing():
        greetings = {message: _greet(agent, message) for message, _ in MESSAGES}
    return {
        "scores": [entry["score"] for entry in result.test_scores],
        "parameters": result.final_parameters,
        "greetings": greetings,
        "usage": result.usage,
    }


def _greet(agent: SalesAgent, message: str) -> str:
    """The agent's greeting, or the error its (learned) code raised."""
    try:
        return agent(message).data
    except trace.ExecutionError as error:
        return f"<error: {error.exception_node.data}>"


# --- a deterministic stand-in for a capable LLM (--llm scripted) ------------------------------

_NAME = re.compile(r"(?:soy|me llamo|habla|I'm|my name is|this is) (\w+)", re.IGNORECASE)
_SPANISH = re.compile(r"\b(hola|soy|me llamo|buenos|buenas|habla)\b", re.IGNORECASE)

_DECIDE_LANG = '''def decide_lang(self, response):
    """Map the LLM's answer about the language to a language code ('en' or 'es')."""
    return "es" if response.strip().lower().startswith("es") else "en"
'''

_GREET = '''def greet(self, lang, user_name):
    """Produce a greeting in the customer's language ('en' or 'es') with their name."""
    greeting = "Hola" if lang == "es" else "Hello"
    return f"{greeting}, {user_name}!"
'''


def _agent_reply(instruction: str, query: str) -> str:
    """The agent's LLM: terse when the instruction asks for one word, chatty otherwise."""
    spanish = bool(_SPANISH.search(query))
    if "language" in instruction.lower():
        if "only" in instruction:
            return "es" if spanish else "en"
        return f"The customer is writing in {'Spanish' if spanish else 'English'}."
    match = _NAME.search(query)
    name = match.group(1) if match else "there"
    return name if "only" in instruction else f"The customer's name is {name}."


def _optimizer_reply(prompt: str) -> str:
    """The optimizer's LLM: fixes the language first, then the name, reading #Feedback."""
    variables = prompt.split("\n#Variables\n", 1)[1].split("\n#Constraints\n", 1)[0]
    lines = re.findall(r"^\((?:code|str)\) (\w+)[=:](?:def )?(\w+)", variables, re.MULTILINE)
    by_role = {role: name for name, role in lines}  # e.g. "Decide" -> "str0", "greet" -> "__code1"
    feedback = prompt.split("#Feedback", 1)[-1]
    if "greet with" in feedback:
        reasoning = "decide_lang returns None and greet always says Hola; ask for a code."
        suggestion = {
            by_role["Decide"]: "Reply with only the language code of the message: en or es.",
            by_role["decide_lang"]: _DECIDE_LANG,
            by_role["greet"]: _GREET,
        }
    elif "by name" in feedback:
        reasoning = "The LLM answers with a sentence; ask for the name alone."
        suggestion = {by_role["Extract"]: "Reply with only the customer's first name."}
    else:
        return "TERMINATE"
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": suggestion})


def scripted_reply(messages: list[dict[str, Any]], **options: Any) -> str:
    """Plays the agent's LLM (3 messages) or the optimizer's (an OptoPrime prompt)."""
    if messages[0]["content"] == "You are a sales assistant.":
        return _agent_reply(messages[1]["content"], messages[2]["content"])
    return _optimizer_reply(messages[-1]["content"])


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
    parser.add_argument("--epochs", type=int, default=2, help="passes over the messages")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    llm = llm if llm is not None else make_llm(args.llm)
    result = train(llm, epochs=args.epochs, verbose=not args.quiet)
    print("\nScore after each step:", " -> ".join(f"{s:.2f}" for s in result["scores"]))
    print("\nLearned parameters:")
    for name, value in result["parameters"].items():
        print(f"  {name}: {value}")
    print("\nGreetings:")
    for message, greeting in result["greetings"].items():
        print(f"  {message!r:55} -> {greeting}")
    usage = result["usage"]
    print(f"\nLLM usage: {usage['calls']} calls, {usage['total_tokens']} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
