"""The package version, in one place (the run header, --version and the Ray workers' check read it)."""

__version__ = "0.2.0"
