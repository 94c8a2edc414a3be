"""The options of a bundled function, defined once for ``bundle(...)`` and ``FunModule(fun, ...)``.

Both entry points take exactly the parameters of :class:`BundleOptions` (same names, order,
defaults and types; see :func:`opto.utils.signatures.takes_parameters_of`), which also
checks them, so an option is added, documented and validated in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opto.trace.nodes import get_op_name

if TYPE_CHECKING:
    from opto.trace.code_policy import CodePolicy

__all__ = ["BundleOptions"]


class BundleOptions:
    """How a function is traced (checked on construction).

    Args:
        description: ``"[op_name] text"``, the description of the outputs; by default
            ``"[<qualname>] <docstring>"``.
        traceable_code: trace the function's own operations too: it receives detached
            copies of the input nodes instead of their data.
        _process_inputs: False passes the arguments to the function as given (nodes stay
            nodes), without detaching or unwrapping.
        trainable: the function's source becomes a ``__code`` ParameterNode that optimizers
            rewrite; the new code runs on the next call.
        catch_execution_error: an exception in the function becomes an ExceptionNode raised
            inside ``ExecutionError``; False lets it propagate as it is.
        allow_external_dependencies: allow reading ``.data`` of nodes that are not inputs.
        overwrite_python_recursion: a recursive call runs the plain function, not the
            traced operator (always on for trainable functions).
        projections: projections attached to the ``__code`` parameter.
        output_name: base name of the output nodes instead of the operator name.
        code_policy: checks and restricts trainable code (see
            :class:`~opto.trace.code_policy.CodePolicy` and ``docs/security.md``).
    """

    __slots__ = (
        "_process_inputs",
        "allow_external_dependencies",
        "catch_execution_error",
        "code_policy",
        "description",
        "output_name",
        "overwrite_python_recursion",
        "projections",
        "traceable_code",
        "trainable",
    )

    def __init__(
        self,
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
    ) -> None:
        _check_description(description)
        if output_name is not None and (not isinstance(output_name, str) or ":" in output_name):
            raise ValueError(f"output_name must be a str without ':', got {output_name!r}.")
        self.description = description
        self.traceable_code = traceable_code
        self._process_inputs = _process_inputs
        self.trainable = trainable
        self.catch_execution_error = catch_execution_error
        self.allow_external_dependencies = allow_external_dependencies
        self.overwrite_python_recursion = overwrite_python_recursion
        self.projections = projections
        self.output_name = output_name
        self.code_policy = code_policy


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
