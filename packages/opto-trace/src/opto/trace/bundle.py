"""``bundle``: turn a Python function into a traced operator.

Calling a bundled function wraps its arguments into nodes, runs the function on their data
and returns a :class:`~opto.trace.nodes.MessageNode` whose parents are those inputs. With
``trainable=True`` the function's source becomes a ``__code`` ParameterNode that optimizers
rewrite; the new code runs on the next call.

A call goes through one pipeline: *bind* the arguments to input nodes (:meth:`FunModule._bind`),
*run* the function (sync, or awaited for ``async def``) inside a frame recording the nodes it
reads and creates, then *record* the output (:func:`opto.trace._calls.record`). One
:class:`~opto.trace._calls.CallRecord` carries the call through the three steps.

Dependencies: reading (``.data``) a pre-existing node that is not an input is an *external
dependency*, an error unless allowed. A pre-existing parent of a node created during the call
(``x + self.param`` inside the function) becomes an extra input of the output, keyed by its
``py_name``, so feedback reaches it; ``traceable_code`` bundles expand their inner graph
instead. Nodes created during the call never count.
"""

from __future__ import annotations

import copy
import inspect
import linecache
import sys
import threading
import traceback as traceback_module
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opto.trace import _calls
from opto.trace._bundle_options import BundleOptions
from opto.trace._calls import (
    EVAL_DESCRIPTION,
    RUNNING,
    CallRecord,
    OperatorInfo,
    RunStep,
    annotate,
    base_message,
    input_node,
    record,
)
from opto.trace._message import _new_message
from opto.trace._sources import signature_hint
from opto.trace._state import _TRACING, USED_NODES, UsedNodes, stop_tracing
from opto.trace._wrappable import check_wrappable
from opto.trace.broadcast import recursive_conversion
from opto.trace.errors import ExecutionError, TraceMissingInputsError
from opto.trace.modules import Module
from opto.trace.nodes import ExceptionNode, Node, ParameterNode, get_op_name, node
from opto.utils.once import get_or_create
from opto.utils.signatures import bind, plan_of, takes_parameters_of

if TYPE_CHECKING:
    from opto.trace.primitives import Primitive

# code_policy and sandbox (and attrs) load when a trainable bundle is created or compiled,
# not on ``import opto.trace``.

__all__ = [
    "EVAL_DESCRIPTION",
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

_RESERVED_SELF = "__TRACE_RESERVED_self_node"
_RESERVED_BUNDLE = "__TRACE_RESERVED_bundle_"
_BIND_LOCK = threading.RLock()


def disable_external_dependencies_check(allow_external_dependencies: bool) -> None:
    """Globally allow (True) or forbid (False) reading non-input nodes inside bundles."""
    _calls.ALLOW_EXTERNAL_DEPENDENCIES = allow_external_dependencies


def __getattr__(name: str) -> Any:
    if name == "ALLOW_EXTERNAL_DEPENDENCIES":  # the global override lives with the record step
        return _calls.ALLOW_EXTERNAL_DEPENDENCIES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


@takes_parameters_of(BundleOptions)
def bundle(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], FunModule]:
    """Decorator turning a function into a traced operator (a :class:`FunModule`).

    Use it called: ``@bundle()`` or ``bundle(trainable=True)(fun)``. The options are those
    of :class:`~opto.trace._bundle_options.BundleOptions` (``help`` shows them). ``code_policy``
    checks and restricts trainable code (see :class:`~opto.trace.code_policy.CodePolicy` and
    ``docs/security.md`` for what it does and does not protect against).
    """
    if args and callable(args[0]) and not isinstance(args[0], str):
        raise TypeError(
            "bundle must be called before decorating: write @bundle() (or "
            "@bundle(description=...)), not @bundle."
        )
    options = BundleOptions(*args, **kwargs)
    ldict = None
    if options.trainable:  # trainable code is exec'd later: snapshot the decoration-time locals
        caller = sys._getframe(1)
        if caller.f_locals is not caller.f_globals:
            ldict = dict(caller.f_locals)

    def decorator(fun: Callable[..., Any]) -> FunModule:
        return FunModule(fun, *args, _ldict=ldict, **kwargs)

    return decorator


class FunModule(OperatorInfo, Module):
    """A bundled function: a callable traced operator (and a Module holding ``__code``)."""

    @takes_parameters_of(BundleOptions)
    def __init__(
        self,
        fun: Callable[..., Any],
        *args: Any,
        _ldict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Trace ``fun`` with the options of :class:`~opto.trace._bundle_options.BundleOptions`;
        ``_ldict``: the locals trainable code runs with (``bundle`` snapshots the caller's)."""
        check_wrappable(fun)
        options = BundleOptions(*args, **kwargs)
        self._fun = fun
        self._ldict = _ldict
        self._fun_name = getattr(fun, "__name__", None) or type(fun).__name__
        qualname = getattr(fun, "__qualname__", None) or self._fun_name
        self._qualname = qualname.replace("<locals>.", "")
        doc = getattr(fun, "__doc__", None) if not isinstance(fun, type) else fun.__doc__
        self._doc = inspect.cleandoc(doc) if isinstance(doc, str) else ""
        description = options.description
        if description is None:
            description = f"[{self._qualname}] {self._doc}".rstrip()
        self.description = description
        self._op_name = get_op_name(description)
        self.traceable_code = traceable_code = options.traceable_code
        self._process_inputs = options._process_inputs
        self.catch_execution_error = options.catch_execution_error
        self.allow_external_dependencies = options.allow_external_dependencies
        trainable = options.trainable
        self.overwrite_python_recursion = options.overwrite_python_recursion or trainable
        self.output_name = options.output_name
        self._attr_name: str | None = None
        self._self_node: Node[Any] | None = None
        self._compiled: tuple[Any, ...] | None = None
        self._source_cache: tuple[str, int | None, str | None, bool] | None = None
        self._plan = plan_of(fun)
        self._is_async = inspect.iscoroutinefunction(fun)
        plain = not (
            trainable or traceable_code or self.overwrite_python_recursion or self._is_async
        )
        #: Input keys when a call of nodes, positionally, needs no optional step and runs
        #: inline (see ``forward``); None for trainable, traceable, async, recursion-guarded,
        #: method-bound and primitive functions and for other signatures.
        self._plain: tuple[str, ...] | None = (
            self._plan.pos
            if plain and self._process_inputs and self._plan is not None and self._plan.simple
            else None
        )
        self._primitive: Primitive | None = None
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
                description="The code should start with:\n" + signature_hint(source),
                projections=options.projections,
            )
            from opto.trace.code_policy import register_code

            register_code(self.parameter, source, options.code_policy)
        self._code_policy = options.code_policy

    @classmethod
    def of_primitive(cls, primitive: Primitive) -> FunModule:
        """The primitive operator as a FunModule: calling it runs the primitive."""
        new = cls(primitive._fun)
        new._primitive = primitive
        new._plain = None
        return new

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

    @property
    def __trace_parameter__(self) -> ParameterNode[str] | None:
        """The trainable ``__code`` parameter (how containers find it), or None."""
        return self.parameter

    def __trace_input__(self) -> Node[Any]:
        """The node standing for this function when it is passed to a traced operator."""
        return self.parameter if self.parameter is not None else Node(self)

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
            commented = annotate(code.splitlines(), lineno - 1, base)
            raise self._code_error(
                e,
                commented + "\n" + base,
                "SyntaxError in trainable code definition.\n" + commented,
            ) from None
        from opto.trace.code_policy import CodePolicyError, code_spec, register_code
        from opto.trace.sandbox import define_function

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
            base = base_message(e)
            lines_ = code.splitlines()
            commented = annotate(lines_, lineno - 1, base) if lineno else code
            raise self._code_error(
                e, commented + "\n" + base, traceback_module.format_exc()
            ) from None
        if inspect.iscoroutinefunction(fn) != self._is_async:
            # Callers already use the original calling convention (await or not): a switch
            # would hand them a coroutine or a node they cannot await.
            kind = "an async function (async def)" if self._is_async else "a plain function (def)"
            e = TypeError(f"The trainable code must define {self._fun_name} as {kind}")
            base = base_message(e)
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

    # -- calling: bind, then run (sync or async), then record --------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function on the data of the (wrapped) inputs; return the output node."""
        keys = self._plain
        if keys is not None and not kwargs:
            self_node = self._self_node
            inputs = args if self_node is None else (self_node, *args)
            if len(inputs) == len(keys):
                data = []
                for value in inputs:
                    if not isinstance(value, Node):
                        break
                    data.append(value._data)
                else:  # nodes in, positionally: nothing to bind
                    return self._run_plain(keys, inputs, data)
        return self._forward(args, kwargs)

    def _run_plain(
        self, keys: tuple[str, ...], inputs: tuple[Node[Any], ...], data: list[Any]
    ) -> Any:
        """The hot path, inline: run a plain function on the inputs' data, then record the
        output directly when the call read and created no nodes and did not fail."""
        frame = UsedNodes()
        token = USED_NODES.set([*USED_NODES.get(), frame])
        error = None
        try:
            output = self._fun(*data)
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
            name = self.output_name or self._op_name
            if _TRACING.get():
                return _new_message(output, name, self.description, keys, inputs, self)
            return _new_message(output, name, self.description, (), (), self)
        call = CallRecord(self, self._fun, keys, inputs, data, {})
        call.frame = frame
        call.output = output
        call.error = error
        return record(call)

    __call__ = forward

    def _forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Every call ``forward`` does not run inline: bind, run (sync or async), record."""
        if self._primitive is not None:
            return self._primitive(*args, **kwargs)
        fun = self.fun if self.parameter is not None else self._fun
        if self._self_node is not None:
            args = (self._self_node, *args)
        if self.overwrite_python_recursion and self._fun in RUNNING.get():
            return self._run_raw(fun, args, kwargs)
        call = self._bind(fun, args, kwargs)
        if self._is_async:
            return self._run_async(call)
        guard = self._fun if self.overwrite_python_recursion else None  # marked running
        with RunStep(call, self.catch_execution_error, guard):
            call.output = fun(*call.args, **call.kwargs)
        return record(call)

    async def _run_async(self, call: CallRecord) -> Any:
        """The run step of an ``async def`` function (awaited by the caller)."""
        guard = self._fun if self.overwrite_python_recursion else None
        with RunStep(call, self.catch_execution_error, guard):
            call.output = await call.fun(*call.args, **call.kwargs)
        return record(call)

    def _run_raw(
        self, fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Re-entrant call under ``overwrite_python_recursion``: plain Python, raw values."""
        args = tuple(a._data if isinstance(a, Node) else a for a in args)
        kwargs = {k: (v._data if isinstance(v, Node) else v) for k, v in kwargs.items()}
        return fun(*args, **kwargs)

    def _bind(
        self, fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> CallRecord:
        """The bind step: input keys, input nodes, and the arguments the function gets.

        ``forward`` binds, runs and records the common case (nodes passed positionally to a
        plain function) inline.
        """
        plan = self._plan
        keys: list[str] | tuple[str, ...]
        values: list[Any] | tuple[Any, ...]
        n_args = len(args)
        if plan is None:
            keys = [f"args_{i}" for i in range(n_args)] + list(kwargs)
            values = [*args, *kwargs.values()]
            n_call_pos = n_args
        elif plan.simple and not kwargs and n_args == len(plan.pos):
            keys, values, n_call_pos = plan.pos, args, n_args
        else:
            keys, values, n_call_pos = bind(plan, self._qualname, args, kwargs)
        nodes: list[Node[Any]] = []
        passed: list[Any] = []
        traceable = self.traceable_code
        for i, value in enumerate(values):
            if isinstance(value, Node):
                nodes.append(value)
                passed.append(value.detach() if traceable else value._data)
                continue
            key = keys[i]
            named = len(plan.pos) if plan is not None else 0
            if hasattr(type(value), "__trace_input__"):  # a bundled function passed along
                nodes.append(input_node(value, None))
                passed.append(value)
                continue
            n = Node(
                value, name=key if (i < named or i >= n_call_pos) and key.isidentifier() else None
            )
            nodes.append(n)
            passed.append(n.detach() if traceable else value)
        if not self._process_inputs:
            return CallRecord(self, fun, keys, nodes, list(args), dict(kwargs))
        if len(keys) == n_call_pos:  # positional only: the common case
            return CallRecord(self, fun, keys, nodes, passed, {})
        ckw = dict(zip(keys[n_call_pos:], passed[n_call_pos:]))
        return CallRecord(self, fun, keys, nodes, passed[:n_call_pos], ckw)

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
        if bound is None:  # first access on this instance: one bound copy, even under threads
            bound = get_or_create(
                d,
                key,
                _BIND_LOCK,  # an RLock: creating the bound copy creates the self node
                lambda: self._bound(
                    get_or_create(d, _RESERVED_SELF, _BIND_LOCK, lambda: Node(obj))
                ),
            )
        return bound

    def __copy__(self) -> FunModule:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def _bound(self, self_node: Node[Any]) -> FunModule:
        new = self.__copy__()
        new._self_node = self_node
        if self.parameter is not None:
            new.parameter = copy.deepcopy(self.parameter)
            _inherit_code_spec(self.parameter, new.parameter)
            new._compiled = None
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> FunModule:
        new = self.__copy__()
        memo[id(self)] = new
        if self.parameter is not None:
            new.parameter = copy.deepcopy(self.parameter, memo)
            _inherit_code_spec(self.parameter, new.parameter)
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
            from opto.trace.code_policy import code_spec

            state["_code_spec"] = code_spec(self.parameter)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        spec = state.pop("_code_spec", None)
        self.__dict__.update(state)
        if spec is not None:
            from opto.trace.code_policy import register_code

            register_code(self.parameter, spec.original, spec.policy)


def _inherit_code_spec(parameter: ParameterNode[str], copy_: ParameterNode[str]) -> None:
    """Give a copied ``__code`` parameter the code spec of the original (imported lazily)."""
    from opto.trace.code_policy import inherit_code_spec

    inherit_code_spec(parameter, copy_)


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
    """The bundled function `module.qualname` of this process (unpickling a `_FunRef`)."""
    import importlib

    obj: Any = importlib.import_module(module)
    try:
        for part in qualname.split("."):
            if isinstance(obj, type):  # static lookup: do not trigger the descriptor
                obj = next(k.__dict__[part] for k in obj.__mro__ if part in k.__dict__)
            else:
                obj = getattr(obj, part)
    except (AttributeError, StopIteration):
        where = (
            "it was defined in the script that started the run (__main__), which other "
            "processes (Ray workers, multiprocessing spawn) do not run: move the agent and "
            "its bundles into a module that they can import"
            if module == "__main__"
            else f"check that this process imports the same version of {module!r}"
        )
        raise ImportError(
            f"Cannot unpickle the bundled function {qualname} from {module!r}: this process "
            f"has no such function; {where}."
        ) from None
    return obj._fun if isinstance(obj, FunModule) else obj
