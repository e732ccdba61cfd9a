"""Command-line entry points (`make run`), importable for the tests and benchmarks."""
