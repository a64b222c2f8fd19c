"""Subcommands of the ``metacpo`` CLI (see :mod:`metacpo.cli`)."""
