"""Checks of trainable code: a proposal (from an LLM or from a file) against its original.

Every code text that is about to replace the source of a trainable bundle passes
:func:`check_code`, whether an optimizer proposed it or a state file holds it:

- it compiles;
- it defines the original function's name, with the same parameters and the same kind
  (``def`` stays ``def``, ``async def`` stays ``async def``, and neither becomes a
  generator);
- besides imports and that one definition there is nothing at top level (no second
  definition of the name, no statement that runs when the code is defined);
- no decorator, and default values and annotations are plain values (nothing that runs
  code while the function is defined);
- under a restricting :class:`CodePolicy`, the code also compiles under RestrictedPython
  (no ``_``-names, no frame/generator internals), imports only allowed modules and names
  no forbidden module or call (see :mod:`opto.trace.sandbox`, which then runs it).

Bundles register their ``__code`` parameter here (:func:`register_code`) with its defining
source and policy, so loaders and optimizers apply the same rule. See ``docs/security.md``.
"""

from __future__ import annotations

import ast
import re
import textwrap
import weakref
from collections.abc import Collection, Iterable
from typing import Any

import attrs
from opto.utils.errors import OptoError

__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "CodePolicy",
    "CodePolicyError",
    "CodeSpec",
    "UntrustedCodeError",
    "check_code",
    "code_spec",
    "function_signature",
    "inherit_code_spec",
    "normalize_code",
    "register_code",
    "restrict_code",
]

#: Modules restricted code may import by default: pure computation, no file, process,
#: network or interpreter access.
DEFAULT_ALLOWED_IMPORTS: frozenset[str] = frozenset(
    {
        "bisect",
        "cmath",
        "collections",
        "dataclasses",
        "datetime",
        "decimal",
        "difflib",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "json",
        "math",
        "random",
        "re",
        "statistics",
        "textwrap",
        "typing",
        "unicodedata",
    }
)

_FENCED = re.compile(r"^\s*```[ \t]*[\w.+-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*$", re.DOTALL)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


class CodePolicyError(OptoError, ValueError):
    """Code breaks the rules for trainable code; the message is the reason (it is shown to
    the optimizer as feedback on a rejected proposal)."""


class UntrustedCodeError(CodePolicyError):
    """Loaded code differs from the source that defined it and the file is not trusted."""


def _names(value: Iterable[str] | str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


@attrs.frozen(kw_only=True)
class CodePolicy:
    """What trainable code may do. Asking for any restriction turns on ``restricted``.

    Attributes:
        restricted: run the code under RestrictedPython (needs ``opto-trace[sandbox]``):
            no ``_``-attribute access, guarded getattr/getitem, imports only from
            ``allowed_imports``, no builtins mapping. Not a security boundary against a
            determined attacker; see ``docs/security.md``.
        allowed_imports: modules (and their submodules) restricted code may import or
            reach through attributes; None means :data:`DEFAULT_ALLOWED_IMPORTS`.
        forbidden_modules: modules that are never allowed (removed from the allowlist).
        forbidden_calls: names (builtins or attributes) restricted code may not use.
    """

    restricted: bool = False
    allowed_imports: frozenset[str] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_names)
    )
    forbidden_modules: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    forbidden_calls: frozenset[str] = attrs.field(default=frozenset(), converter=_names)

    def __attrs_post_init__(self) -> None:
        if self.forbidden_modules or self.forbidden_calls or self.allowed_imports is not None:
            object.__setattr__(self, "restricted", True)

    @classmethod
    def of(
        cls,
        policy: CodePolicy | None = None,
        *,
        forbidden_modules: Collection[str] = (),
        forbidden_calls: Collection[str] = (),
    ) -> CodePolicy | None:
        """``policy`` with the deny-lists added (None when nothing restricts anything)."""
        extra = cls(forbidden_modules=forbidden_modules, forbidden_calls=forbidden_calls)
        if policy is None:
            return extra if extra.restricted else None
        return policy.merge(extra)

    def merge(self, other: CodePolicy | None) -> CodePolicy:
        """The stricter combination of two policies."""
        if other is None or other is self:
            return self
        allowed = self.allowed_imports if self.restricted else None
        if other.restricted and other.allowed_imports is not None:
            allowed = other.allowed_imports if allowed is None else allowed & other.allowed_imports
        return CodePolicy(
            restricted=self.restricted or other.restricted,
            allowed_imports=allowed,
            forbidden_modules=self.forbidden_modules | other.forbidden_modules,
            forbidden_calls=self.forbidden_calls | other.forbidden_calls,
        )

    def allows_module(self, module: str) -> bool:
        """Whether ``module`` (dotted) may be imported or reached under this policy."""
        if not self.restricted:
            return True
        if _under(module, self.forbidden_modules):
            return False
        return _under(module, self.allowlist)

    @property
    def allowlist(self) -> frozenset[str]:
        """The modules restricted code may use (``allowed_imports`` or the default)."""
        return DEFAULT_ALLOWED_IMPORTS if self.allowed_imports is None else self.allowed_imports


def _under(module: str, names: Collection[str]) -> bool:
    return any(module == item or module.startswith(item + ".") for item in names)


# --- the function's shape -------------------------------------------------------------------


def normalize_code(text: str) -> str:
    """``text`` without a surrounding Markdown code fence and common indentation."""
    match = _FENCED.match(text)
    return textwrap.dedent(match.group(1) if match else text).strip("\n") + "\n"


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The calling convention: parameter names and kinds (no defaults or annotations)."""
    args = function.args
    parts = [arg.arg for arg in args.posonlyargs]
    if args.posonlyargs:
        parts.append("/")
    parts.extend(arg.arg for arg in args.args)
    if args.vararg is not None:
        parts.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        parts.append("*")
    parts.extend(arg.arg for arg in args.kwonlyargs)
    if args.kwarg is not None:
        parts.append("**" + args.kwarg.arg)
    return ", ".join(parts)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(normalize_code(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _first_function(tree: ast.Module) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return next((s for s in tree.body if isinstance(s, _FUNCTIONS)), None)


def function_signature(source: str) -> tuple[str, str] | None:
    """``(name, parameters)`` of the first top-level function in ``source``, if any."""
    tree = _parse(source)
    function = None if tree is None else _first_function(tree)
    return None if function is None else (function.name, _parameters(function))


_KINDS = {
    ("def", False): "a def function",
    ("async def", False): "an async def function",
    ("def", True): "a generator function (def with yield)",
    ("async def", True): "an async generator function (async def with yield)",
}


def _yields(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``function`` itself yields (yields of nested functions and classes aside)."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (*_FUNCTIONS, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _kind(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """How calling ``function`` behaves: def, async def, or a generator of either."""
    base = "async def" if isinstance(function, ast.AsyncFunctionDef) else "def"
    return _KINDS[base, _yields(function)]


def _runs_code(node: ast.AST | None) -> bool:
    """Whether evaluating the expression ``node`` can run code (beyond reading names)."""
    if node is None:
        return False
    for sub in ast.walk(node):
        if not isinstance(
            sub,
            (
                ast.Constant,
                ast.Name,
                ast.Load,
                ast.Tuple,
                ast.List,
                ast.Set,
                ast.Dict,
                ast.UnaryOp,
                ast.USub,
                ast.UAdd,
                ast.Attribute,
                ast.Subscript,
                ast.BinOp,
                ast.BitOr,
            ),
        ):
            return True
    return False


def _definition_problems(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    problems = []
    if function.decorator_list:
        problems.append(f"{function.name} has a decorator (decorators run code when defined)")
    args = function.args
    for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
        if _runs_code(default) or any(isinstance(s, ast.BinOp) for s in ast.walk(default)):
            problems.append(
                f"the default value {ast.unparse(default)!r} runs code; defaults must be "
                "plain values (literals or names)"
            )
    annotated = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    annotations = [a.annotation for a in annotated if a is not None] + [function.returns]
    for annotation in annotations:
        if _runs_code(annotation):
            problems.append(f"the annotation {ast.unparse(annotation)!r} runs code")
    return problems


def _structure(tree: ast.Module, name: str, parameters: str | None, kind: str | None) -> None:
    """Raise CodePolicyError unless ``tree`` is imports plus one definition of ``name``."""
    functions = [s for s in tree.body if isinstance(s, _FUNCTIONS) and s.name == name]
    if not functions:
        defined = [s.name for s in tree.body if isinstance(s, _FUNCTIONS)]
        expected = f"{name}({parameters})" if parameters is not None else name
        raise CodePolicyError(
            f"the code must define the function {expected}; it defines "
            f"{', '.join(defined) or 'no function'}"
        )
    function = functions[0]
    if parameters is not None and _parameters(function) != parameters:
        raise CodePolicyError(
            f"the signature must stay {name}({parameters}); the suggestion has "
            f"{name}({_parameters(function)})"
        )
    if kind is not None and _kind(function) != kind:
        raise CodePolicyError(f"{name} must stay {kind}; the suggestion makes it {_kind(function)}")
    for statement in tree.body:
        if statement is function or isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(statement, _FUNCTIONS) and statement.name == name:
            raise CodePolicyError(f"the code defines {name} twice (line {statement.lineno})")
        text = ast.unparse(statement).splitlines()[0][:60]
        raise CodePolicyError(
            f"only imports and the definition of {name} may be at top level; line "
            f"{statement.lineno} has {text!r} (move helpers inside {name})"
        )
    problems = _definition_problems(function)
    if problems:
        raise CodePolicyError("; ".join(problems))


# --- restriction ------------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def policy_violations(tree: ast.AST, policy: CodePolicy) -> list[str]:
    """Why the code breaks ``policy``'s import and name rules (empty when it does not)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(
                f"imports {alias.name}"
                for alias in node.names
                if not policy.allows_module(alias.name)
            )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append("uses a relative import")
            elif node.module and not policy.allows_module(node.module):
                found.append(f"imports from {node.module}")
        elif isinstance(node, ast.Name) and node.id in policy.forbidden_modules:
            found.append(f"uses the module name {node.id}")
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in policy.forbidden_calls:
                found.append(f"uses {_dotted(node) or name}")
    return list(dict.fromkeys(found))


def check_code(
    source: str,
    *,
    original: str | None = None,
    expected: tuple[str, str] | None = None,
    policy: CodePolicy | None = None,
) -> None:
    """Check code that is to replace a trainable function (see the module docstring).

    Args:
        source: the proposed code (already normalized, see :func:`normalize_code`).
        original: the defining source; gives the name, parameters and def kind to keep.
        expected: ``(name, parameters)`` to keep when there is no ``original``.
        policy: the restriction to check against (None: structure only).

    Raises:
        CodePolicyError: with the first problem found (the reason shown to the optimizer).
        MissingExtraError: (an ImportError) the policy is restricted and ``opto-trace[sandbox]``
            is not installed.
    """
    try:
        tree = ast.parse(source)
        compile(tree, "<suggested code>", "exec")
    except SyntaxError as error:
        where = f" (line {error.lineno})" if error.lineno else ""
        raise CodePolicyError(f"the code does not compile: {error.msg}{where}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise CodePolicyError(f"the code does not compile: {error}") from None
    kind = None
    if original is not None:
        original_tree = _parse(original)
        function = None if original_tree is None else _first_function(original_tree)
        if function is not None:
            expected = (function.name, _parameters(function))
            kind = _kind(function)
    if expected is not None:
        _structure(tree, expected[0], expected[1], kind)
    if policy is not None and policy.restricted:
        from opto.trace._restricted import restricted_compile_errors

        problems = policy_violations(tree, policy) + restricted_compile_errors(source)
        if problems:
            raise CodePolicyError("the code is not allowed: it " + "; it ".join(problems))


# --- registry of trainable code parameters --------------------------------------------------


@attrs.frozen
class CodeSpec:
    """A trainable code parameter's defining source and the policy its code runs under."""

    original: str
    policy: CodePolicy | None = None


_SPECS: dict[int, CodeSpec] = {}


def register_code(parameter: Any, original: str, policy: CodePolicy | None) -> None:
    """Record ``parameter`` (a ``__code`` ParameterNode) as defined by ``original``."""
    key = id(parameter)
    if key not in _SPECS:
        weakref.finalize(parameter, _SPECS.pop, key, None)
    _SPECS[key] = CodeSpec(original, policy)


def code_spec(parameter: Any) -> CodeSpec | None:
    """The registered spec of a code parameter, None for other parameters."""
    return _SPECS.get(id(parameter))


def inherit_code_spec(parameter: Any, copy: Any) -> None:
    """Give ``copy`` (a copied code parameter) the spec of ``parameter``, if it has one."""
    spec = code_spec(parameter)
    if spec is not None:
        register_code(copy, spec.original, spec.policy)


def restrict_code(parameter: Any, policy: CodePolicy | None) -> None:
    """Make ``parameter``'s code run under ``policy`` too (the stricter of both wins).

    Optimizers call this for the restrictions they were asked to enforce, so that accepted
    proposals also run restricted.
    """
    spec = code_spec(parameter)
    if spec is None or policy is None:
        return
    merged = policy if spec.policy is None else spec.policy.merge(policy)
    _SPECS[id(parameter)] = CodeSpec(spec.original, merged)
