"""Optimizers' side of the code rules: restrictions they enforce, rejections they report.

An optimizer built with ``forbidden_modules``/``forbidden_calls`` asks for a restriction:
:func:`restrict_parameters` registers it on its trainable code parameters, so that accepted
proposals also *run* under the restricted :class:`~opto.trace.code_policy.CodePolicy`
(RestrictedPython), not only pass a check. :func:`rejection_feedback` turns the reasons a
step rejected suggestions into text appended to the next step's feedback, so the LLM
learns why its proposal was not applied. See ``docs/security.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping

from opto.trace.code_policy import CodePolicy, code_spec, restrict_code
from opto.trace.nodes import ParameterNode

__all__ = ["rejection_feedback", "restrict_parameters"]

logger = logging.getLogger(__name__)

_MAX_REASON_CHARS = 500


def restrict_parameters(
    parameters: Iterable[ParameterNode],
    forbidden_modules: Collection[str],
    forbidden_calls: Collection[str],
) -> tuple[frozenset[str], frozenset[str]]:
    """Register the restriction on every code parameter; return the two deny-lists.

    Asking for any restriction makes those parameters' code run restricted (the stricter
    of the bundle's own policy and this one).
    """
    modules, calls = frozenset(forbidden_modules), frozenset(forbidden_calls)
    policy = CodePolicy.of(forbidden_modules=modules, forbidden_calls=calls)
    if policy is not None:
        for parameter in parameters:
            if code_spec(parameter) is not None:
                restrict_code(parameter, policy)
                logger.info("The code of %s runs restricted: %s", parameter.py_name, policy)
    return modules, calls


def rejection_feedback(rejected: Mapping[str, str]) -> str:
    """The text telling the LLM which suggestions of the previous step were rejected."""
    if not rejected:
        return ""
    lines = [f"- {name}: {reason[:_MAX_REASON_CHARS]}" for name, reason in sorted(rejected.items())]
    return "Your previous suggestions for these variables were rejected and not applied:\n" + (
        "\n".join(lines)
    )
