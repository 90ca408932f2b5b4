"""The package version, in a module of its own that imports nothing: ``lrgmm/__init__.py``, the
modules that record the version in the files they write, and the build (``pyproject.toml``)
read it here."""

__version__ = "0.1.0"
