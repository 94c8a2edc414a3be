"""Model.export: a standalone, runnable class with the current code and values."""

import functools
import importlib.util
import inspect
import json
import math
import re

import pytest
from opto.trace.bundle import bundle
from opto.trace.containers import Map, Seq
from opto.trace.modules import ExportError, model
from opto.trace.nodes import node

SCALE = 3


def load_exported(path, name):
    spec = importlib.util.spec_from_file_location(f"exported_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@model
class DummyClass:
    """A dummy model.

    With a two-paragraph docstring.
    """

    def __init__(self):
        super().__init__()
        self._param = node(1, trainable=True)
        self.regular_attr = "test"

    @bundle(trainable=True)
    def regular_method(self, x):
        return x

    def __str__(self):
        return "DummyClass"

    def __custom__(self):
        return "custom"


@model
class ComplexClass:
    def __init__(self):
        super().__init__()
        self._param = node(1, trainable=True)
        self._nested = DummyClass()

    @bundle(trainable=True)
    def complex_method(self, x):
        return self._nested.regular_method(x)

    def __str__(self):
        return "ComplexClass"


@model
class NonTrainableClass:
    def __init__(self):
        super().__init__()
        self._param = node(1, trainable=False)
        self._param2 = node(2, trainable=False)
        self.regular_attr = "test"

    @bundle(trainable=False)
    def non_trainable_method(self, x):
        return x

    @bundle(trainable=False)
    def another_non_trainable(self, y):
        return y + 1


@model
class StrangeCalculator:
    def __init__(self):
        super().__init__()
        self.offset = node(2, trainable=True)
        self.multiplier = node(1.5, trainable=True)
        self.prompt = node("x + 1", trainable=True)

    @bundle(trainable=True)
    def add(self, x, y):
        """Add two numbers with an offset"""
        return x + y + self.offset

    @bundle(trainable=True)
    def multiply(self, x, y):
        """Multiply two numbers with a multiplier"""
        return x * y * self.multiplier

    def root(self, x):
        return math.sqrt(x) * SCALE

    def describe(self):
        return self.prompt


def test_export_basic(tmp_path):
    dummy = DummyClass()
    dummy._param._set(42)
    content = dummy.export(tmp_path / "dummy.py", projections=[])
    assert content == (tmp_path / "dummy.py").read_text()
    assert "class DummyClass:" in content
    assert "def regular_method" in content
    assert "def __str__" in content and "def __custom__" in content
    assert "regular_attr" in content
    assert "self._param = 42" in content
    assert "node(" not in content and "@bundle" not in content
    Exported = load_exported(tmp_path / "dummy.py", "DummyClass")
    assert inspect.cleandoc(Exported.__doc__) == "A dummy model.\n\nWith a two-paragraph docstring."
    instance = Exported()
    assert instance._param == 42 and str(instance) == "DummyClass"
    assert instance.regular_method(5) == 5


def test_export_members_in_definition_order(tmp_path):
    content = DummyClass().export(tmp_path / "dummy.py", projections=[])
    positions = [
        content.index(f"def {name}")
        for name in ("__init__", "regular_method", "__str__", "__custom__")
    ]
    assert positions == sorted(positions)


def test_export_complex_exports_the_nested_model(tmp_path):
    obj = ComplexClass()
    obj._nested._param._set("nested value")
    content = obj.export(tmp_path / "complex.py", projections=[])
    assert "self._param = 'nested value'" in content
    assert "class ComplexClass:" in content
    assert "def complex_method" in content and "def __str__" in content
    assert "self._nested.regular_method" in content
    assert "class DummyClass:" in content  # the nested model is exported as a plain class
    assert "@model" not in content and "opto" not in content
    Exported = load_exported(tmp_path / "complex.py", "ComplexClass")
    assert str(Exported()) == "ComplexClass"
    assert Exported().complex_method(3) == 3


def test_export_non_trainable(tmp_path):
    obj = NonTrainableClass()
    obj._param._set(10)
    obj._param2._set(20)
    content = obj.export(tmp_path / "nt.py", projections=[])
    assert "self._param = 10" in content and "self._param2 = 20" in content
    assert "node(" not in content and "@bundle" not in content
    assert "def non_trainable_method" in content and "def another_non_trainable" in content
    Exported = load_exported(tmp_path / "nt.py", "NonTrainableClass")
    assert Exported().another_non_trainable(1) == 2


def test_export_mixed_trainable(tmp_path):
    @model
    class MixedClass:
        def __init__(self):
            super().__init__()
            self._trainable = node(1, trainable=True)
            self._non_trainable = node(2, trainable=False)
            self.regular_attr = "test"

        @bundle(trainable=True)
        def trainable_method(self, x):
            return x

        @bundle(trainable=False)
        def non_trainable_method(self, y):
            return y + 1

    obj = MixedClass()
    obj._trainable._set(100)
    obj._non_trainable._set(200)
    obj.trainable_method.parameter._set("def trainable_method(self, x):\n    return x + 3")
    content = obj.export(tmp_path / "mixed.py", projections=[])
    assert "self._trainable = 100" in content and "self._non_trainable = 200" in content
    assert "node(" not in content and "@bundle" not in content
    assert "return x + 3" in content and "def non_trainable_method" in content
    Exported = load_exported(tmp_path / "mixed.py", "MixedClass")
    assert Exported().trainable_method(1) == 4


def test_export_and_run_with_imports_and_string_values(tmp_path):
    calc = StrangeCalculator()
    calc.offset._set(3)
    calc.multiplier._set(2.0)
    calc.prompt._set("changed")
    calc.add.parameter._set("def add(self, x, y):\n    return x + y + self.offset + 1")
    calc.multiply.parameter._set(
        "def multiply(self, x, y):\n    return x * y * self.multiplier * 2"
    )
    content = calc.export(tmp_path / "calc.py", projections=[])
    assert "self.prompt = 'changed'" in content  # a string literal, not code (B12)
    assert "import math" in content and "SCALE = 3" in content
    Exported = load_exported(tmp_path / "calc.py", "StrangeCalculator")
    imported = Exported()
    assert imported.add(5, 3) == 12
    assert imported.multiply(4, 2) == 32
    assert imported.offset == 3 and imported.multiplier == 2.0
    assert imported.describe() == "changed"
    assert imported.root(4) == 6.0


def test_export_instance_bundle_attribute_becomes_a_function(tmp_path):
    @model
    class WithHelper:
        def __init__(self):
            self.helper = bundle(trainable=True)(module_helper)

        def forward(self, x):
            return self.helper(x)

    obj = WithHelper()
    obj.helper.parameter._set("def module_helper(x):\n    return x * 7\n")
    content = obj.export(tmp_path / "helper.py", projections=[])
    assert "self.helper = module_helper" in content
    Exported = load_exported(tmp_path / "helper.py", "WithHelper")
    assert Exported().forward(2) == 14


def module_helper(x):
    return x


def test_export_default_projection_formats_with_black(tmp_path):
    pytest.importorskip("black")
    calc = StrangeCalculator()
    calc.prompt._set("changed")
    content = calc.export(tmp_path / "calc.py")
    assert 'self.prompt = "changed"' in content  # black normalizes quotes
    Exported = load_exported(tmp_path / "calc.py", "StrangeCalculator")
    assert Exported().add(1, 1) == 4


def test_export_custom_projection(tmp_path):
    class Upper:
        def __call__(self, code):
            return "# projected\n" + code

    content = DummyClass().export(tmp_path / "d.py", projections=Upper())
    assert content.startswith("# projected\n")


def test_export_rejects_values_without_a_literal_form(tmp_path):
    obj = DummyClass()
    obj._param._set(object())
    with pytest.raises(ExportError, match=re.escape("attribute '_param'")):
        obj.export(tmp_path / "bad.py", projections=[])
    assert not (tmp_path / "bad.py").exists()


class Greeter:
    def __init__(self):
        self.greeting = node("Hello", trainable=True)

    @bundle()
    def greet(self, name):
        return f"{self.greeting} {name}"


@model
class PoliteGreeter(Greeter, json.JSONEncoder):
    """Greets politely."""

    def __init__(self):
        super().__init__()
        self.suffix = node("!", trainable=True)

    @bundle(trainable=True)
    def polite(self, name):
        return self.greet(name) + self.suffix


def test_export_keeps_inheritance(tmp_path):
    obj = PoliteGreeter()
    obj.greeting._set("Good day")
    obj.polite.parameter._set(
        "def polite(self, name):\n    return self.greet(name) + self.suffix + '!'\n"
    )
    content = obj.export(tmp_path / "polite.py", projections=[])
    assert "class Greeter:" in content
    assert "class PoliteGreeter(Greeter, JSONEncoder):" in content
    assert "from json.encoder import JSONEncoder" in content
    assert "self.greeting = 'Good day'" in content
    assert content.index("class Greeter:") < content.index("class PoliteGreeter(")
    Exported = load_exported(tmp_path / "polite.py", "PoliteGreeter")
    assert Exported().polite("Ann") == "Good day Ann!!"
    assert inspect.cleandoc(Exported.__doc__) == "Greets politely."


def test_export_appends_values_of_nodes_set_outside_assignments(tmp_path):
    @model
    class Dynamic:
        def __init__(self):
            for key in ("a", "b"):
                setattr(self, key, node(key, trainable=True))

    obj = Dynamic()
    obj.b._set("changed")
    content = obj.export(tmp_path / "dyn.py", projections=[])
    Exported = load_exported(tmp_path / "dyn.py", "Dynamic")
    instance = Exported()
    assert (instance.a, instance.b) == ("a", "changed")
    assert "node(" in content  # the loop is kept; its result is overwritten after it


def test_export_seq_and_map_of_nodes_become_plain_values(tmp_path):
    @model
    class WithContainers:
        def __init__(self):
            self.steps = Seq(node("a", trainable=True), "b")
            self.table = Map({"k": node(1, trainable=True)})

    obj = WithContainers()
    obj.steps[0]._set("A")
    obj.table["k"]._set(2)
    content = obj.export(tmp_path / "c.py", projections=[])
    assert "self.steps = ['A', 'b']" in content and "self.table = {'k': 2}" in content
    assert "import" not in content
    instance = load_exported(tmp_path / "c.py", "WithContainers")()
    assert instance.steps == ["A", "b"] and instance.table == {"k": 2}


def test_export_without_black_skips_formatting_with_a_note(tmp_path, monkeypatch, caplog):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "black" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    calc = StrangeCalculator()
    calc.prompt._set("changed")
    with caplog.at_level("INFO", logger="opto.trace"):
        content = calc.export(tmp_path / "calc.py")
    assert "self.prompt = 'changed'" in content  # not normalized by black
    assert "black is not installed" in caplog.text


def test_export_properties_static_and_class_members(tmp_path):
    @model
    class Rich:
        LIMIT = 3

        def __init__(self):
            self.base = node(2, trainable=True)

        @property
        def doubled(self):
            return self.base * 2

        @functools.cached_property
        def tripled(self):
            return self.base * self.LIMIT

        @staticmethod
        def helper(x):
            return x + 1

        @classmethod
        def make(cls):
            return cls()

    obj = Rich()
    obj.base._set(5)
    obj.export(tmp_path / "rich.py", projections=[])
    instance = load_exported(tmp_path / "rich.py", "Rich").make()
    assert (instance.doubled, instance.tripled, instance.helper(1)) == (10, 15, 2)
