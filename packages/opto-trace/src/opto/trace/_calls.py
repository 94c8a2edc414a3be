"""The record step of a traced call: turn one call's outcome into its output node.

Every traced operator (a primitive of :mod:`opto.trace.primitives` or a bundled function)
calls in three steps: *bind* the arguments to input nodes (:mod:`opto.utils.signatures`),
*run* the function on their data while a :class:`~opto.trace._state.UsedNodes` frame records
the nodes it reads and creates, then *record* (:func:`record`): check external dependencies,
promote hidden parents, and create the :class:`MessageNode` (or the :class:`ExceptionNode`
raised inside an :class:`ExecutionError`). A :class:`CallRecord` carries one call through
these steps and is then kept, trimmed, as the lazy ``info`` of its output.
"""

from __future__ import annotations

import inspect
import linecache
import os
import textwrap
import traceback as traceback_module
import types
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from opto.trace._message import ExceptionNode, MessageNode, _new_message
from opto.trace._node import Node
from opto.trace._sources import extract_source
from opto.trace._state import _TRACING, USED_NODES, UsedNodes
from opto.trace.errors import ExecutionError, TraceMissingInputsError
from opto.utils.signatures import Plan

if TYPE_CHECKING:
    from collections.abc import Callable

    from opto.trace._node import ParameterNode

    class Operator(Protocol):
        """What :func:`record` needs from the operator that ran (a primitive or a FunModule)."""

        description: str
        output_name: str | None
        traceable_code: bool
        allow_external_dependencies: bool
        _op_name: str
        _qualname: str
        _process_inputs: bool

        @property
        def parameter(self) -> ParameterNode[Any] | None: ...

        @property
        def trainable(self) -> bool: ...

        def _static_info(self) -> dict[str, Any]: ...

        def _source(self) -> tuple[str, int | None, str | None, bool]: ...

        def build_info(self, n: Node[Any]) -> dict[str, Any]: ...


__all__ = [
    "CallRecord",
    "OperatorInfo",
    "RunStep",
    "error_comment",
    "exception_data",
    "input_node",
    "record",
]

#: Global override of every operator's ``allow_external_dependencies`` (None = per operator).
#: Set through :func:`opto.trace.bundle.disable_external_dependencies_check`.
ALLOW_EXTERNAL_DEPENDENCIES: bool | None = None

_TRACE_DIR = os.path.dirname(os.path.abspath(__file__))
#: The frame of calls that neither read nor create nodes (primitive operators).
NO_FRAME = UsedNodes()
#: Raw functions currently executing with ``overwrite_python_recursion`` (per context).
RUNNING: ContextVar[tuple[Any, ...]] = ContextVar("opto_trace_running_bundles", default=())


def input_node(value: Any, name: str | None) -> Node[Any]:
    """The node standing for the non-Node argument ``value`` (named ``name`` when given).

    Objects with a ``__trace_input__()`` method (a bundled function: its ``__code``
    parameter) choose their own node; anything else is wrapped into a new Node.
    """
    own = getattr(type(value), "__trace_input__", None)
    return own(value) if own is not None else Node(value, name=name)


class OperatorInfo:
    """Static ``info`` of an operator's outputs: its function's name, doc, source, signature.

    Mixed into the primitive operators and ``FunModule``; needs ``_fun``, ``_qualname``,
    ``_fun_name``, ``_doc``, ``_plan``, ``_static`` and ``_source_cache`` attributes.
    """

    __slots__ = ()

    _fun: Any
    _qualname: str
    _fun_name: str
    _doc: str
    _plan: Plan | None
    _static: dict[str, Any] | None
    _source_cache: tuple[str, int | None, str | None, bool] | None

    def _source(self) -> tuple[str, int | None, str | None, bool]:
        """(source, line_number, file, found): decorator-stripped source, cached."""
        if self._source_cache is None:
            self._source_cache = extract_source(self._fun, self._qualname)
        return self._source_cache

    def _static_info(self) -> dict[str, Any]:
        if self._static is None:
            source, line_number, file, _ = self._source()
            try:
                signature: Any = inspect.signature(self._fun)
            except (TypeError, ValueError):
                signature = None
            self._static = {
                "fun": None,
                "fun_name": self._qualname,
                "_fun_name": self._fun_name,
                "doc": self._doc,
                "signature": signature,
                "source": source,
                "line_number": line_number,
                "file": file,
                "error_comment": None,
                "traceback": None,
                "output": None,
                "inputs": {"args": [], "kwargs": {}},
                "external_dependencies": None,
            }
        info = dict(self._static)
        info["inputs"] = {"args": [], "kwargs": {}}
        return info

    def build_info(self, n: Node[Any]) -> dict[str, Any]:
        """Info dict of an output with nothing call-specific (rebuilt from its inputs)."""
        info = self._static_info()
        info["fun"] = self._fun
        args, kwargs = self._inputs_from_node(n)
        info["inputs"] = {"args": args, "kwargs": kwargs}
        info["output"] = n._data
        return info

    def _inputs_from_node(self, n: Node[Any]) -> tuple[list[Any], dict[str, Any]]:
        inputs = n._inputs if isinstance(n, MessageNode) else {}
        plan = self._plan
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        positional = set(plan.pos) if plan is not None else set()
        var_pos = f"{plan.var_pos}_" if plan is not None and plan.var_pos else "args_"
        for key, value in inputs.items():
            if key == "__code":
                continue
            if key in positional or key.startswith(var_pos) or plan is None:
                args.append(value._data)
            else:
                kwargs[key] = value._data
        return args, kwargs


class CallRecord:
    """One call: what bind produced, what run produced, and the facts kept for ``info``.

    Bind creates it, run sets ``frame``, ``output`` and ``error``, record reads it. After
    :func:`record` only the facts stay (``fun``, ``args``, ``kwargs``, ``external``,
    ``error_comment``, ``traceback``); ``build_info`` expands them into the output's
    ``info`` dict on first access. The fields only a failing or unusual call needs are set
    by :func:`record` when it keeps the record, so the common call stays cheap.
    """

    __slots__ = (
        "args",
        "error",
        "error_comment",
        "external",
        "frame",
        "fun",
        "keys",
        "kwargs",
        "nodes",
        "op",
        "output",
        "traceback",
    )

    def __init__(
        self,
        op: Operator,
        fun: Callable[..., Any],
        keys: tuple[str, ...] | list[str],
        nodes: tuple[Node[Any], ...] | list[Node[Any]],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        self.op = op
        self.fun = fun
        self.keys = keys
        self.nodes = nodes
        self.args = args
        self.kwargs = kwargs
        self.frame: UsedNodes = NO_FRAME
        self.error: BaseException | None = None
        self.output: Any = None

    def build_info(self, n: Node[Any]) -> dict[str, Any]:
        """The ``info`` dict of the output ``n``."""
        info = self.op._static_info()
        info["fun"] = self.fun
        info["inputs"] = {"args": list(self.args), "kwargs": dict(self.kwargs)}
        info["output"] = n._data
        info["external_dependencies"] = self.external
        info["error_comment"] = self.error_comment
        info["traceback"] = self.traceback
        if self.op.trainable:
            info["fun_name"] = "eval"
        return info


class RunStep:
    """The run step of one call, as a ``with`` block around running the function.

    Opens a frame (``call.frame``) recording the nodes the call reads and creates, marks
    ``guard`` running in :data:`RUNNING` when given, and closes both on exit. With
    ``catch`` (an operator's ``catch_execution_error``) an ``Exception`` raised in the block
    becomes the call's ``error`` and ``output`` for :func:`record`; otherwise it propagates.
    """

    __slots__ = ("_call", "_catch", "_guard", "_rtoken", "_token")

    def __init__(self, call: CallRecord, catch: bool, guard: Any = None) -> None:
        self._call = call
        self._catch = catch
        self._guard = guard

    def __enter__(self) -> CallRecord:
        frame = self._call.frame = UsedNodes()
        self._token = USED_NODES.set([*USED_NODES.get(), frame])
        guard = self._guard
        self._rtoken = RUNNING.set((*RUNNING.get(), guard)) if guard is not None else None
        return self._call

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        USED_NODES.reset(self._token)
        if self._rtoken is not None:
            RUNNING.reset(self._rtoken)
        if self._catch and isinstance(error, Exception):
            self._call.output = self._call.error = error
            return True
        return False


def _external(call: CallRecord, allowed: bool) -> list[Node[Any]] | None:
    """Nodes read during the call that are neither inputs nor created by it (checked)."""
    frame = call.frame
    input_ids = {id(n) for n in call.nodes}
    if call.op.traceable_code:  # the detached copies stand for the inputs
        input_ids.update(id(v) for v in (*call.args, *call.kwargs.values()) if isinstance(v, Node))
    created = frame.created
    created_ids = {id(n) for n in created} if created else ()
    external = [n for n in frame if id(n) not in input_ids and id(n) not in created_ids]
    if not external:
        return None
    override = ALLOW_EXTERNAL_DEPENDENCIES
    if not (override if override is not None else allowed):
        missing = [(n._name, n._data) for n in external]
        raise TraceMissingInputsError(
            f"Not all nodes used in the operator {call.fun} are specified as inputs of "
            f"the returned node. Missing {missing} "
        )
    return external


def record(call: CallRecord) -> MessageNode[Any]:
    """Create the output node of ``call`` (raise ExecutionError with an ExceptionNode on error)."""
    op = call.op
    frame = call.frame
    tracing = _TRACING.get()
    created = frame.created
    output = call.output
    if (  # the common case first: nothing read or created, no error, plain operator
        not frame
        and created is None
        and call.error is None
        and op.parameter is None
        and not op.traceable_code
        and op._process_inputs
        and not isinstance(output, Exception)
    ):
        if isinstance(output, Node):
            output = output._data
        name = op.output_name or op._op_name
        if not tracing:
            return _new_message(output, name, op.description, (), (), op)
        keys = call.keys if type(call.keys) is tuple else tuple(call.keys)
        return _new_message(output, name, op.description, keys, tuple(call.nodes), op)
    call.external = call.error_comment = call.traceback = None  # the record may be kept
    if frame and tracing:
        call.external = _external(call, op.allow_external_dependencies)
    if created:  # nodes made during this call are internal to the enclosing call too
        stack = USED_NODES.get()
        if stack:
            outer = stack[-1]
            if outer.created is None:
                outer.created = list(created)
            else:
                outer.created.extend(created)
    if tracing:
        vals = tuple(call.nodes)
        keys = call.keys if type(call.keys) is tuple else tuple(call.keys)
        if created and not op.traceable_code:
            keys, vals = promote(created, keys, vals)
        if op.parameter is not None:
            keys = (*keys, "__code")
            vals = (*vals, op.parameter)
    else:
        keys, vals = (), ()
    error = call.error
    call.frame = NO_FRAME
    call.nodes = call.keys = ()
    call.output = None
    if error is None and isinstance(output, Exception):
        error = output
    trainable = op.parameter is not None
    base = "eval" if trainable else (op.output_name or op._op_name)
    info: Any
    if op.traceable_code:
        info = op._static_info()
        info["fun"] = call.fun
        info["inputs"] = {"args": list(call.args), "kwargs": dict(call.kwargs)}
        info["output"] = output
        info["external_dependencies"] = call.external
    elif (
        error is None
        and not trainable
        and call.external is None
        and created is None
        and op._process_inputs
    ):
        info = op  # nothing call-specific: the operator rebuilds info from the node's inputs
    else:
        info = call
    if error is not None:
        comment, tb_text = error_comment(op, error, call.fun)
        if isinstance(info, dict):
            info["error_comment"] = comment
            info["traceback"] = tb_text
        else:
            info = call
            call.error_comment = comment
            call.traceback = tb_text
        exc_node = _new_message(
            exception_data(error),
            f"exception_{base}",
            f"[exception] The operator {'eval' if trainable else op._qualname} raises an "
            "exception.",
            keys,
            vals,
            info,
            ExceptionNode,
        )
        raise ExecutionError(exc_node) from (error if error is not output else None)
    data = output._data if isinstance(output, Node) else output
    return _new_message(
        data, base, EVAL_DESCRIPTION if trainable else op.description, keys, vals, info
    )


EVAL_DESCRIPTION = (
    "[eval] This operator eval(__code, *args, **kwargs) evaluates the code block, where __code "
    "is the code (str) and *args and **kwargs are the arguments of the function. The output is "
    "the result of the evaluation, i.e., __code(*args, **kwargs)."
)


def promote(
    created: list[Node[Any]], keys: tuple[str, ...], vals: tuple[Node[Any], ...]
) -> tuple[tuple[str, ...], tuple[Node[Any], ...]]:
    """Add pre-existing parents of nodes created during the call as extra inputs.

    A traced operator used inside the call (``x + self.param``) reads ``self.param`` through
    the graph rather than ``.data``; promoting it keeps feedback flowing to it.
    """
    known = {id(n) for n in created}
    known.update(id(n) for n in vals)
    extra: list[Node[Any]] = []
    for n in created:
        for p in n._parents:
            if id(p) not in known:
                known.add(id(p))
                extra.append(p)
    if not extra:
        return keys, vals
    used = set(keys)
    new_keys = list(keys)
    for p in extra:
        key = p.py_name
        while key in used:
            key += "_"
        used.add(key)
        new_keys.append(key)
    return tuple(new_keys), (*vals, *extra)


def exception_data(e: BaseException) -> str:
    """The data of the ExceptionNode recording ``e``: ``"(Type) message"``."""
    if isinstance(e, ExecutionError):  # a nested operator failed: keep its message
        return f"(opto.trace.errors.ExecutionError) {e.exception_node._data}"
    cls = type(e)
    type_name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return f"({type_name}) {e}"


def base_message(e: BaseException) -> str:
    """``"(Type) first argument."``: the last line of an error comment."""
    detail = str(e.args[0]) if e.args else str(e)
    name = type(e).__name__
    return f"({name}) {detail}." if detail else f"({name})"


def annotate(lines: list[str], index: int, message: str) -> str:
    """``lines`` joined, with ``" <--- message"`` after line ``index`` (0-based)."""
    lines = list(lines)
    if 0 <= index < len(lines):
        lines[index] = lines[index] + " <--- " + message
    return "\n".join(lines)


def _frame_source(op: Operator, code: types.CodeType, fun: Any) -> tuple[list[str], int] | None:
    if code is getattr(fun, "__code__", None) and op.parameter is None:
        source, line_number, _, found = op._source()
        if found and line_number is not None:
            return source.splitlines(), line_number
    if code.co_filename.startswith("<trainable code"):
        lines = linecache.getlines(code.co_filename)
        if lines:
            return [x.rstrip("\n") for x in lines], 1
    try:
        lines, start = inspect.getsourcelines(code)
    except (OSError, TypeError):
        return None
    text = textwrap.dedent("".join(lines)).splitlines()
    return text, max(start, 1)


def error_comment(op: Operator, e: BaseException, fun: Any) -> tuple[str, str]:
    """``(comment, traceback)``: the failing line of every user frame annotated.

    The innermost frame gets the error message; frames inside opto.trace end the walk (a
    nested operator's own comment is appended instead).
    """
    tb_text = "".join(traceback_module.format_exception(type(e), e, e.__traceback__))
    base = base_message(e)
    frames: list[tuple[types.CodeType, int]] = []
    tb = e.__traceback__
    if tb is not None:
        tb = tb.tb_next  # skip the frame of the run step itself
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    comments: list[tuple[list[str], int]] = []
    nested = None
    for code, lineno in frames:
        if os.path.dirname(code.co_filename) == _TRACE_DIR:
            # the error came out of opto.trace itself (a nested bundle or operator)
            if isinstance(e, ExecutionError):
                info = e.exception_node._inf
                nested = info.get("error_comment") if isinstance(info, dict) else None
                if nested is None and info is not None and not isinstance(info, dict):
                    nested = getattr(info, "error_comment", None)
            break
        src = _frame_source(op, code, fun)
        if src is None:
            break
        lines, start = src
        comments.append((lines, lineno - start))
    if not comments:
        return (nested or base), tb_text
    parts = []
    for i, (lines, index) in enumerate(comments):
        last = i == len(comments) - 1 and nested is None
        msg = base if last else "Error raised in function call. See below."
        parts.append(annotate(lines, index, msg))
    if nested is not None:
        return "\n\n".join(parts) + "\n\n" + nested, tb_text
    return "\n\n".join(parts) + "\n" + base, tb_text
