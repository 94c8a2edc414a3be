"""bundle: wrapping, input keys, options, methods, trainable code, copies, dependency rules."""

from __future__ import annotations

import copy
import random
import threading

import pytest
from opto import trace
from opto.trace import operators as ops
from opto.trace.bundle import (
    EVAL_DESCRIPTION,
    FunModule,
    bundle,
    disable_external_dependencies_check,
    to_data,
)
from opto.trace.errors import ExecutionError, TraceMissingInputsError
from opto.trace.nodes import GRAPH, MessageNode, Node, ParameterNode, node
from opto.trace.propagators import GraphPropagator

GLOBAL_OFFSET = 10
EXEC_LOG: list[int] = []


pytestmark = pytest.mark.usefixtures("fresh_graph")


@pytest.fixture(autouse=True)
def _default_dependency_check():
    yield
    disable_external_dependencies_check(None)  # type: ignore[arg-type]


# -- basics -----------------------------------------------------------------------------------


@bundle()
def add_offset(x, y=1):
    """Adds x, y and a global offset."""
    return x + y + GLOBAL_OFFSET


def test_output_node_name_description_inputs_and_data():
    x = node(1, name="x")
    out = add_offset(x)
    assert isinstance(out, MessageNode)
    assert out.data == 12
    assert out.name == "add_offset:0"
    assert out._description == "[add_offset] Adds x, y and a global offset."
    assert list(out.inputs) == ["x", "y"]
    assert out.inputs["x"] is x
    assert out.inputs["y"].name == "y:0" and out.inputs["y"].data == 1
    assert out.parents[0] is x


def test_defaults_varargs_and_varkw_become_inputs():
    @bundle()
    def foo(a, b=2, *args, c=3, **kw):
        return a + b + sum(args) + c + sum(kw.values())

    assert list(foo(1).inputs) == ["a", "b", "c"]
    out = foo(1, 2, 3, 4, c=5, extra=6)
    assert out.data == 21
    assert list(out.inputs) == ["a", "b", "args_0", "args_1", "c", "extra"]
    assert out.inputs["args_0"].name == "int:0"  # varargs values are named by type
    assert out.inputs["extra"].name == "extra:0"
    with pytest.raises(TypeError, match="missing"):
        foo()
    with pytest.raises(TypeError, match="multiple values"):
        foo(1, a=2)


def test_keyword_only_and_unexpected_keywords():
    @bundle()
    def kwonly(a, *, scale):
        return a * scale

    assert kwonly(2, scale=3).data == 6
    with pytest.raises(TypeError, match="unexpected"):
        kwonly(2, scale=3, other=1)
    with pytest.raises(TypeError, match="positional"):
        add_offset(1, 2, 3)
    with pytest.raises(TypeError, match="missing required keyword argument: 'scale'"):
        kwonly(2)


def test_positional_only_parameters_bind_like_python():
    @bundle()
    def po(a, /, b=2, **kw):
        return (a, b, sorted(kw))

    assert po(1, a=5).data == (1, 2, ["a"])  # a keyword named like a positional-only one
    with pytest.raises(TypeError, match="missing required argument: 'a'"):
        po(a=1)


def test_a_declared_signature_names_the_inputs():
    import inspect

    def wrapped(a, b=2):
        return a * b

    def wrapper(*args, **kwargs):
        return wrapped(*args, **kwargs)

    wrapper.__signature__ = inspect.signature(wrapped)
    traced = bundle()(wrapper)
    out = traced(node(3))
    assert out.data == 6 and list(out.inputs) == ["a", "b"]
    assert traced(a=node(3), b=4).data == 12
    with pytest.raises(TypeError, match="missing required argument: 'a'"):
        traced(b=1)


def test_existing_nodes_keep_their_names_and_mixed_args():
    @bundle()
    def combine(*items, **named):
        return list(items) + sorted(named.values())

    a = node(1, name="a")
    out = combine(a, 2, k=node(3, name="k"), j=4)
    assert out.data == [1, 2, 3, 4]
    assert [n.name for n in out.parents] == ["a:0", "int:0", "k:0", "j:0"]


def test_custom_and_dotted_descriptions_and_output_name():
    @bundle("[my.op] Does things.")
    def f(x):
        return x

    out = f(1)
    assert out.name == "my.op:0" and out.description == "Does things."

    @bundle(output_name="answer")
    def g(x):
        return x

    assert g(1).name == "answer:0"


def test_bad_bundle_usage_errors_name_the_fix():
    with pytest.raises(TypeError, match=r"@bundle\(\)"):

        @bundle
        def f(x):
            return x

    with pytest.raises(ValueError, match="operator name in brackets"):
        bundle("no tag here")
    with pytest.raises(TypeError, match="callable"):
        bundle()(42)
    with pytest.raises(TypeError, match="callable"):
        bundle()(node(lambda: 1))
    with pytest.raises(ValueError, match="output_name"):
        bundle(output_name="a:b")(lambda: 1)


def test_bundle_and_fun_module_take_the_same_options():
    import inspect

    from opto.trace._bundle_options import BundleOptions

    options = list(inspect.signature(BundleOptions).parameters.values())
    assert list(inspect.signature(bundle).parameters.values()) == options
    params = list(inspect.signature(FunModule).parameters.values())
    assert [p.name for p in params[:1]] == ["fun"] and params[1:-1] == options
    assert params[-1].name == "_ldict" and params[-1].kind is params[-1].KEYWORD_ONLY
    assert inspect.signature(bundle).parameters["trainable"].default is False
    with pytest.raises(TypeError, match="trainabel"):
        bundle(trainabel=True)
    with pytest.raises(TypeError, match="trainabel"):
        FunModule(lambda x: x, trainabel=True)
    with pytest.raises(ValueError, match="output_name"):
        bundle(output_name="a:b")  # checked when bundle is called, before decorating
    positional = FunModule(lambda x: x, "[op] Doc.", False, True, False, False)
    assert positional.description == "[op] Doc." and not positional.catch_execution_error
    assert bundle(None, False, True, False, False)(lambda x: 1 / 0).catch_execution_error is False


def test_locals_and_closures_are_visible():
    factor = 3

    @bundle()
    def scaled(x):
        return x * factor

    assert scaled(2).data == 6


def test_tuple_outputs_are_one_node_and_can_be_unpacked():
    @bundle()
    def pair(x):
        return x, x + 1

    out = pair(1)
    assert out.data == (1, 2)
    first, second = out
    assert (first.data, second.data) == (1, 2)
    assert first.parents[0] is out


def test_returned_node_is_unwrapped_into_data():
    inner = node(5)

    @bundle(_process_inputs=False)
    def passthrough(x):
        return x

    out = passthrough(inner)
    assert out.data == 5 and out.parents == [inner]


def test_zero_input_bundles_and_dict_outputs():
    @bundle()
    def make():
        return {"a": 1}

    out = make()
    assert out.data == {"a": 1} and out.parents == [] and out.inputs == {}
    assert out["a"].data == 1


def test_randomness_is_reproducible_under_seed():
    @bundle()
    def draw(n):
        return [random.random() for _ in range(n)]

    random.seed(0)
    first = draw(3).data
    random.seed(0)
    assert draw(3).data == first


def test_attribute_mutation_and_globals_in_plain_bundles():
    class Box:
        value = 0

    box = Box()

    @bundle()
    def bump(b):
        b.value += 1
        return b.value

    assert bump(box).data == 1 and box.value == 1
    store: list[int] = []

    @bundle()
    def record(x):
        store.append(x)
        return len(store)

    assert record(3).data == 1 and store == [3]


# -- per-call info (B6) -----------------------------------------------------------------------------


def test_info_is_fresh_per_call_b6():
    @bundle()
    def f(x):
        if x < 0:
            raise ValueError("negative")
        return x

    a = f(1)
    with pytest.raises(ExecutionError):
        f(-1)
    b = f(2)
    assert a.info["inputs"] == {"args": [1], "kwargs": {}}
    assert b.info["inputs"] == {"args": [2], "kwargs": {}}
    assert a.info["inputs"] is not b.info["inputs"]
    assert b.info["error_comment"] is None and b.info["traceback"] is None
    assert a.info["output"] == 1 and b.info["output"] == 2
    assert a.info["fun_name"] == "test_info_is_fresh_per_call_b6.f"
    assert a.info["_fun_name"] == "f"
    assert "def f(x):" in a.info["source"]
    assert a.info["external_dependencies"] is None
    assert set(a.info) >= {"fun", "doc", "signature", "line_number", "file"}


def test_static_info_on_the_bundle():
    assert add_offset.info["fun_name"] == "add_offset"
    assert add_offset.info["doc"] == "Adds x, y and a global offset."
    assert add_offset.name == "add_offset"
    assert add_offset.parameters() == [] and add_offset.parameters_dict() == {}


# -- external dependencies and nested reads ----------------------------------------------------------


def test_reading_a_non_input_node_is_an_error_with_the_reference_message():
    secret = node(5, name="secret")

    @bundle()
    def peek(x):
        return x + secret.data

    with pytest.raises(TraceMissingInputsError) as info:
        peek(1)
    message = str(info.value)
    assert message.startswith("Not all nodes used in the operator")
    assert "are specified as inputs of the returned node. Missing [('secret:0', 5)]" in message


def test_allowed_external_dependencies_are_recorded_not_parents():
    secret = node(5, name="secret")

    @bundle(allow_external_dependencies=True)
    def peek(x):
        return x + secret.data

    out = peek(1)
    assert out.data == 6
    assert out.info["external_dependencies"] == [secret]
    assert secret not in out.parents


def test_global_override_of_the_external_dependency_check():
    secret = node(5)

    @bundle()
    def peek(x):
        return x + secret.data

    disable_external_dependencies_check(True)
    assert peek(1).data == 6
    disable_external_dependencies_check(False)

    @bundle(allow_external_dependencies=True)
    def peek2(x):
        return x + secret.data

    with pytest.raises(TraceMissingInputsError):
        peek2(1)


def test_nodes_created_inside_the_call_are_not_external():
    @bundle()
    def build(x):
        inner = node(x * 2)
        return inner.data + 1

    assert build(1).data == 3


def test_reads_inside_nested_operators_become_parents_b23():
    items = [node(i, name=f"item{i}", trainable=True) for i in range(3)]

    @bundle()
    def total(xs):
        return sum(xs)

    out = total(items)
    assert out.data == 3
    assert set(out.parameter_dependencies) == set(items)
    assert [p.name for p in out.parents[1:]] == ["item0:0", "item1:0", "item2:0"]
    assert list(out.inputs)[1:] == ["item00", "item10", "item20"]


def test_trainable_method_reading_a_parameter_sends_it_feedback_b23():
    class Agent:
        def __init__(self):
            self._param = node(2, name="param", trainable=True)

        @bundle(trainable=True)
        def act(self, x):
            return x + self._param

    agent = Agent()
    out = agent.act(1)
    assert out.data == 3
    assert agent._param in out.parents
    assert len(out.parents) == 4  # self, x, __code, and the parameter read inside
    out.backward("good", propagator=GraphPropagator())
    assert agent._param.feedback


def test_nested_bundle_parents_one_or_two_when_trainable():
    @bundle()
    def inner(x):
        return x + 1

    @bundle()
    def outer(x):
        return inner(x) * 2

    @bundle(trainable=True)
    def outer_trainable(x):
        return inner(x) * 2

    out = outer(1)
    assert out.data == 4 and len(out.parents) == 1
    out2 = outer_trainable(1)
    assert out2.data == 4 and len(out2.parents) == 2
    assert out2.parents[1] is outer_trainable.parameter


# -- stop_tracing -------------------------------------------------------------------------------------


def test_stop_tracing_gives_parentless_nodes_and_nests_b2():
    x = node(1)
    with trace.stop_tracing():
        z = x + 2
        with trace.stop_tracing():
            pass
        still_off = x + 1  # leaving the inner block keeps tracing off (B2)
    traced = x + 1
    assert z == 3 and z.inputs == {} and z.parents == []
    assert still_off.parents == []
    assert traced.parents[0] is x


def test_trainable_bundle_under_stop_tracing_b8():
    @bundle(trainable=True)
    def f(x):
        return x + 1

    with trace.stop_tracing():
        out = f(1)
    assert out.data == 2 and out.parents == []


def test_stop_tracing_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other():
        inside.wait()
        seen["other"] = (node(1) + 1).parents != []
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with trace.stop_tracing():
        inside.set()
        release.wait(10)
        seen["main"] = (node(1) + 1).parents != []
    t.join()
    assert seen == {"other": True, "main": False}


# -- methods -----------------------------------------------------------------------------------------


class Counter:
    def __init__(self, start):
        self.start = start

    @bundle()
    def plus(self, x):
        """Adds to start."""
        return self.start + x

    @bundle("[op] first")
    def first(self):
        return "first"

    @bundle("[op] second")
    def second(self):
        return "second"

    @bundle(trainable=True)
    def scaled(self, x):
        """Scales x."""
        return self.start * x


def test_methods_get_a_per_instance_self_node_and_cached_bundle():
    a, b = Counter(1), Counter(2)
    assert a.plus is a.plus
    assert a.plus is not b.plus
    assert Counter.plus is not a.plus and isinstance(Counter.plus, FunModule)
    out = a.plus(5)
    assert out.data == 6
    assert out.parents[0].data is a
    assert out.parents[0].name.startswith("Counter:")
    assert list(out.inputs) == ["self", "x"]
    assert a.plus(1).parents[0] is out.parents[0]


def test_same_op_name_methods_do_not_collide_b7():
    c = Counter(0)
    assert c.first().data == "first"
    assert c.second().data == "second"


def test_trainable_methods_have_per_instance_code_and_three_parents():
    a, b = Counter(2), Counter(3)
    out = a.scaled(4)
    assert out.data == 8
    assert len(out.parents) == 3
    assert out.parents[2] is a.scaled.parameter
    assert a.scaled.parameter is not b.scaled.parameter
    assert a.scaled.parameter is not Counter.scaled.parameter
    assert a.scaled.parameter.data == Counter.scaled.parameter.data
    assert a.scaled.parameter.name.startswith("__code")
    assert "_copy" in a.scaled.parameter.name
    c = copy.deepcopy(a)
    assert c.scaled.parameter is not a.scaled.parameter
    assert c.scaled(1).data == 2


def test_bound_method_creation_is_thread_safe():
    obj = Counter(1)
    results = []
    barrier = threading.Barrier(8)

    def grab():
        barrier.wait()
        results.append(obj.plus)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is results[0] for r in results)


def test_bundled_method_composes_with_other_decorators():
    def logged(fn):
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)

        return wrapper

    class A:
        @bundle()
        @logged
        def m(self, x):
            return x * 2

    assert A().m(2).data == 4


# -- trainable code ------------------------------------------------------------------------------------


def test_trainable_bundle_code_parameter_and_eval_outputs():
    @bundle(trainable=True)
    def my_fun(x):
        """Test function"""
        return x**2 + 1

    param = my_fun.parameter
    assert isinstance(param, ParameterNode) and param.trainable
    assert param.name.startswith("__code:")
    assert param._description == (
        '[ParameterNode] The code should start with:\ndef my_fun(x):\n    """Test function"""'
    )
    assert my_fun.trainable and my_fun.parameters() == [param]
    assert my_fun.parameters_dict() == {"parameter": param}
    out = my_fun(node(-1, name="x"))
    assert out.data == 2
    assert out.name == "eval:0"
    assert out._description == EVAL_DESCRIPTION
    assert list(out.inputs) == ["x", "__code"]
    assert out.info["fun_name"] == "eval"
    assert param in out.parameter_dependencies


def test_new_code_takes_effect_and_is_compiled_once_b19():
    @bundle(trainable=True)
    def f(x):
        return x + 1

    assert f(1).data == 2
    f.parameter._set("EXEC_LOG.append(1)\ndef f(x):\n    return x + 100\n")
    assert [f(i).data for i in range(3)] == [100, 101, 102]
    assert EXEC_LOG == [1]
    f.parameter._set("def f(x):\n    return x - 1\n")
    assert f(1).data == 0


def test_helpers_and_imports_around_trainable_code_are_visible():
    @bundle(trainable=True)
    def f(x):
        return x

    f.parameter._set(
        "import math\n\ndef helper(v):\n    return math.sqrt(v)\n\n"
        "def f(x):\n    return helper(x) + later(x)\n\ndef later(v):\n    return v\n"
    )
    assert f(4).data == 6.0


def test_trainable_code_sees_module_globals_and_recursion():
    @bundle(trainable=True)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    out = fib(10)
    assert out.data == 55
    assert len(out.parents) == 2  # n and __code: recursion runs the raw function

    @bundle(trainable=True)
    def uses_global(x):
        return x + GLOBAL_OFFSET

    assert uses_global(1).data == 11


def test_trainable_requires_source():
    namespace: dict = {}
    exec("def nosrc(x):\n    return x\n", namespace)
    with pytest.raises(ValueError, match="source code is not available"):
        bundle(trainable=True)(namespace["nosrc"])


def test_projections_are_attached_to_the_code_parameter():
    class Upper:
        def project(self, x):
            return x

    proj = Upper()

    @bundle(trainable=True, projections=[proj])
    def f(x):
        return x

    assert f.parameter.projections == [proj]

    def g(x):
        return x

    with pytest.raises(TypeError, match="must be a list of Projection"):
        bundle(trainable=True, projections=[3])(g)
    with pytest.raises(TypeError, match="defined with `def`"):
        bundle(trainable=True)(lambda x: x)


# -- recursion ------------------------------------------------------------------------------------------


@bundle(overwrite_python_recursion=True)
def recursion(n):
    return n if n < 2 else recursion(n - 1) + recursion(n - 2)


@bundle()
def traced_recursion(n):
    return n if n < 2 else traced_recursion(n - 1) + traced_recursion(n - 2)


def test_overwrite_python_recursion_runs_inner_calls_raw_b22():
    import sys

    tracer = sys.gettrace()
    out = recursion(10)
    assert out.data == 55 and len(out.parents) == 1
    assert sys.gettrace() is tracer
    assert recursion(node(3)).data == 2  # the marker was reset


def test_default_recursion_goes_through_the_bundle():
    GRAPH.clear()
    recursion(4)
    raw_names = len(GRAPH)
    GRAPH.clear()
    out = traced_recursion(4)
    assert out.data == 3
    assert len(out.parents) == 1  # inner nodes were all created during the call
    assert len(GRAPH) > raw_names  # every inner call built nodes


# -- inputs that are bundles, _process_inputs, traceable_code ------------------------------------------


def test_funmodule_arguments_b5():
    @bundle(trainable=True)
    def double(x):
        return x * 2

    @bundle()
    def plain(x):
        return x + 1

    @bundle()
    def apply(fn, v):
        return fn(v).data if isinstance(fn(v), Node) else fn(v)

    out = apply(double, 3)
    assert out.data == 6
    assert out.inputs["fn"] is double.parameter
    out2 = apply(plain, 3)
    assert out2.data == 4
    assert out2.inputs["fn"].data is plain


def test_process_inputs_false_receives_original_arguments():
    @bundle(trainable=True)
    def double(x):
        return x * 2

    @bundle(_process_inputs=False)
    def run(fn, v):
        assert isinstance(fn, FunModule) and isinstance(v, Node)
        return fn(v)

    x = node(3)
    out = run(double, x)
    assert out.data == 6
    assert out.inputs["fn"] is double.parameter and out.inputs["v"] is x


def test_traceable_code_keeps_the_inner_graph():
    @bundle(traceable_code=True)
    def inner(x):
        assert isinstance(x, Node) and x.name.endswith("_copy:0")
        return x * 2

    x = node(3, name="x")
    out = inner(x)
    assert out.data == 6
    assert out.parents == [x]
    assert isinstance(out.info["output"], MessageNode)
    assert out.info["inputs"]["args"][0].name == "x0_copy:0"


def test_catch_execution_error_false_raises_raw():
    @bundle(catch_execution_error=False)
    def boom(x):
        raise KeyError("k")

    with pytest.raises(KeyError):
        boom(1)


# -- source-less callables (B13) --------------------------------------------------------------------------


def test_lambdas_builtins_callables_and_exec_code_can_be_bundled_b13():
    inc = bundle()(lambda v: v + 1)
    assert inc(1).data == 2
    assert inc(1).name.endswith("<lambda>:1")
    length = bundle()(len)
    out = length([1, 2, 3])
    assert out.data == 3 and list(out.inputs) == ["obj"]
    assert "len" in out.info["source"]

    class Mul:
        def __call__(self, a, b):
            return a * b

    mul = bundle()(Mul())
    assert mul(2, 3).data == 6
    namespace: dict = {}
    exec("def nosrc(x):\n    'doc'\n    return x * 3\n", namespace)
    nosrc = bundle()(namespace["nosrc"])
    out = nosrc(2)
    assert out.data == 6 and out.description == "doc"
    assert "source not available" in out.info["source"]
    assert out.info["line_number"] is None


# -- copies ---------------------------------------------------------------------------------------------


def test_copying_bundles():
    @bundle(trainable=True)
    def f(x):
        return x + 1

    shallow = copy.copy(f)
    deep = copy.deepcopy(f)
    detached = f.detach()
    assert shallow.parameter is f.parameter
    assert deep.parameter is not f.parameter and deep.parameter.data == f.parameter.data
    assert detached.parameter is not f.parameter
    f.parameter._set("def f(x):\n    return x + 2\n")
    assert f(1).data == 3 and shallow(1).data == 3
    assert deep(1).data == 2 and detached(1).data == 2


# -- to_data ---------------------------------------------------------------------------------------------


def test_to_data_on_nodes_and_nested_containers():
    x = node(1)
    assert to_data(x) == 1
    assert to_data([x, node(2)]) == [1, 2]
    assert to_data({"a": (x, {node(3)})}) == {"a": (1, {3})}
    nested = node([node(1)])
    assert isinstance(to_data(nested)[0], Node)  # nodes inside data are not reached
    assert to_data(5) == 5

    @bundle()
    def g(v):
        return v

    assert to_data(g) is g


def test_operator_bundles_are_funmodules_with_modules_api():
    assert isinstance(ops.multiply, FunModule)
    assert isinstance(ops.multiply, trace.Module)


def test_traceable_code_may_read_its_detached_inputs():
    @bundle(traceable_code=True)
    def reads(x):
        return x.data + 1

    x = node(1)
    out = reads(x)
    assert out.data == 2 and out.parents == [x]
    assert out.info["external_dependencies"] is None


def test_lisp_style_trainable_bundles_and_backward_to_code():
    @bundle(trainable=True)
    def standard_env():
        """Build the environment."""
        return {"+": lambda a, b: a + b, "*": lambda a, b: a * b}

    @bundle(trainable=True, catch_execution_error=False)
    def evaluate(expr, env):
        """Evaluate a tiny prefix expression."""
        if isinstance(expr, list):
            op, *args = expr
            values = [evaluate(a, env) for a in args]  # recursion runs the raw function
            return env[op](*values)
        return expr

    env = standard_env()
    assert env.parents == [standard_env.parameter]
    out = evaluate(["+", 1, ["*", 2, 3]], env)
    assert out.data == 7
    assert env in out.parents and evaluate.parameter in out.parents
    out.backward("should be 8", propagator=GraphPropagator())
    assert evaluate.parameter.feedback and standard_env.parameter.feedback
    with pytest.raises(KeyError):
        evaluate(["-", 1, 2], env)


def test_nonlocal_and_global_mutation_in_plain_bundles():
    count = 0

    @bundle()
    def bump(x):
        nonlocal count
        count += x
        return count

    assert bump(2).data == 2 and bump(3).data == 5 and count == 5


def test_bundles_applied_by_a_class_decorator():
    from opto.trace.utils import for_all_methods

    @for_all_methods(bundle())
    class Calc:
        def double(self, x):
            return 2 * x

        def triple(self, x):
            return 3 * x

    calc = Calc()
    assert calc.double(2).data == 4 and calc.triple(2).data == 6
    assert calc.double is calc.double and calc.double is not calc.triple


def test_nodes_made_inside_nested_calls_stay_internal_to_the_outer_call():
    @bundle(_process_inputs=False)
    def make_nodes(n):
        return [node(i) for i in range(n)]

    @bundle()
    def outer(n):
        made = make_nodes(n)
        return (made.data[0] + made.data[1]).data

    x = node(2, name="n")
    out = outer(x)
    assert out.data == 1
    assert out.parents == [x]


def test_bundle_under_classmethod_binds_the_class_on_every_python():
    # Python < 3.13 binds @classmethod through the bundle's __get__ with the class itself;
    # that used to write into the read-only class __dict__ (TypeError: mappingproxy).
    class Maker:
        @classmethod
        @bundle()
        def double(cls, x):
            return x * 2

        @classmethod
        @bundle(trainable=True)
        def triple(cls, x):
            return x * 3

    out = Maker.double(node(2))
    assert out.data == 4
    assert list(out.inputs) == ["cls", "x"]
    assert out.inputs["cls"].data is Maker
    assert Maker().double(node(5)).data == 10
    first, second = Maker.triple(node(1)), Maker.triple(node(2))
    assert (first.data, second.data) == (3, 6)
    # one shared __code parameter for the class (an update reaches every later call)
    assert first.parents[-1] is second.parents[-1]


def test_trainable_code_cannot_switch_between_sync_and_async():
    import asyncio

    @bundle(trainable=True)
    def plain(x):
        return x + 1

    plain.parameter._set("async def plain(x):\n    return x + 5\n")
    with pytest.raises(ExecutionError) as info:
        plain(node(1))  # used to return an un-awaited coroutine to a sync caller
    assert info.value.exception_node.data == (
        "(TypeError) The trainable code must define plain as a plain function (def)"
    )
    assert info.value.exception_node.parents == [plain.parameter]

    @bundle(trainable=True)
    async def coro(x):
        return x + 1

    coro.parameter._set("def coro(x):\n    return x + 5\n")
    with pytest.raises(ExecutionError, match="as an async function"):
        asyncio.run(coro(node(1)))  # used to fail awaiting a MessageNode
    coro.parameter._set("async def coro(x):\n    return x + 5\n")
    assert asyncio.run(coro(node(1))).data == 6


def test_method_bundles_live_in_documented_instance_attributes():
    """trace-opt code reads the per-instance bundle and self node by these names."""

    class Greeter:
        @bundle(trainable=True)
        def greet(self, name):
            return "hi " + name

    g = Greeter()
    bound = g.greet
    assert bound is g.greet
    assert vars(g)["__TRACE_RESERVED_bundle_greet"] is bound
    self_node = vars(g)["__TRACE_RESERVED_self_node"]
    assert self_node.data is g
    assert g.greet("x").data == "hi x"


def test_calls_on_nodes_report_errors_like_every_other_call():
    # Nodes passed positionally take the inline path; its errors match the general path.
    @bundle(catch_execution_error=False)
    def raw(x):
        raise KeyError("k")

    @bundle()
    def caught(x):
        raise KeyError("k")

    class Agent(trace.Module):
        @bundle(catch_execution_error=False)
        def raw(self, x):
            raise KeyError("k")

        @bundle()
        def caught(self, x):
            raise KeyError("k")

    x = node(1, name="x")
    agent = Agent()
    for fun in (raw, agent.raw):
        with pytest.raises(KeyError):
            fun(x)
    for fun in (caught, agent.caught):
        with pytest.raises(ExecutionError) as failed:
            fun(x)
        exc_node = failed.value.exception_node
        assert exc_node.data == "(KeyError) 'k'" and x in exc_node.parents
