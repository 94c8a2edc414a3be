"""opto.trace — trace Python code into a graph and propagate feedback through it."""

__version__ = "0.1.0"
__all__ = ["__version__"]
