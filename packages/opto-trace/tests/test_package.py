"""Package-level checks: version, typing marker, namespace portion."""

from importlib import metadata
from pathlib import Path

import opto.trace


def test_version_matches_distribution_metadata():
    assert opto.trace.__version__ == metadata.version("opto-trace")


def test_ships_py_typed_marker():
    assert (Path(opto.trace.__file__).parent / "py.typed").is_file()


def test_opto_is_a_namespace_package():
    import opto

    assert getattr(opto, "__file__", None) is None, "opto must stay a PEP 420 namespace"
