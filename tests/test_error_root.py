"""Every exception class of the four distributions derives from opto.utils.errors.OptoError;
warning classes are warnings, not errors, and stay outside that hierarchy."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from opto.utils.errors import MissingExtraError, OptoError

PACKAGES = ("opto.utils", "opto.trace", "opto.optimizers", "opto.trainers")


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        names = [package] + [
            info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
        ]
        for name in names:
            try:
                loaded = importlib.import_module(name)
            except ImportError:  # a module of an optional extra that is not installed here
                continue
            for value in vars(loaded).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == name
                ):
                    found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_exception_class_derives_from_opto_error():
    classes = {
        name: cls for name, cls in _exception_classes().items() if not issubclass(cls, Warning)
    }
    assert len(classes) >= 45, sorted(classes)
    assert sorted(name for name, cls in classes.items() if not issubclass(cls, OptoError)) == []


def test_warning_classes_are_warnings_not_opto_errors():
    warnings = {name: cls for name, cls in _exception_classes().items() if issubclass(cls, Warning)}
    assert "opto.utils.coinstall.TraceOptConflictWarning" in warnings
    assert sorted(name for name, cls in warnings.items() if issubclass(cls, OptoError)) == []


def test_builtin_bases_are_kept_for_existing_except_clauses():
    from opto.optimizers import SuggestionParseError
    from opto.trace.propagators.errors import FeedbackMismatchError
    from opto.trainers import DatasetError
    from opto.trainers.batching import BatchLengthError
    from opto.trainers.loggers import MissingExtraError as LoggersMissingExtraError
    from opto.trainers.ray_executor import RayNotInstalledError
    from opto.trainers.runner import TooManyErrorsError
    from opto.utils.concurrency import DeadlineExceeded
    from opto.utils.storage import MissingDependencyError, RunNotFoundError

    assert issubclass(SuggestionParseError, ValueError)
    assert issubclass(FeedbackMismatchError, AssertionError)
    assert issubclass(DatasetError, ValueError)
    assert issubclass(BatchLengthError, ValueError)
    assert issubclass(TooManyErrorsError, RuntimeError)
    assert issubclass(DeadlineExceeded, TimeoutError)
    assert issubclass(RunNotFoundError, LookupError)
    assert LoggersMissingExtraError is MissingExtraError
    for cls in (RayNotInstalledError, MissingDependencyError):
        assert issubclass(cls, MissingExtraError) and issubclass(cls, ImportError)
