"""opto.trace is layered: the graph core imports nothing above it and no modules import
each other in a circle (import-linter checks the same in the lint session)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import opto.trace
from opto.trace import node
from opto.trace.containers import ParameterContainer, is_traced_function
from opto.trace.modules import Module

ROOT = Path(opto.trace.__file__).parent
CORE = {
    "_state",
    "_walk",
    "_graph",
    "_deps",
    "_children",
    "_sources",
    "errors",
    "_node",
    "_message",
    "_calls",
    "primitives",
    "_viz_style",
    "nodes",
}
#: The documented upward calls: Node.backward and iterating a node.
UPWARD = {("_node", "propagators.backward"), ("_node", "iterators")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """opto.trace modules imported anywhere in the file (function level included)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    checking = {  # imports for annotations only: never run
        id(inner)
        for stmt in ast.walk(tree)
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
        for inner in ast.walk(stmt)
    }
    for stmt in ast.walk(tree):
        if id(stmt) in checking:
            continue
        if (
            isinstance(stmt, ast.ImportFrom)
            and stmt.module
            and stmt.module.startswith("opto.trace")
        ):
            base = stmt.module.removeprefix("opto.trace").lstrip(".")
            for alias in stmt.names:
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(
                    candidate if (ROOT / (candidate.replace(".", "/") + ".py")).exists() else base
                )
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name.startswith("opto.trace."):
                    found.add(alias.name.removeprefix("opto.trace."))
    return {name for name in found if name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def test_graph_core_imports_nothing_above_it():
    for name, imported in _graph().items():
        if name not in CORE:
            continue
        above = {m for m in imported if m not in CORE and (name, m) not in UPWARD}
        assert not above, f"opto.trace.{name} imports {sorted(above)} above the graph core"


def test_no_import_cycle_except_the_documented_upward_calls():
    graph = _graph()
    for name, imported in graph.items():
        graph[name] = {m for m in imported if (name, m) not in UPWARD and m != name and m in graph}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for m in sorted(graph[name]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, name, m]))
            if m not in state:
                visit(m, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_operators_on_nodes_need_no_bundle_machinery():
    code = (
        "import sys\n"
        "from opto.trace import node\n"
        "x = node(3, trainable=True)\n"
        "y = (x + 1) * 2 - x\n"
        "assert y.data == 5 and y.op_name == 'subtract'\n"
        "assert node('a b').split().data == ['a', 'b']\n"
        "assert 'opto.trace.operators' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_containers_find_parameters_through_the_protocol():
    class Holder:
        """Not a FunModule: declares its parameter through ``__trace_parameter__``."""

        def __init__(self, parameter):
            self.parameter = parameter

        @property
        def __trace_parameter__(self):
            return self.parameter

    class Agent(Module):
        def __init__(self):
            self.tool = Holder(node("code", trainable=True))
            self.fixed = Holder(None)

        def forward(self, x):
            return x

    agent = Agent()
    assert is_traced_function(agent.tool) and not is_traced_function(object())
    assert agent.parameters() == [agent.tool.parameter]
    assert isinstance(agent, ParameterContainer)


def test_trainable_code_checks_load_only_when_needed(tmp_path):
    """``import opto.trace`` and plain bundles leave code_policy, sandbox, loading and attrs
    unloaded; a trainable bundle loads them and its ``__code`` (and a copy's) is registered."""
    script = tmp_path / "lazy_checks.py"
    script.write_text(
        "import copy, sys\n"
        "from opto.trace import bundle, node\n"
        "from opto.trace.modules import Module\n"
        "LAZY = ('attrs', 'opto.trace.code_policy', 'opto.trace.sandbox', 'opto.trace.loading')\n"
        "@bundle()\n"
        "def twice(x):\n"
        "    return 2 * x\n"
        "assert twice(node(2)).data == 4\n"
        "loaded = [m for m in LAZY if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "@bundle(trainable=True)\n"
        "def thrice(x):\n"
        "    return 3 * x\n"
        "from opto.trace.code_policy import code_spec\n"
        "assert code_spec(thrice.parameter).original.startswith('def thrice')\n"
        "assert thrice(node(2)).data == 6\n"
        "clone = copy.deepcopy(thrice)\n"
        "assert code_spec(clone.parameter) == code_spec(thrice.parameter)\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path)


def test_each_once_walks_depth_first_each_object_once_by_identity():
    from opto.trace._walk import each_once

    a, b, c = [1], [1], [2]  # a and b are equal but distinct
    graph = {id(a): [b, c, a], id(b): [c], id(c): [a]}
    stack = [a]
    order = []
    for item in each_once(stack):
        order.append(item)
        stack.extend(graph[id(item)])
    assert [id(x) for x in order] == [id(a), id(c), id(b)]  # last pushed, first walked
    assert list(each_once([a, b, c], {id(b)})) == [c, a]  # excluded up front
