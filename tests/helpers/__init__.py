"""Subprocess entry points for the stress tests (run with ``python -m tests.helpers.<name>``)."""
