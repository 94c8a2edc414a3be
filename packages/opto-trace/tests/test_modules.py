"""Module / @model: parameter discovery, inheritance, forward, decorator metadata."""

import functools
import subprocess
import sys
import textwrap

import pytest
from opto.trace.bundle import bundle
from opto.trace.containers import ParameterContainer, trainable_method
from opto.trace.modules import Model, Module, model
from opto.trace.nodes import Node, ParameterNode, node


class BaseModule(Module):
    def __init__(self):
        super().__init__()
        self._param = node(1, trainable=True)

    @bundle(trainable=True)
    def method1(self, x):
        return x

    def method2(self, y):
        return y

    def forward(self, i):
        return self.method1(i)


def dummy_method():
    return 1


class ChildModule(BaseModule):
    def __init__(self):
        super().__init__()
        self._extra_param = node(1, trainable=True)
        self._extra_method = bundle(trainable=True)(dummy_method)
        self._base = BaseModule()

    @bundle(trainable=True)
    def method1(self, x):
        return x


@model
class BaseClass:
    """A base agent."""

    def __init__(self):
        super().__init__()
        self._param = node(1, trainable=True)

    @bundle(trainable=True)
    def method1(self, x):
        return x

    def method2(self, y):
        return y

    def forward(self, i):
        return self.method1(i)


class ChildClass(BaseClass):
    def __init__(self):
        super().__init__()
        self._extra_param = node(1, trainable=True)
        self._extra_method = bundle(trainable=True)(dummy_method)
        self._base = BaseClass()

    @bundle(trainable=True)
    def method1(self, x):
        return x


class NonModuleBase:
    def __init__(self):
        pass

    @bundle()
    def method1(self):
        return 1


@model
class ChildOfNonModule(NonModuleBase):
    def __init__(self):
        super().__init__()

    @bundle(trainable=True)
    def method2(self, x):
        return self.method1() + x

    def forward(self, i):
        return self.method2(i)


def test_module_counts_own_and_bundled_method_parameters():
    base = BaseModule()
    assert list(base.parameters_dict()) == ["_param", "method1"]
    assert len(base.parameters()) == 2
    assert base.parameters_dict()["method1"] is base.method1.parameter
    assert all(isinstance(p, ParameterNode) for p in base.parameters())


def test_module_inheritance_and_nesting_counts():
    child = ChildModule()
    assert sorted(child.parameters_dict()) == [
        "_base",
        "_extra_method",
        "_extra_param",
        "_param",
        "method1",
    ]
    assert len(child.parameters()) == 6
    assert isinstance(child.parameters_dict()["_base"], BaseModule)


def test_model_decorator_counts_and_inheritance():
    base = BaseClass()
    assert len(base.parameters()) == 2
    assert len(base.parameters_dict()) == 2
    child = ChildClass()
    assert len(child.parameters()) == 6
    assert len(child.parameters_dict()) == 5


def test_model_keeps_name_docstring_and_module():
    assert BaseClass.__name__ == "BaseClass"
    assert BaseClass.__qualname__ == "BaseClass"
    assert BaseClass.__doc__ == "A base agent."
    assert BaseClass.__module__ == __name__
    assert issubclass(BaseClass, Model) and issubclass(BaseClass, Module)
    assert isinstance(BaseClass(), ParameterContainer)


def test_model_rejects_non_classes():
    with pytest.raises(TypeError, match="decorates classes"):
        model(dummy_method)


def test_multiple_inheritance_with_a_non_module_base():
    child = ChildOfNonModule()
    result = child.forward(1)
    assert result._data == 2
    # The non-trainable base bundle adds no parameter; the trainable one adds its code.
    assert list(child.parameters_dict()) == ["method2"]


def test_each_instance_reports_its_own_method_code_parameter():
    a, b = BaseModule(), BaseModule()
    assert a.method1.parameter is not b.method1.parameter
    assert a.parameters_dict()["method1"] is a.method1.parameter
    # Reading parameters twice does not create new per-instance copies.
    assert a.parameters_dict()["method1"] is a.parameters_dict()["method1"]


def test_parameters_lists_a_shared_node_once_and_skips_plain_nodes():
    class Holder(Module):
        def __init__(self):
            self.p = node("v", trainable=True)
            self.alias = self.p
            self.frozen = ParameterNode(3, trainable=False)
            self.plain = node(5)
            self.values = [node(1, trainable=True)]  # lists are not searched

    holder = Holder()
    assert set(holder.parameters_dict()) == {"p", "alias", "frozen"}
    params = holder.parameters()
    assert len(params) == 2
    assert params[0] is holder.p and params[1] is holder.frozen
    assert not isinstance(holder.plain, ParameterNode) and isinstance(holder.plain, Node)


def test_properties_are_not_evaluated():
    calls = []

    class WithProperty(Module):
        def __init__(self):
            self.p = node(1, trainable=True)

        @property
        def expensive(self):
            calls.append(1)
            return self.p

    assert len(WithProperty().parameters()) == 1
    assert calls == []


def test_trainable_method_wrapped_in_partial_is_rejected():
    class WithPartial(Module):
        def __init__(self):
            self.fn = functools.partial(self.method1, 1)

        @bundle(trainable=True)
        def method1(self, x):
            return x

    with pytest.raises(ValueError, match=r"cannot be a wrapped by functools\.partial"):
        WithPartial().parameters()


def test_non_trainable_partial_is_ignored():
    class WithPartial(Module):
        def __init__(self):
            self.fn = functools.partial(self.method1, 1)

        @bundle()
        def method1(self, x):
            return x

    assert WithPartial().parameters() == []


def test_unknown_parameter_types_raise():
    class Odd(Module):
        def parameters_dict(self):
            return {"x": 3}

    with pytest.raises(ValueError, match="unknown parameter type"):
        Odd().parameters()


def test_trainable_method_helper():
    @bundle(trainable=True)
    def f(x):
        return x

    @bundle()
    def g(x):
        return x

    assert trainable_method(f) is True
    assert trainable_method(g) is False
    assert trainable_method(dummy_method) is False


def test_module_forward_and_call():
    with pytest.raises(NotImplementedError, match="must define forward"):
        Module()(1)

    class Double(Module):
        def forward(self, x):
            return 2 * x

    assert Double()(4) == 8


def test_cyclic_module_references_terminate():
    class Parent(Module):
        def __init__(self):
            self.p = node(1, trainable=True)
            self.child = Child(self)

    class Child(Module):
        def __init__(self, parent):
            self.parent = parent
            self.q = node(2, trainable=True)

    parent = Parent()
    assert {id(p) for p in parent.parameters()} == {id(parent.p), id(parent.child.q)}


def test_model_works_without_source_code(tmp_path):
    script = textwrap.dedent(
        """
        from opto.trace.modules import ExportError, model
        from opto.trace.nodes import node

        @model
        class Agent:
            '''An agent without a source file.'''
            def __init__(self):
                self.prompt = node("hi", trainable=True)

            def forward(self, x):
                return self.prompt.data + x

        agent = Agent()
        assert agent("!") == "hi!"
        assert Agent.__doc__ == "An agent without a source file."
        assert len(agent.parameters()) == 1
        agent.save(OUT + "/agent.json")
        try:
            agent.export(OUT + "/agent.py")
        except ExportError as exc:
            print("EXPORT-ERROR", exc)
        """
    )
    # exec with a made-up filename: no Python version can find this source (3.13 keeps the
    # source of `python -c` in linecache, so plain `-c` is not enough).
    runner = f"OUT = {str(tmp_path)!r}\nexec(compile({script!r}, '<no-source>', 'exec'))\n"
    result = subprocess.run(
        [sys.executable, "-c", runner],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "EXPORT-ERROR" in result.stdout
    assert "not python -c or exec" in result.stdout
    assert (tmp_path / "agent.json").is_file()
