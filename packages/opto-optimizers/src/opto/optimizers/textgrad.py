"""TextGrad: textual gradients over the trace graph.

Feedback on the output is turned into criticism ("gradients") of each node on the paths
from the trainable parameters to the output, one LLM call per edge, walking the graph
backwards; a node used several times gets its gradients summarized first. Each trainable
parameter is then rewritten by an update call that reads its gradient and returns the new
value between ``<IMPROVED_VARIABLE>`` tags. Gradients are plain text; independent calls
(the parents of one node, the updates) run concurrently.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from opto.optimizers.code_proposals import restrict_parameters
from opto.optimizers.conversion import ConversionError, Converter, convert_suggestion
from opto.optimizers.llm_calls import LLMRequest, chat_messages, check_llm, send_all
from opto.optimizers.optimizer import Optimizer
from opto.optimizers.parsing import is_terminate
from opto.optimizers.utils import drop_oldest, jsonable, truncate_expression
from opto.optimizers.xml_parsing import extract_first_top_level_block
from opto.trace.nodes import Node, ParameterNode
from opto.trace.propagators import TraceGraph
from opto.trace.utils import is_code_name

__all__ = ["TextGrad"]

logger = logging.getLogger(__name__)

IMPROVED_START = "<IMPROVED_VARIABLE>"
IMPROVED_END = "</IMPROVED_VARIABLE>"

_GRADIENT_SYSTEM = (
    "You are the gradient engine of an optimization system that improves a program with "
    "textual feedback. You are shown one operation of the program, the variable that was "
    "one of its inputs, the output it produced and feedback on that output. Explain, "
    "concisely and concretely, how the variable should change so that the output better "
    "meets the objective. Criticise only; do not write a complete new value.\n"
    "Tags: <OBJECTIVE> the goal; <ROLE> what the variable is; <OPERATION> the call and "
    "its documentation; <INPUTS> all inputs of the call; <OUTPUT> its result; <FEEDBACK> "
    "feedback on the output; <VARIABLE> the value to criticise."
)
_REDUCE_SYSTEM = (
    "You combine several pieces of feedback on the same variable into one. Keep every "
    "distinct, actionable point, merge duplicates, and resolve contradictions in favour of "
    "the objective. Reply with the combined feedback only."
)
_UPDATE_SYSTEM = (
    "You improve one variable of a program using textual feedback on it. The feedback may "
    "be noisy: act on what matters for the objective. Reply with the complete improved "
    f"value between {IMPROVED_START} and {IMPROVED_END}, nothing else inside the tags. "
    "Keep the variable's type: a number stays a number, a list a list (as a literal). A "
    "value of type code must be a complete Python function definition with the same name "
    "and parameters. If the variable needs no change, reply with just TERMINATE."
)


def _type_name(node: Node) -> str:
    return "code" if is_code_name(node.py_name) else type(node._data).__name__


def _function_name(node: Node) -> str:
    info = node.info
    if isinstance(info, dict) and info.get("fun_name") is not None:
        return str(info["fun_name"])
    return node.name.split(":")[0]


def _improved_value(reply: str) -> str | None:
    """The text between the IMPROVED_VARIABLE tags (an unclosed final tag runs to the end)."""
    inner = extract_first_top_level_block(reply, "IMPROVED_VARIABLE")
    if inner is None:
        opener = re.search(r"<\s*IMPROVED_VARIABLE\s*>", reply, re.IGNORECASE)
        if opener is None:
            return None
        inner = reply[opener.end() :]
    return inner.strip()


class TextGrad(Optimizer):
    """Textual-gradient descent on the trace graph (the reference's ``TextGrad``, working).

    Args:
        parameters: the ParameterNodes to optimize.
        llm: any callable of the opto.utils LLM protocol; ``opto.utils.llm.LLM()``, built at the first call, when None.
        propagator: the feedback propagator (must give TraceGraphs; GraphPropagator default).
        objective: the goal stated in every prompt; :attr:`default_objective` when None.
        max_tokens: ``max_tokens`` of every LLM call.
        log: keep :attr:`log`, one entry per step with every call's prompt and reply.
        max_workers: how many LLM calls run at once.
        max_value_chars: longest value shown in a prompt (the variable being updated is
            always shown in full).
        forbidden_modules / forbidden_calls: asking for either runs trainable code restricted
            (RestrictedPython, ``opto-trace[sandbox]``) and rejects proposals using them;
            see docs/security.md.
        converters: ``{type: fn(old, new)}`` conversions tried before the built-in ones.
        max_history: how many step records :attr:`steps` (and :attr:`log`) keep.
    """

    default_objective = "Improve the variables so that the output satisfies the feedback."

    def __init__(
        self,
        parameters: Iterable[ParameterNode],
        llm: Any = None,
        *args: Any,
        max_workers: int = 4,
        objective: str | None = None,
        max_tokens: int = 4096,
        log: bool = True,
        max_value_chars: int = 2000,
        forbidden_modules: Collection[str] = (),
        forbidden_calls: Collection[str] = (),
        converters: Mapping[type, Converter] | None = None,
        max_history: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(parameters, *args, max_history=max_history, **kwargs)
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}.")
        check_llm(llm)
        self.llm = llm  # None: LLM() on first use
        self.objective = objective if objective is not None else self.default_objective
        self.max_tokens = max_tokens
        self.max_workers = max_workers
        self.max_value_chars = max_value_chars
        self.forbidden_modules, self.forbidden_calls = restrict_parameters(
            self.parameters, forbidden_modules, forbidden_calls
        )
        self.converters = dict(converters or {})
        self.log: list[dict[str, Any]] | None = [] if log else None
        self.gradients: dict[str, str] = {}

    # --- LLM calls --------------------------------------------------------------------

    def _ask_all(
        self, requests: Sequence[tuple[str, str, str, str]], calls: list[dict[str, Any]]
    ) -> list[str]:
        """Run ``(kind, node, system, user)`` requests concurrently; texts in order.

        Usage is added to the step record and every call to ``calls`` (for the log); the
        first failure is raised once all requests have finished.
        """
        jobs = [
            LLMRequest(
                messages=chat_messages(system, user), options={"max_tokens": self.max_tokens}
            )
            for _, _, system, user in requests
        ]
        responses = send_all(
            jobs, llm=self.llm, on_call=self._count_call, max_workers=self.max_workers
        )
        texts = []
        for (kind, name, system, user), response in zip(requests, responses):
            text = response.content or ""  # type: ignore[union-attr]
            texts.append(text)
            calls.append(
                {"kind": kind, "node": name, "system": system, "user": user, "response": text}
            )
        return texts

    # --- prompts ----------------------------------------------------------------------

    def _show(self, node: Node) -> str:
        return truncate_expression(node._data, self.max_value_chars)

    def _role(self, node: Node) -> str:
        if node.parents:
            return f"an intermediate result of {_function_name(node)}: {node.description or ''}"
        return node.description or f"the value {node.py_name}"

    def gradient_prompt(self, parent: Node, child: Node, feedback: str) -> str:
        """The user prompt asking how ``parent`` should change, given feedback on ``child``."""
        arguments = ", ".join(f"{key}={value.py_name}" for key, value in child._inputs.items())
        inputs = "\n".join(
            f"({_type_name(value)}) {value.py_name}={self._show(value)}"
            for value in child._inputs.values()
        )
        return (
            f"<OBJECTIVE>{self.objective}</OBJECTIVE>\n"
            f"<ROLE>{self._role(parent)}</ROLE>\n"
            f"<OPERATION>{child.py_name} = {_function_name(child)}({arguments})\n"
            f"{child.description or ''}</OPERATION>\n"
            f"<INPUTS>\n{inputs}\n</INPUTS>\n"
            f"<OUTPUT>({_type_name(child)}) {child.py_name}={self._show(child)}</OUTPUT>\n"
            f"<FEEDBACK>{feedback}</FEEDBACK>\n"
            f"<VARIABLE>({_type_name(parent)}) {parent.py_name}={self._show(parent)}</VARIABLE>\n"
            f"How should {parent.py_name} change so that the output better meets the "
            "objective and the feedback? Give feedback on this variable only."
        )

    def reduce_prompt(self, node: Node, gradients: Sequence[str]) -> str:
        """The user prompt combining several gradients of ``node`` into one."""
        blocks = "\n".join(f"<FEEDBACK>{g}</FEEDBACK>" for g in gradients)
        return (
            f"<OBJECTIVE>{self.objective}</OBJECTIVE>\n"
            f"<ROLE>{self._role(node)}</ROLE>\n"
            f"Feedback on {node.py_name} from each place it was used:\n{blocks}\n"
            "Combine it into one piece of feedback."
        )

    def update_prompt(self, parameter: ParameterNode, gradient: str) -> str:
        """The user prompt asking for the improved value of ``parameter``."""
        constraint = (
            f"<CONSTRAINTS>{parameter.description}</CONSTRAINTS>\n" if parameter.description else ""
        )
        return (
            f"<OBJECTIVE>{self.objective}</OBJECTIVE>\n"
            f"<ROLE>{self._role(parameter)}</ROLE>\n"
            f'<VARIABLE name="{parameter.py_name}" type="{_type_name(parameter)}">\n'
            f"{parameter._data}\n</VARIABLE>\n"
            f"<FEEDBACK>{gradient}</FEEDBACK>\n"
            f"{constraint}"
            f"Improve {parameter.py_name} using the feedback. Send the complete improved value "
            f"between {IMPROVED_START} and {IMPROVED_END}."
        )

    # --- the step ---------------------------------------------------------------------

    def _feedback_graph(self) -> TraceGraph | None:
        total = self._aggregated_feedback()
        return total if total is not None and total.graph else None

    def _backward(
        self, items: Sequence[Node], feedback: str, calls: list[dict[str, Any]]
    ) -> dict[int, str]:
        """Gradients of the nodes on paths from a trainable parameter to an output."""
        members = {id(node) for node in items}
        trainable = {id(p) for p in self.trainable_parameters}
        relevant: set[int] = set()
        has_child: set[int] = set()
        for node in items:  # topological: parents first
            parents = [p for p in node.parents if id(p) in members]
            has_child.update(id(p) for p in parents)
            if id(node) in trainable or any(id(p) in relevant for p in parents):
                relevant.add(id(node))
        pending: dict[int, list[str]] = defaultdict(list)
        for node in items:
            if id(node) in relevant and id(node) not in has_child:
                pending[id(node)].append(feedback)  # an output: the user's feedback
        final: dict[int, str] = {}
        for node in reversed(items):
            grads = pending.get(id(node))
            if not grads:
                continue
            if len(grads) == 1:
                final[id(node)] = grads[0]
            else:
                prompt = self.reduce_prompt(node, grads)
                (final[id(node)],) = self._ask_all(
                    [("reduce", node.py_name, _REDUCE_SYSTEM, prompt)], calls
                )
            parents = [p for p in node.parents if id(p) in relevant]
            requests = [
                (
                    "gradient",
                    p.py_name,
                    _GRADIENT_SYSTEM,
                    self.gradient_prompt(p, node, final[id(node)]),
                )
                for p in parents
            ]
            for parent, text in zip(parents, self._ask_all(requests, calls)):
                pending[id(parent)].append(text)
        return final

    def _convert(self, parameter: ParameterNode, text: str) -> Any:
        return convert_suggestion(
            parameter,
            text,
            forbidden_modules=self.forbidden_modules,
            forbidden_calls=self.forbidden_calls,
            converters=self.converters,
        )

    def _step(
        self, verbose: bool | str = False, *args: Any, **kwargs: Any
    ) -> dict[ParameterNode, Any]:
        record = self.current_step
        graph = self._feedback_graph()
        if graph is None:
            record.skipped = "no trainable parameter received feedback; call backward() first"
            logger.warning("TextGrad.step: %s.", record.skipped)
            return {}
        calls: list[dict[str, Any]] = []
        feedback = str(graph.user_feedback)
        try:
            final = self._backward([node for _, node in graph.graph], feedback, calls)
            targets = [p for p in self.trainable_parameters if id(p) in final]
            self.gradients = {p.py_name: final[id(p)] for p in targets}
            requests = [
                ("update", p.py_name, _UPDATE_SYSTEM, self.update_prompt(p, final[id(p)]))
                for p in targets
            ]
            replies = self._ask_all(requests, calls)
        finally:
            self._log(calls, verbose)
        record.system_prompt = _UPDATE_SYSTEM
        record.user_prompt = "\n\n".join(user for _, _, _, user in requests)
        record.raw_reply = "\n\n".join(replies)
        record.reasoning = "\n".join(f"{name}: {text}" for name, text in self.gradients.items())
        update: dict[ParameterNode, Any] = {}
        for parameter, reply in zip(targets, replies):
            if is_terminate(reply):
                continue
            text = _improved_value(reply)
            if text is None:
                record.parse_error = f"the reply for {parameter.py_name} has no {IMPROVED_START}"
                self._reject(parameter.py_name, f"the reply has no {IMPROVED_START} block")
                logger.warning("TextGrad: %s; reply: %.300r", record.parse_error, reply)
                continue
            record.suggestion[parameter.py_name] = text
            try:
                update[parameter] = self._convert(parameter, text)
            except ConversionError as error:
                logger.warning("Rejected the suggestion for %s: %s", parameter.py_name, error)
                self._reject(parameter.py_name, str(error))
        if replies and all(is_terminate(reply) for reply in replies):
            record.terminated = True
        return update

    def _log(self, calls: list[dict[str, Any]], verbose: bool | str) -> None:
        if verbose:
            for call in calls:
                if verbose != "output":
                    logger.info(
                        "TextGrad %s prompt for %s:\n%s", call["kind"], call["node"], call["user"]
                    )
                logger.info(
                    "TextGrad %s reply for %s:\n%s", call["kind"], call["node"], call["response"]
                )
        if self.log is not None:
            self.log.append({"step": self.step_count, "calls": calls})
            drop_oldest(self.log, self.max_history)

    # --- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Base state plus the log and the last gradients (JSON-able)."""
        state = super().state_dict()
        state.update(
            log=None if self.log is None else jsonable(self.log),
            gradients=dict(self.gradients),
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        super().load_state_dict(state)
        if self.log is not None and state.get("log") is not None:
            self.log[:] = state["log"]
        self.gradients = dict(state.get("gradients") or {})
