"""opto.utils — see the distribution README (opto-utils) for what this package offers."""

__version__ = "0.1.0"
__all__ = ["__version__"]
