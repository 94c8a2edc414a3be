"""``bundle``: turn a Python function into a traced operator.

Calling a bundled function wraps its arguments into nodes, runs the function on their data
and returns a :class:`~opto.trace.nodes.MessageNode` whose parents are those inputs. With
``trainable=True`` the function's source becomes a ``__code`` ParameterNode that optimizers
rewrite; the new code runs on the next call.

Dependency rule (fixes the reference's blind spot B23): while a bundled function runs, the
nodes it reads through ``.data`` are recorded. Reading a pre-existing node that is not an
input is an *external dependency* (an error unless allowed). Nodes read by *nested traced
operators* (``x + self.param`` inside the function) are not hidden either: every node that
existed before the call and is a parent of a node created during the call becomes an extra
parent of the output (input key = its ``py_name``), so feedback reaches it. Nodes created
during the call are internal and never count. ``traceable_code`` bundles keep the reference
behaviour (their inner graph is expanded instead).
"""

from __future__ import annotations

import copy
import inspect
import io
import linecache
import os
import re
import sys
import textwrap
import threading
import tokenize
import traceback as traceback_module
import types
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opto.trace._state import _TRACING, USED_NODES, UsedNodes, stop_tracing
from opto.trace._wrappable import check_wrappable
from opto.trace.broadcast import recursive_conversion
from opto.trace.code_policy import (
    CodePolicy,
    CodePolicyError,
    code_spec,
    inherit_code_spec,
    register_code,
)
from opto.trace.errors import ExecutionError, TraceMissingInputsError
from opto.trace.modules import Module
from opto.trace.nodes import (
    ExceptionNode,
    MessageNode,
    Node,
    ParameterNode,
    _new_message,
    get_op_name,
    node,
)
from opto.trace.sandbox import define_function

__all__ = [
    "ALLOW_EXTERNAL_DEPENDENCIES",
    "ExecutionError",
    "FunModule",
    "TraceMissingInputsError",
    "bundle",
    "detach_inputs",
    "disable_external_dependencies_check",
    "stop_tracing",
    "to_data",
    "trace_nodes",
    "wrap_node",
]

#: Global override of every bundle's ``allow_external_dependencies`` (None = use the flag).
ALLOW_EXTERNAL_DEPENDENCIES: bool | None = None

EVAL_DESCRIPTION = (
    "[eval] This operator eval(__code, *args, **kwargs) evaluates the code block, where __code "
    "is the code (str) and *args and **kwargs are the arguments of the function. The output is "
    "the result of the evaluation, i.e., __code(*args, **kwargs)."
)

_RESERVED_SELF = "__TRACE_RESERVED_self_node"
_RESERVED_BUNDLE = "__TRACE_RESERVED_bundle_"
_BIND_LOCK = threading.RLock()
#: Raw functions currently executing with ``overwrite_python_recursion`` (per context).
_RUNNING: ContextVar[tuple[Any, ...]] = ContextVar("opto_trace_running_bundles", default=())
_DECORATOR = re.compile(r"^\s*@\s*(?:[\w.]+\.)?bundle\s*(?:\(|\\)")
_DEF = re.compile(r"^\s*(?:async\s+)?def\s")
_NO_FRAME = UsedNodes()
_TRACE_DIR = os.path.dirname(
    os.path.abspath(__file__)
)  # stays empty: used by the operator fast path


def disable_external_dependencies_check(allow_external_dependencies: bool) -> None:
    """Globally allow (True) or forbid (False) reading non-input nodes inside bundles."""
    global ALLOW_EXTERNAL_DEPENDENCIES
    ALLOW_EXTERNAL_DEPENDENCIES = allow_external_dependencies


class trace_nodes:
    """Record the nodes whose ``.data`` is read inside the block (innermost block only)."""

    __slots__ = ("_token",)

    def __enter__(self) -> UsedNodes:
        frame = UsedNodes()
        self._token = USED_NODES.set([*USED_NODES.get(), frame])
        return frame

    def __exit__(self, *exc: object) -> None:
        USED_NODES.reset(self._token)


to_data = recursive_conversion(lambda n: n.data, lambda x: x)
to_data.__doc__ = "Replace every Node in a (nested) container by its data."
wrap_node = recursive_conversion(lambda n: n, node)
wrap_node.__doc__ = "Wrap every non-Node leaf of a (nested) container into a Node."
detach_inputs = recursive_conversion(lambda n: n.detach(), lambda x: x)
detach_inputs.__doc__ = "Replace every Node in a (nested) container by a detached deep copy."


def bundle(
    description: str | None = None,
    traceable_code: bool = False,
    _process_inputs: bool = True,
    trainable: bool = False,
    catch_execution_error: bool = True,
    allow_external_dependencies: bool = False,
    overwrite_python_recursion: bool = False,
    projections: list[Any] | None = None,
    output_name: str | None = None,
    code_policy: CodePolicy | None = None,
) -> Callable[[Callable[..., Any]], FunModule]:
    """Decorator turning a function into a traced operator (a :class:`FunModule`).

    Use it called: ``@bundle()`` or ``bundle(trainable=True)(fun)``. ``code_policy`` checks
    and restricts trainable code (see :class:`~opto.trace.code_policy.CodePolicy` and
    ``docs/security.md`` for what it does and does not protect against).
    """
    if callable(description) and not isinstance(description, str):
        raise TypeError(
            "bundle must be called before decorating: write @bundle() (or "
            "@bundle(description=...)), not @bundle."
        )
    _check_description(description)
    ldict = None
    if trainable:  # trainable code is exec'd later: snapshot the decoration-time locals
        caller = sys._getframe(1)
        if caller.f_locals is not caller.f_globals:
            ldict = dict(caller.f_locals)

    def decorator(fun: Callable[..., Any]) -> FunModule:
        return FunModule(
            fun,
            description=description,
            traceable_code=traceable_code,
            _process_inputs=_process_inputs,
            trainable=trainable,
            catch_execution_error=catch_execution_error,
            allow_external_dependencies=allow_external_dependencies,
            overwrite_python_recursion=overwrite_python_recursion,
            projections=projections,
            output_name=output_name,
            _ldict=ldict,
            code_policy=code_policy,
        )

    return decorator


def _check_description(description: Any) -> None:
    if description is None:
        return
    if not isinstance(description, str):
        raise TypeError(
            f"bundle description must be a str, got {type(description).__name__}; "
            "e.g. '[my_op] What my_op does.'"
        )
    try:
        get_op_name(description)
    except ValueError:
        raise ValueError(
            f"bundle description {description!r} must start with the operator name in "
            "brackets, e.g. '[my_op] What my_op does.'"
        ) from None


class _Plan:
    """Precomputed parameter layout of a function (replaces per-call Signature.bind)."""

    __slots__ = ("defaults", "kwonly", "n_posonly", "pos", "simple", "var_kw", "var_pos")

    def __init__(self, sig: inspect.Signature) -> None:
        pos: list[str] = []
        kwonly: list[str] = []
        defaults: dict[str, Any] = {}
        self.var_pos: str | None = None
        self.var_kw: str | None = None
        self.n_posonly = 0
        for p in sig.parameters.values():
            if p.kind is p.POSITIONAL_ONLY:
                self.n_posonly += 1
                pos.append(p.name)
            elif p.kind is p.POSITIONAL_OR_KEYWORD:
                pos.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                self.var_pos = p.name
            elif p.kind is p.KEYWORD_ONLY:
                kwonly.append(p.name)
            else:
                self.var_kw = p.name
            if p.default is not p.empty:
                defaults[p.name] = p.default
        self.pos = tuple(pos)
        self.kwonly = tuple(kwonly)
        self.defaults = defaults
        self.simple = not kwonly and self.var_pos is None and self.var_kw is None

    @classmethod
    def of(cls, fun: Any) -> _Plan | None:
        try:
            return cls(inspect.signature(fun))
        except (TypeError, ValueError):
            return None


def _plan_from_code(fun: types.FunctionType) -> _Plan:
    """Fast :class:`_Plan` for plain functions straight from their code object."""
    code = fun.__code__
    plan = _Plan.__new__(_Plan)
    names = code.co_varnames
    n_pos = code.co_argcount
    n_kwonly = code.co_kwonlyargcount
    plan.pos = names[:n_pos]
    plan.n_posonly = code.co_posonlyargcount
    plan.kwonly = names[n_pos : n_pos + n_kwonly]
    idx = n_pos + n_kwonly
    plan.var_pos = None
    plan.var_kw = None
    if code.co_flags & inspect.CO_VARARGS:
        plan.var_pos = names[idx]
        idx += 1
    if code.co_flags & inspect.CO_VARKEYWORDS:
        plan.var_kw = names[idx]
    defaults: dict[str, Any] = {}
    if fun.__defaults__:
        for name, value in zip(plan.pos[n_pos - len(fun.__defaults__) :], fun.__defaults__):
            defaults[name] = value
    if fun.__kwdefaults__:
        defaults.update(fun.__kwdefaults__)
    plan.defaults = defaults
    plan.simple = not plan.kwonly and plan.var_pos is None and plan.var_kw is None
    return plan


class _CallRecord:
    """Per-call facts of one bundle output, expanded into ``node.info`` on first access."""

    __slots__ = ("args", "error_comment", "external", "fm", "fun", "kwargs", "traceback")

    def __init__(
        self,
        fm: FunModule,
        fun: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        external: list[Node[Any]] | None,
        error_comment: str | None = None,
        traceback: str | None = None,
    ) -> None:
        self.fm = fm
        self.fun = fun
        self.args = args
        self.kwargs = kwargs
        self.external = external
        self.error_comment = error_comment
        self.traceback = traceback

    def build_info(self, n: Node[Any]) -> dict[str, Any]:
        info = self.fm._static_info()
        info["fun"] = self.fun
        info["inputs"] = {"args": list(self.args), "kwargs": dict(self.kwargs)}
        info["output"] = n._data
        info["external_dependencies"] = self.external
        info["error_comment"] = self.error_comment
        info["traceback"] = self.traceback
        if self.fm.trainable:
            info["fun_name"] = "eval"
        return info


class FunModule(Module):
    """A bundled function: a callable traced operator (and a Module holding ``__code``)."""

    def __init__(
        self,
        fun: Callable[..., Any],
        description: str | None = None,
        traceable_code: bool = False,
        _process_inputs: bool = True,
        trainable: bool = False,
        catch_execution_error: bool = True,
        allow_external_dependencies: bool = False,
        overwrite_python_recursion: bool = False,
        projections: list[Any] | None = None,
        output_name: str | None = None,
        _ldict: dict[str, Any] | None = None,
        code_policy: CodePolicy | None = None,
    ) -> None:
        check_wrappable(fun)
        _check_description(description)
        if output_name is not None and (not isinstance(output_name, str) or ":" in output_name):
            raise ValueError(f"output_name must be a str without ':', got {output_name!r}.")
        self._fun = fun
        self._ldict = _ldict
        self._fun_name = getattr(fun, "__name__", None) or type(fun).__name__
        qualname = getattr(fun, "__qualname__", None) or self._fun_name
        self._qualname = qualname.replace("<locals>.", "")
        doc = getattr(fun, "__doc__", None) if not isinstance(fun, type) else fun.__doc__
        self._doc = inspect.cleandoc(doc) if isinstance(doc, str) else ""
        if description is None:
            description = f"[{self._qualname}] {self._doc}".rstrip()
        self.description = description
        self._op_name = get_op_name(description)
        self.traceable_code = traceable_code
        self._process_inputs = _process_inputs
        self.catch_execution_error = catch_execution_error
        self.allow_external_dependencies = allow_external_dependencies
        self.overwrite_python_recursion = overwrite_python_recursion or trainable
        self.output_name = output_name
        self._attr_name: str | None = None
        self._self_node: Node[Any] | None = None
        self._compiled: tuple[Any, ...] | None = None
        self._source_cache: tuple[str, int | None, str | None, bool] | None = None
        if isinstance(fun, types.FunctionType):
            self._plan: _Plan | None = _plan_from_code(fun)
        else:
            self._plan = _Plan.of(fun)
        self._is_async = inspect.iscoroutinefunction(fun)
        self._fast = (
            self._plan is not None
            and self._plan.simple
            and not (trainable or traceable_code or self.overwrite_python_recursion)
            and _process_inputs
            and not self._is_async
        )
        self._light = self._fast and getattr(fun, "__module__", None) == "opto.trace.operators"
        self.parameter: ParameterNode[str] | None = None
        self._static: dict[str, Any] | None = None
        if trainable:
            if not isinstance(fun, types.FunctionType) or self._fun_name == "<lambda>":
                raise TypeError(
                    "trainable=True needs a function defined with `def` (its code becomes the "
                    f"trainable parameter), got {fun!r}."
                )
            source, _, _, found = self._source()
            if not found:
                raise ValueError(
                    f"Cannot make {self._qualname} trainable: its source code is not available "
                    "(defined in a REPL, `python -c`, exec or a C extension). Define it in a "
                    ".py file, or use trainable=False."
                )
            self.parameter = ParameterNode(
                source,
                name="__code",
                description="The code should start with:\n" + _signature_hint(source),
                projections=projections,
            )
            register_code(self.parameter, source, code_policy)
        self._code_policy = code_policy

    # -- properties --------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        """Whether the code is a trainable ``__code`` parameter."""
        return self.parameter is not None

    @property
    def name(self) -> str:
        """The operator name (tag of the description)."""
        return self._op_name

    @property
    def fun(self) -> Callable[..., Any]:
        """The function that runs: the original one, or the current ``__code`` compiled."""
        if self.parameter is None:
            return self._fun
        return self._compile()

    @property
    def info(self) -> dict[str, Any]:
        """Static facts about the function (per-call facts live on each output's info)."""
        return self._static_info()

    def parameters_dict(self) -> dict[str, Any]:
        return {"parameter": self.parameter} if self.parameter is not None else {}

    def parameters(self) -> list[ParameterNode[Any]]:
        return [self.parameter] if self.parameter is not None else []

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr_name = name

    def __repr__(self) -> str:
        return f"<FunModule {self._op_name} of {self._fun!r}>"

    # -- source & static info ----------------------------------------------------------------
    def _source(self) -> tuple[str, int | None, str | None, bool]:
        """(source, line_number, file, found): decorator-stripped source, cached."""
        if self._source_cache is None:
            self._source_cache = _extract_source(self._fun, self._qualname)
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
        """Info dict of an output produced by the plain fast path (see ``_CallRecord``)."""
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

    # -- trainable code --------------------------------------------------------------------
    def _compile(self) -> Callable[..., Any]:
        param = self.parameter
        assert param is not None
        code = param._data
        cached = self._compiled
        if cached is not None and (cached[0] is code or cached[0] == code):
            return cached[1]
        if not isinstance(code, str):
            raise self._code_error(
                TypeError(f"The code parameter must hold a str, got {type(code).__name__}."),
                None,
                "",
            )
        filename = f"<trainable code {param.py_name}>"
        lines = code.splitlines(True)
        linecache.cache[filename] = (len(code), None, lines, filename)
        try:
            compile(code, filename, "exec")
        except SyntaxError as e:
            lineno = e.lineno or 1
            base = f"(SyntaxError) {e.msg}."
            commented = _annotate(code.splitlines(), lineno - 1, base)
            raise self._code_error(
                e,
                commented + "\n" + base,
                "SyntaxError in trainable code definition.\n" + commented,
            ) from None
        spec = code_spec(param)
        if spec is None:  # unpickled: the registry is per process
            register_code(param, self._source()[0], self._code_policy)
            spec = code_spec(param)
        try:
            fn = define_function(
                code,
                filename,
                self._fun_name,
                getattr(self._fun, "__globals__", {}),
                self._ldict,
                spec.policy,  # type: ignore[union-attr]
            )
        except CodePolicyError as e:
            raise self._code_error(e, code + "\n" + str(e), str(e)) from None
        except Exception as e:
            tb = e.__traceback__
            lineno = None
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == filename:
                    lineno = tb.tb_lineno
                tb = tb.tb_next
            base = _base_message(e)
            lines_ = code.splitlines()
            commented = _annotate(lines_, lineno - 1, base) if lineno else code
            raise self._code_error(
                e, commented + "\n" + base, traceback_module.format_exc()
            ) from None
        if inspect.iscoroutinefunction(fn) != self._is_async:
            # Callers already use the original calling convention (await or not): a switch
            # would hand them a coroutine or a node they cannot await.
            kind = "an async function (async def)" if self._is_async else "a plain function (def)"
            e = TypeError(f"The trainable code must define {self._fun_name} as {kind}")
            base = _base_message(e)
            raise self._code_error(e, code + "\n" + base, base)
        self._compiled = (code, fn)
        return fn

    def _code_error(self, e: Exception, comment: str | None, tb: str) -> ExecutionError:
        param = self.parameter
        assert param is not None
        info = self._static_info()
        info["error_comment"] = comment
        info["traceback"] = tb
        info["fun_name"] = "eval"
        inputs = {"code": param} if _TRACING.get() else {}
        exc_node = ExceptionNode(
            e,
            inputs=inputs,
            description=f"[exception] The code parameter {param.py_name} has an error.",
            name=f"exception_{param.py_name}",
            info=info,
        )
        return ExecutionError(exc_node)

    # -- calling -----------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function on the data of the (wrapped) inputs; return the output node."""
        if self._fast and not kwargs:
            plan = self._plan
            if len(args) == len(plan.pos):  # type: ignore[union-attr]
                return self._fast_forward(plan.pos, args)  # type: ignore[union-attr]
        fun = self.fun if self.parameter is not None else self._fun
        if self._self_node is not None:
            args = (self._self_node, *args)
        if self.overwrite_python_recursion:
            running = _RUNNING.get()
            if self._fun in running:
                return self._run_raw(fun, args, kwargs)
        if self._is_async:
            return self._async_forward(fun, args, kwargs)
        keys, nodes, cargs, ckw = self._prepare(args, kwargs)
        frame, tokens = self._enter_call()
        error = None
        try:
            output = fun(*cargs, **ckw)
        except Exception as e:
            if not self.catch_execution_error:
                raise
            output = e
            error = e
        finally:
            self._exit_call(tokens)
        return self._finish(fun, keys, nodes, cargs, ckw, frame, output, error)

    def _fast_forward(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Call path for plain functions called positionally (no binding work)."""
        if self._light:
            for value in args:
                if not isinstance(value, Node):
                    break
            else:  # built-in operator on nodes: the hottest path of tracing
                try:
                    output = self._fun(*[value._data for value in args])
                except Exception as e:
                    return self._finish(
                        self._fun,
                        list(keys),
                        list(args),
                        [a._data for a in args],
                        {},
                        _NO_FRAME,
                        e,
                        e,
                    )
                if isinstance(output, Node):
                    output = output._data
                elif isinstance(output, Exception):
                    return self._finish(
                        self._fun,
                        list(keys),
                        list(args),
                        [a._data for a in args],
                        {},
                        _NO_FRAME,
                        output,
                        None,
                    )
                if _TRACING.get():
                    return _new_message(output, self._op_name, self.description, keys, args, self)
                return _new_message(output, self._op_name, self.description, (), (), self)
        nodes = []
        passed = []
        for key, value in zip(keys, args):
            if isinstance(value, Node):
                nodes.append(value)
                passed.append(value._data)
            elif isinstance(value, FunModule):
                nodes.append(value.parameter if value.parameter is not None else Node(value))
                passed.append(value)
            else:
                nodes.append(Node(value, name=key))
                passed.append(value)
        fun = self._fun
        error = None
        if self._light:  # built-in operators neither read nor create nodes while running
            frame = _NO_FRAME
            try:
                output = fun(*passed)
            except Exception as e:
                output = error = e
        else:
            frame = UsedNodes()
            token = USED_NODES.set([*USED_NODES.get(), frame])
            try:
                output = fun(*passed)
            except Exception as e:
                if not self.catch_execution_error:
                    raise
                output = error = e
            finally:
                USED_NODES.reset(token)
        if (
            error is None
            and not frame
            and frame.created is None
            and not isinstance(output, Exception)
        ):
            if isinstance(output, Node):
                output = output._data
            vals = tuple(nodes) if _TRACING.get() else ()
            return _new_message(
                output,
                self.output_name or self._op_name,
                self.description,
                keys if vals else (),
                vals,
                self,
            )
        return self._finish(fun, list(keys), nodes, passed, {}, frame, output, error)

    __call__ = forward

    async def _async_forward(
        self, fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        keys, nodes, cargs, ckw = self._prepare(args, kwargs)
        frame, tokens = self._enter_call()
        error = None
        try:
            output = await fun(*cargs, **ckw)
        except Exception as e:
            if not self.catch_execution_error:
                raise
            output = e
            error = e
        finally:
            self._exit_call(tokens)
        return self._finish(fun, keys, nodes, cargs, ckw, frame, output, error)

    def _enter_call(self) -> tuple[UsedNodes, tuple[Any, Any]]:
        """Open the frame recording the nodes the call uses (and, under
        ``overwrite_python_recursion``, mark this function running); the tokens are for
        :meth:`_exit_call`."""
        frame = UsedNodes()
        token = USED_NODES.set([*USED_NODES.get(), frame])
        rtoken = (
            _RUNNING.set((*_RUNNING.get(), self._fun)) if self.overwrite_python_recursion else None
        )
        return frame, (token, rtoken)

    @staticmethod
    def _exit_call(tokens: tuple[Any, Any]) -> None:
        """Undo :meth:`_enter_call`."""
        token, rtoken = tokens
        USED_NODES.reset(token)
        if rtoken is not None:
            _RUNNING.reset(rtoken)

    def _run_raw(
        self, fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Re-entrant call under ``overwrite_python_recursion``: plain Python, raw values."""
        args = tuple(a._data if isinstance(a, Node) else a for a in args)
        kwargs = {k: (v._data if isinstance(v, Node) else v) for k, v in kwargs.items()}
        return fun(*args, **kwargs)

    def _prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[str], list[Node[Any]], list[Any], dict[str, Any]]:
        """Bind arguments: input keys, input nodes, and the call's args/kwargs."""
        plan = self._plan
        keys: list[str]
        values: list[Any]
        n_args = len(args)
        if plan is None:
            keys = [f"args_{i}" for i in range(n_args)] + list(kwargs)
            values = [*args, *kwargs.values()]
            n_call_pos = n_args
        elif plan.simple and not kwargs and n_args == len(plan.pos):
            keys = plan.pos  # type: ignore[assignment]
            values = list(args)
            n_call_pos = n_args
        else:
            keys, values, n_call_pos = self._bind(plan, args, kwargs)
        nodes: list[Node[Any]] = []
        passed: list[Any] = []
        traceable = self.traceable_code
        named = len(plan.pos) if plan is not None else 0
        for i, value in enumerate(values):
            if isinstance(value, Node):
                nodes.append(value)
                passed.append(value.detach() if traceable else value._data)
            elif isinstance(value, FunModule):
                nodes.append(value.parameter if value.parameter is not None else Node(value))
                passed.append(value)
            else:
                key = keys[i]
                name = key if (i < named or i >= n_call_pos) and key.isidentifier() else None
                n = Node(value, name=name)
                nodes.append(n)
                passed.append(n.detach() if traceable else value)
        if not self._process_inputs:
            return keys, nodes, list(args), dict(kwargs)
        cargs = passed[:n_call_pos]
        ckw = dict(zip(keys[n_call_pos:], passed[n_call_pos:])) if len(keys) > n_call_pos else {}
        return keys, nodes, cargs, ckw

    def _bind(
        self, plan: _Plan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[str], list[Any], int]:
        pos = plan.pos
        n_named = len(pos)
        n_args = len(args)
        if n_args > n_named and plan.var_pos is None:
            raise TypeError(
                f"{self._qualname}() takes {n_named} positional arguments but {n_args} were given"
            )
        kw = dict(kwargs)
        keys: list[str] = []
        values: list[Any] = []
        for i, name in enumerate(pos):
            if i < n_args:
                if name in kw and i >= plan.n_posonly:
                    raise TypeError(f"{self._qualname}() got multiple values for argument {name!r}")
                values.append(args[i])
            elif i >= plan.n_posonly and name in kw:
                values.append(kw.pop(name))
            elif name in plan.defaults:
                values.append(plan.defaults[name])
            else:
                raise TypeError(f"{self._qualname}() missing required argument: {name!r}")
            keys.append(name)
        for j, value in enumerate(args[n_named:]):
            keys.append(f"{plan.var_pos}_{j}")
            values.append(value)
        n_call_pos = len(values)
        for name in plan.kwonly:
            if name in kw:
                values.append(kw.pop(name))
            elif name in plan.defaults:
                values.append(plan.defaults[name])
            else:
                raise TypeError(f"{self._qualname}() missing required keyword argument: {name!r}")
            keys.append(name)
        if kw:
            if plan.var_kw is None:
                raise TypeError(
                    f"{self._qualname}() got unexpected keyword arguments: {sorted(kw)}"
                )
            keys.extend(kw)
            values.extend(kw.values())
        return keys, values, n_call_pos

    def _finish(
        self,
        fun: Callable[..., Any],
        keys: list[str],
        nodes: list[Node[Any]],
        cargs: list[Any],
        ckw: dict[str, Any],
        frame: UsedNodes,
        output: Any,
        error: BaseException | None,
    ) -> Any:
        tracing = _TRACING.get()
        external: list[Node[Any]] | None = None
        created = frame.created
        if frame and tracing:
            input_ids = {id(n) for n in nodes}
            if self.traceable_code:  # the detached copies stand for the inputs
                input_ids.update(id(v) for v in (*cargs, *ckw.values()) if isinstance(v, Node))
            created_ids = {id(n) for n in created} if created else ()
            external = [
                n for n in frame if id(n) not in input_ids and id(n) not in created_ids
            ] or None
            if external:
                allowed = (
                    ALLOW_EXTERNAL_DEPENDENCIES
                    if ALLOW_EXTERNAL_DEPENDENCIES is not None
                    else self.allow_external_dependencies
                )
                if not allowed:
                    missing = [(n._name, n._data) for n in external]
                    raise TraceMissingInputsError(
                        f"Not all nodes used in the operator {fun} are specified as inputs of "
                        f"the returned node. Missing {missing} "
                    )
        if created:  # nodes made during this call are internal to the enclosing call too
            stack = USED_NODES.get()
            if stack:
                outer = stack[-1]
                if outer.created is None:
                    outer.created = list(created)
                else:
                    outer.created.extend(created)
        if tracing:
            vals = tuple(nodes)
            in_keys = keys if type(keys) is tuple else tuple(keys)
            if created and not self.traceable_code:
                in_keys, vals = _promote(created, in_keys, vals)
            if self.parameter is not None:
                in_keys = (*in_keys, "__code")
                vals = (*vals, self.parameter)
        else:
            in_keys, vals = (), ()

        if error is None and isinstance(output, Exception):
            error = output
        trainable = self.parameter is not None
        base = "eval" if trainable else (self.output_name or self._op_name)
        plain = (
            error is None
            and not trainable
            and external is None
            and created is None
            and self._process_inputs
            and not self.traceable_code
        )
        if plain:
            info: Any = self
        elif self.traceable_code:
            info = self._static_info()
            info["fun"] = fun
            info["inputs"] = {"args": list(cargs), "kwargs": dict(ckw)}
            info["output"] = output
            info["external_dependencies"] = external
        else:
            info = _CallRecord(self, fun, list(cargs), dict(ckw), external)

        if error is not None:
            comment, tb_text = _error_comment(self, error, fun)
            if isinstance(info, dict):
                info["error_comment"] = comment
                info["traceback"] = tb_text
            else:
                if not isinstance(info, _CallRecord):
                    info = _CallRecord(self, fun, list(cargs), dict(ckw), external)
                info.error_comment = comment
                info.traceback = tb_text
            exc_node = _new_message(
                _exception_data(error),
                f"exception_{base}",
                f"[exception] The operator {'eval' if trainable else self._qualname} raises an "
                "exception.",
                in_keys,
                vals,
                info,
                ExceptionNode,
            )
            raise ExecutionError(exc_node) from (error if error is not output else None)

        data = output._data if isinstance(output, Node) else output
        description = EVAL_DESCRIPTION if trainable else self.description
        return _new_message(data, base, description, in_keys, vals, info)

    # -- methods -----------------------------------------------------------------------------
    def __get__(self, obj: Any, objtype: type | None = None) -> FunModule:
        if obj is None:
            return self
        if isinstance(obj, type):
            # ``@classmethod`` over a bundle on Python < 3.13 binds through this descriptor
            # with the class; bind like 3.13 does (the class is the first argument, wrapped
            # per call, ``__code`` shared) instead of caching a node in the read-only
            # class ``__dict__``.
            return types.MethodType(self, obj)  # type: ignore[return-value]
        key = _RESERVED_BUNDLE + (self._attr_name or self._fun_name)
        d = getattr(obj, "__dict__", None)
        if d is None:
            return self._bound(Node(obj))
        bound = d.get(key)
        if bound is not None:
            return bound
        with _BIND_LOCK:
            bound = d.get(key)
            if bound is None:
                self_node = d.get(_RESERVED_SELF)
                if self_node is None:
                    self_node = d[_RESERVED_SELF] = Node(obj)
                bound = d[key] = self._bound(self_node)
        return bound

    def __copy__(self) -> FunModule:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def _bound(self, self_node: Node[Any]) -> FunModule:
        new = self.__copy__()
        new._self_node = self_node
        new._fast = new._light = False
        if self.parameter is not None:
            new.parameter = copy.deepcopy(self.parameter)
            inherit_code_spec(self.parameter, new.parameter)
            new._compiled = None
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> FunModule:
        new = self.__copy__()
        memo[id(self)] = new
        if self.parameter is not None:
            new.parameter = copy.deepcopy(self.parameter, memo)
            inherit_code_spec(self.parameter, new.parameter)
        if self._self_node is not None:
            new._self_node = copy.deepcopy(self._self_node, memo)
        return new

    def detach(self) -> FunModule:
        """A deep copy (its own ``__code`` copy when trainable)."""
        return copy.deepcopy(self)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None
        state["_static"] = None
        state["_ldict"] = None  # decoration-time locals are not pickled
        fun = state["_fun"]
        if isinstance(fun, types.FunctionType):
            state["_fun"] = _FunRef(fun)
        if self.parameter is not None:  # the code registry is per process: carry the policy
            state["_code_spec"] = code_spec(self.parameter)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        spec = state.pop("_code_spec", None)
        self.__dict__.update(state)
        if spec is not None:
            register_code(self.parameter, spec.original, spec.policy)


class _FunRef:
    """Pickles a bundled function by module and qualified name (its name now holds the bundle)."""

    __slots__ = ("fun",)

    def __init__(self, fun: types.FunctionType) -> None:
        self.fun = fun

    def __reduce__(self) -> tuple[Any, ...]:
        fun = self.fun
        if "<locals>" in fun.__qualname__ or "<lambda>" in fun.__qualname__:
            raise TypeError(
                f"Cannot pickle the bundled function {fun.__qualname__}: it is defined inside "
                "a function. Define it at module level, or save parameters with Module.save()."
            )
        return (_resolve_fun, (fun.__module__, fun.__qualname__))


def _resolve_fun(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        if isinstance(obj, type):  # static lookup: do not trigger the descriptor
            obj = next(k.__dict__[part] for k in obj.__mro__ if part in k.__dict__)
        else:
            obj = getattr(obj, part)
    return obj._fun if isinstance(obj, FunModule) else obj


def _promote(
    created: list[Node[Any]], keys: tuple[str, ...], vals: tuple[Node[Any], ...]
) -> tuple[tuple[str, ...], tuple[Node[Any], ...]]:
    """Add pre-existing parents of nodes created during the call as extra inputs (B23)."""
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


def _exception_data(e: BaseException) -> str:
    if isinstance(e, ExecutionError):  # a nested bundle failed: keep its message, not a traceback
        return f"(opto.trace.errors.ExecutionError) {e.exception_node._data}"
    cls = type(e)
    type_name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return f"({type_name}) {e}"


def _base_message(e: BaseException) -> str:
    detail = str(e.args[0]) if e.args else str(e)
    name = type(e).__name__
    return f"({name}) {detail}." if detail else f"({name})"


def _annotate(lines: list[str], index: int, message: str) -> str:
    lines = list(lines)
    if 0 <= index < len(lines):
        lines[index] = lines[index] + " <--- " + message
    return "\n".join(lines)


def _frame_source(fm: FunModule, code: types.CodeType, fun: Any) -> tuple[list[str], int] | None:
    if code is getattr(fun, "__code__", None) and fm.parameter is None:
        source, line_number, _, found = fm._source()
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


def _error_comment(fm: FunModule, e: BaseException, fun: Any) -> tuple[str, str]:
    """Annotate the failing line of every user frame (innermost gets the error message)."""
    tb_text = "".join(traceback_module.format_exception(type(e), e, e.__traceback__))
    base = _base_message(e)
    frames: list[tuple[types.CodeType, int]] = []
    tb = e.__traceback__
    if tb is not None:
        tb = tb.tb_next  # skip the bundle's own frame
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
        src = _frame_source(fm, code, fun)
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
        parts.append(_annotate(lines, index, msg))
    if nested is not None:
        return "\n\n".join(parts) + "\n\n" + nested, tb_text
    return "\n\n".join(parts) + "\n" + base, tb_text


def _extract_source(fun: Any, qualname: str) -> tuple[str, int | None, str | None, bool]:
    """Decorator-stripped, dedented source of ``fun`` and its first line number."""
    target = inspect.unwrap(fun) if callable(fun) else fun
    target = getattr(target, "__func__", target)
    try:
        lines, start = inspect.getsourcelines(target)
        file = inspect.getsourcefile(target)
    except (OSError, TypeError):
        return _fallback_source(fun, qualname), None, None, False
    keep = 0
    for i, line in enumerate(lines):
        if _DEF.match(line):
            break
        if _DECORATOR.match(line):
            keep = _end_of_decorator(lines, i) + 1
    source = textwrap.dedent("".join(lines[keep:]))
    return source, start + keep, file, True


def _end_of_decorator(lines: list[str], i: int) -> int:
    """Index of the last line of the decorator call starting at ``lines[i]``."""
    text = textwrap.dedent("".join(lines[i:]))
    depth = 0
    opened = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
                opened = True
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
                if opened and depth == 0:
                    return i + tok.end[0] - 1
            elif tok.type == tokenize.NEWLINE and depth == 0:
                return i + tok.start[0] - 1
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return i


def _fallback_source(fun: Any, qualname: str) -> str:
    try:
        sig = str(inspect.signature(fun))
    except (TypeError, ValueError):
        sig = "(*args, **kwargs)"
    name = qualname if qualname.isidentifier() else "function"
    return f"def {name}{sig}:\n    ...  # source not available: {fun!r}\n"


def _signature_hint(source: str) -> str:
    """``def`` line(s) and docstring of ``source`` (what rewritten code must start with)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source.splitlines()[0] if source else ""
    lines = source.splitlines()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = stmt.lineno - 1
            if stmt.decorator_list:
                first = stmt.decorator_list[0].lineno - 1
                # keep decorators out of the hint: start at the def line itself
                for j in range(first, len(lines)):
                    if _DEF.match(lines[j]):
                        first = j
                        break
            body0 = stmt.body[0]
            if (
                isinstance(body0, ast.Expr)
                and isinstance(body0.value, ast.Constant)
                and isinstance(body0.value.value, str)
            ):
                return "\n".join(lines[first : body0.end_lineno])
            if body0.lineno - 1 > first:
                return "\n".join(lines[first : body0.lineno - 1])
            return lines[first]
    return lines[0] if lines else ""
