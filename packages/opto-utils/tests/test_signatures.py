"""opto.utils.signatures: parameter layouts (Plan), fast binding with Python's TypeErrors,
and parameter lists declared once (takes_parameters_of, forwarder and body forms)."""

from __future__ import annotations

import inspect

import pytest
from opto.utils.signatures import Plan, bind, bind_arguments, plan_of, takes_parameters_of


def _python(fun, args, kwargs):
    bound = inspect.signature(fun).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def source(a, b, c=3, *, d=4, e):
    return a


CALLS = [
    ((1, 2), {"e": 5}),
    ((1,), {"b": 2, "e": 5, "d": 0}),
    ((), {"e": 5, "c": 9, "b": 2, "a": 1}),
    ((1, 2, 3), {"e": None}),
]


@pytest.mark.parametrize("make", [plan_of, Plan.of], ids=["code", "signature"])
def test_bind_agrees_with_signature_bind(make):
    plan = make(source)
    for args, kwargs in CALLS:
        keys, values, n_call_pos = bind(plan, "source", args, kwargs)
        assert dict(zip(keys, values)) == _python(source, args, kwargs)
        assert keys == ["a", "b", "c", "d", "e"] and n_call_pos == 3
        assert bind_arguments(plan, "source", args, kwargs) == _python(source, args, kwargs)


def test_variadic_parameters_get_numbered_and_named_keys():
    def f(a, b=2, *rest, c=3, **more):
        return a

    keys, values, n_call_pos = bind(plan_of(f), "f", (1, 2, 7, 8), {"c": 5, "x": 6})
    assert keys == ["a", "b", "rest_0", "rest_1", "c", "x"]
    assert values == [1, 2, 7, 8, 5, 6] and n_call_pos == 4


def test_positional_only_parameters_bind_like_python():
    def f(a, /, b=2, **kw):
        return a

    assert bind(plan_of(f), "f", (1,), {"a": 5}) == (["a", "b", "a"], [1, 2, 5], 2)
    with pytest.raises(TypeError, match=r"^f\(\) missing required argument: 'a'$"):
        bind(plan_of(f), "f", (), {"a": 1})


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 2), {}, "missing required keyword argument: 'e'"),
        ((1,), {"e": 5}, "missing required argument: 'b'"),
        ((1, 2), {"a": 1, "e": 5}, "got multiple values for argument 'a'"),
        ((1, 2, 3, 4), {"e": 5}, "takes 3 positional arguments but 4 were given"),
        ((1, 2), {"e": 5, "f": 6}, "got an unexpected keyword argument 'f'"),
        ((1, 2), {"e": 5, "g": 6, "f": 7}, "got unexpected keyword arguments 'f', 'g'"),
    ],
)
def test_a_wrong_call_raises_python_s_type_error(args, kwargs, message):
    plan = plan_of(source)
    with pytest.raises(TypeError, match=rf"^source\(\) {message}$"):
        bind(plan, "source", args, kwargs)
    # the dict form says the parameters too
    with pytest.raises(TypeError, match=rf"^source\(\) {message}; its parameters are \(a, b"):
        bind_arguments(plan, "source", args, kwargs)
    with pytest.raises(TypeError):  # and Python agrees the call is wrong
        source(*args, **kwargs)


def test_a_declared_signature_is_bound_and_shown():
    def wrapper(*args, **kwargs):
        return source(*args, **kwargs)

    wrapper.__signature__ = inspect.signature(source)
    assert plan_of(wrapper).pos == ("a", "b", "c") and plan_of(wrapper).kwonly == ("d", "e")
    assert str(plan_of(source)) == "(a, b, c=3, *, d=4, e)"
    assert str(plan_of(lambda x, /, y=None, *a, **k: 0)) == "(x, /, y=None, *a, **k)"
    assert plan_of(wrapper).simple is False and plan_of(lambda x, y: 0).simple is True
    assert plan_of(len).pos == ("obj",) and plan_of(lambda *args: 0).var_pos == "args"
    assert Plan.of(dict) is None  # no readable signature


# -- takes_parameters_of ------------------------------------------------------------------


class Options:
    """The options of an entry point."""

    def __init__(self, level: int = 1, name: str | None = None) -> None:
        if level < 0:
            raise ValueError("level must be >= 0")
        self.level = level
        self.name = name


def test_a_forwarder_shows_the_source_s_parameters_and_stays_itself():
    def configure(*args, **kwargs) -> Options:
        """Configure."""
        return Options(*args, **kwargs)

    declared = takes_parameters_of(Options)(configure)
    assert declared is configure  # no wrapper: nothing added to the call
    assert str(inspect.signature(configure)) == (
        "(level: 'int' = 1, name: 'str | None' = None) -> 'Options'"
    )
    assert configure(2, name="x").level == 2
    with pytest.raises(TypeError, match="colour"):  # the source checks the call
        configure(colour=1)


def test_a_forwarder_keeps_its_own_parameters_around_the_source_s():
    class Thing:
        @takes_parameters_of(Options)
        def __init__(self, fun, *args, _private=None, **kwargs):
            self.fun, self.options, self.private = fun, Options(*args, **kwargs), _private

    assert str(inspect.signature(Thing)) == (
        "(fun, level: 'int' = 1, name: 'str | None' = None, *, _private=None)"
    )
    thing = Thing(len, 3, _private=1)
    assert (thing.options.level, thing.private) == (3, 1)


def test_a_keyword_only_forwarder_keeps_its_variadics_for_other_arguments():
    class Base:
        def __init__(self, x, *args, **kwargs):
            self.x, self.rest = x, (args, kwargs)

    class Configured(Base):
        @takes_parameters_of(Options, keyword_only=True)
        def __init__(self, x, *args, **kwargs):
            names = inspect.signature(Options).parameters
            self.options = Options(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
            super().__init__(x, *args, **kwargs)

    assert str(inspect.signature(Configured)) == (
        "(x, *args, level: 'int' = 1, name: 'str | None' = None, **kwargs)"
    )
    made = Configured(1, 2, level=4, other=5)
    assert made.options.level == 4 and made.rest == ((2,), {"other": 5})


def test_a_body_gets_every_argument_by_name():
    def target(a, b=2, *, c=3):
        return a

    @takes_parameters_of(target, rename={"a": "first"}, drop=("c",), extra={"d": "int | None"})
    def wrapper(arguments):
        """Wrapped."""
        return arguments

    assert str(inspect.signature(wrapper)) == "(first, b=2, *, d: 'int | None' = None)"
    assert wrapper(1) == {"first": 1, "b": 2, "d": None}
    assert wrapper(first=1, b=5, d=4) == {"first": 1, "b": 5, "d": 4}
    assert wrapper.__doc__ == "Wrapped." and wrapper.__name__ == "wrapper"
    with pytest.raises(TypeError, match=r"wrapper\(\) got an unexpected keyword argument 'c'"):
        wrapper(1, c=3)
    with pytest.raises(TypeError, match=r"wrapper\(\) missing required argument: 'first'"):
        wrapper()


def test_a_method_body_receives_self_first():
    class Holder:
        @takes_parameters_of(Options)
        def make(self, arguments) -> Options:
            return Options(**arguments)

    assert str(inspect.signature(Holder.make)) == (
        "(self, level: 'int' = 1, name: 'str | None' = None) -> 'Options'"
    )
    assert Holder().make(name="n").name == "n" and Holder().make(5).level == 5
    with pytest.raises(TypeError, match=r"Holder.make\(\) takes 3 positional arguments"):
        Holder().make(1, "n", 3)


def test_a_function_that_neither_forwards_nor_takes_arguments_is_refused():
    with pytest.raises(
        TypeError, match=r"f\(\.\.\., \*args, \*\*kwargs\) or f\(\.\.\., arguments\)"
    ):

        @takes_parameters_of(Options)
        def plain(level):
            return level
