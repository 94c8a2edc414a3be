"""Trainable modules: `Module`, the `@model` class decorator and `Model`.

A Module is a ParameterContainer with a `forward` method. Its state is data: `save()`
writes the parameter values as JSON (atomically), `load()` writes them back into the
module's own ParameterNodes. `Model` (what `@model` mixes in) can also `export()` itself
as a standalone Python class holding the current code and values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from opto.trace.containers import ParameterContainer
from opto.utils.errors import OptoError
from opto.utils.lazy import lazy_exports

if TYPE_CHECKING:
    import os
    from pathlib import Path

    from opto.trace.export import ExportError as ExportError

# Saving, loading and exporting import what they need (json, pickle, pathlib, the exporter)
# when called: every bundled function is a Module, so this module loads with opto.trace.

__all__ = ["ExportError", "Model", "Module", "ModuleStateError", "model"]
__getattr__, __dir__ = lazy_exports(__name__, {"ExportError": "opto.trace.export"})

logger = logging.getLogger(__name__)

STATE_FORMAT = "opto.trace.module-state"
STATE_VERSION = 1

SaveFormat = Literal["json", "pickle"]
_T = TypeVar("_T", bound=type)


class ModuleStateError(OptoError, ValueError):
    """A module's state cannot be written or read (unserializable value, bad file)."""


class Module(ParameterContainer):
    """A ParameterContainer with a `forward` method; calling the module calls `forward`."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the module's output; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(...).")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def save(self, path: str | os.PathLike[str], *, format: SaveFormat = "json") -> Path:
        """Write the parameter values to `path` atomically and return the path.

        `format="json"` (default) writes a readable JSON document mapping each
        parameter's stable path (see `state_dict()`) to its value; every value must be
        JSON data. `format="pickle"` pickles the same mapping, for values JSON cannot
        hold; such files must only be loaded from trusted sources.
        """
        import json
        from pathlib import Path

        from opto.utils.files import atomic_write

        target = Path(path)
        document = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "class": _class_path(type(self)),
            "parameters": self.state_dict(),
        }
        if format == "json":
            for key, value in document["parameters"].items():
                _check_json(value, key, key)
            payload = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
        elif format == "pickle":
            payload = _pickle_document(document)
        else:
            raise ValueError(f"Unknown save format {format!r}; use 'json' or 'pickle'.")
        atomic_write(target, payload)
        logger.debug("Saved %d parameter values to %s", len(document["parameters"]), target)
        return target

    def load(
        self, path: str | os.PathLike[str], *, format: SaveFormat = "json", trust_code: bool = False
    ) -> None:
        """Read values written by `save()` into this module's own ParameterNodes.

        Pickle files are read only when `format="pickle"` is passed explicitly. Missing or
        unknown keys raise `StateDictError`, values of another type `LoadedValueError`, and
        trainable code that differs from its defining source `UntrustedCodeError` unless
        `trust_code=True` (see docs/security.md); the module is then left unchanged.
        """
        import json
        import pickle
        from pathlib import Path

        source = Path(path)
        raw = source.read_bytes()
        if format == "json":
            try:
                document = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise ModuleStateError(
                    f"{source} is not a JSON module state file ({exc}). If it was written "
                    "with save(..., format='pickle') and you trust it, load it with "
                    "format='pickle'."
                ) from exc
        elif format == "pickle":
            document = pickle.loads(raw)
        else:
            raise ValueError(f"Unknown load format {format!r}; use 'json' or 'pickle'.")
        parameters = _validate_document(document, source)
        saved_class = document.get("class")
        if saved_class != _class_path(type(self)):
            logger.warning(
                "Loading state saved from %s into %s", saved_class, _class_path(type(self))
            )
        own = dict(self.named_parameters())
        from opto.trace.loading import check_loaded_state  # loads code_policy: only on load

        self.load_state_dict(check_loaded_state(own, parameters, trust_code, str(source)))


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _validate_document(document: Any, source: Path) -> Mapping[str, Any]:
    if not isinstance(document, Mapping) or document.get("format") != STATE_FORMAT:
        raise ModuleStateError(
            f"{source} is not a module state file written by Module.save() "
            f"(expected a mapping with format {STATE_FORMAT!r})."
        )
    if document.get("version") != STATE_VERSION:
        raise ModuleStateError(
            f"{source} has state version {document.get('version')!r}; this opto-trace "
            f"reads version {STATE_VERSION}."
        )
    parameters = document.get("parameters")
    if not isinstance(parameters, Mapping):
        raise ModuleStateError(f"{source}: 'parameters' must be a mapping of path to value.")
    return parameters


def _check_json(value: Any, key: str, where: str) -> None:
    """Raise ModuleStateError unless `value` round-trips through JSON unchanged."""
    problem = None
    kind = type(value)  # exact types: subclasses (enums, OrderedDict...) would not round-trip
    if value is None or kind in (bool, int, str):
        return
    if kind is float:
        if math.isfinite(value):
            return
        problem = f"the float {value!r} is not valid JSON"
    elif kind is list:
        for index, item in enumerate(value):
            _check_json(item, key, f"{where}[{index}]")
        return
    elif kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                problem = f"the dict key {name!r} is not a string"
                break
            _check_json(item, key, f"{where}[{name!r}]")
        else:
            return
    else:
        problem = f"a {type(value).__name__} is not JSON data"
    raise ModuleStateError(
        f"Cannot save parameter {key!r} as JSON: at {where}, {problem} (unserializable "
        "data on save). Keep JSON data (str, int, float, bool, None, lists, dicts with str "
        "keys) in the parameter, or save with format='pickle' (trusted files only)."
    )


def _pickle_document(document: dict[str, Any]) -> bytes:
    import pickle

    try:
        return pickle.dumps(document, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        for key, value in document["parameters"].items():
            try:
                pickle.dumps(value)
            except (pickle.PicklingError, TypeError, AttributeError):
                raise ModuleStateError(
                    f"Cannot save parameter {key!r}: its {type(value).__name__} value is "
                    "unpicklable (unpicklable data on save). Store picklable data in it."
                ) from exc
        raise


# ---------------------------------------------------------------------------------------
# @model and Model


def model(cls: _T) -> _T:
    """Class decorator: return a `Model` subclass of `cls` with the same name and docstring.

    The decorated name refers to the new class (so pickling by reference works for
    module-level classes). Needs no source code; only `export()` does.
    """
    if not isinstance(cls, type):
        raise TypeError(f"@model decorates classes, got {type(cls).__name__}.")
    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "_model_user_class": cls,
    }
    return type(cls.__name__, (cls, Model), namespace)  # type: ignore[return-value]


class Model(Module):
    """A Module that can export itself as a standalone Python class (`export()`)."""

    def export(
        self, filename: str | os.PathLike[str], projections: Iterable[Any] | Any = None
    ) -> str:
        """Write a runnable `.py` file defining this model as a plain class; return its text.

        The class keeps its name, docstring and members in definition order; trainable
        bundles contribute their *current* code, bundle decorators are removed, and every
        attribute holding a node is set to the node's current value as a literal. Names
        the class body uses are imported (or inlined) when they can be resolved. The text
        then goes through `projections` (default: black formatting when black is
        installed). Raises ExportError when source code is unavailable.
        """
        from opto.trace.export import _projections, export_source
        from opto.utils.files import atomic_write

        code = export_source(self, Model)
        for projection in _projections(projections):
            code = projection(code)
        atomic_write(filename, code.encode())
        return code
