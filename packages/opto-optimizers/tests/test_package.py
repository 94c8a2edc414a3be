"""Package-level checks: version, typing marker, namespace portion."""

from importlib import metadata
from pathlib import Path

import opto.optimizers


def test_version_matches_distribution_metadata():
    assert opto.optimizers.__version__ == metadata.version("opto-optimizers")


def test_ships_py_typed_marker():
    assert (Path(opto.optimizers.__file__).parent / "py.typed").is_file()


def test_opto_is_a_namespace_package():
    import opto

    assert getattr(opto, "__file__", None) is None, "opto must stay a PEP 420 namespace"
