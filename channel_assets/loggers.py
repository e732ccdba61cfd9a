"""Run loggers for `make run`: a line a person reads per step, everything else in a file.

``step_lines`` prints, per asset step, its seconds and rows — or, for a model, its margin
over the strongest baseline and whether it was promoted — plus failures, warnings and the
progress of long steps (at most one line per step every ``PROGRESS_EVERY_S``).
``run_file`` appends every event (DEBUG included), Python warnings and library logs to
``$PULSE_DATA_DIR/logs/pulse.log``. The UI keeps the full event log either way: the
instance stores events whatever the loggers. Both run in every step process.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import dagster as dg

PROGRESS_EVERY_S = 20.0
MODEL_CHECKS = ("meets_model_card", "not_worse_than_baseline")
# libraries that log to the console themselves; their records go to the file instead
LIBRARY_LOGGERS = ("mlflow", "alembic", "optuna", "transformers", "urllib3", "py.warnings")


def _meta(record: logging.LogRecord) -> dict:
    return getattr(record, "dagster_meta", None) or {}


def _gate_summary(meta: dict) -> str:
    """``margin +0.030 [+0.012, +0.047] vs szabo_huberman``: the baseline gates, worst first."""
    gates = [g for g in meta.get("gates_json", []) if g.get("against_baseline")]
    if not gates:
        return "no baseline gate"
    gates.sort(key=lambda g: (g["passed"], g["lo"] if g.get("lo") is not None else g["value"]))
    g = gates[0]
    interval = f" [{g['lo']:+.3f}, {g['hi']:+.3f}]" if g.get("lo") is not None else ""
    more = f" (+{len(gates) - 1} more, {sum(x['passed'] for x in gates)}/{len(gates)} passed)"
    return f"{g['name']} {g['value']:+.3f}{interval}{more if len(gates) > 1 else ''}"


def step_line(step: str, seconds: float, meta: dict) -> str:
    """One console line for a finished asset step (see the module docstring)."""
    head = f"  {step:<34} {seconds:>6.1f} s"
    status = meta.get("status")
    if status == "registered":
        champion = meta.get("champion_version")
        verdict = "promoted" if meta.get("promoted") else f"not promoted, v{champion} serves"
        if not meta.get("promoted") and champion in (None, "None"):
            verdict = "not promoted, the baseline serves"
        return f"{head}  v{meta.get('version')} {_gate_summary(meta)}; {verdict}"
    if status == "skipped":
        return f"{head}  skipped: {str(meta.get('skip_reason', ''))[:120]}"
    if "dagster/row_count" in meta:
        tables = f" in {meta['tables']} tables" if meta.get("tables") else ""
        return f"{head}  {meta['dagster/row_count']:>10,} rows{tables}"
    return head


class StepLineHandler(logging.Handler):
    """Turns Dagster's event stream into the console lines of the module docstring."""

    def __init__(self, stream=None) -> None:
        super().__init__(logging.DEBUG)  # Dagster logs its events (step success, …) at DEBUG
        self.stream = stream or sys.stdout
        self.materialized: dict[str, dict] = {}
        self.last_progress: dict[str, float] = {}

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        meta = _meta(record)
        step = meta.get("step_key") or ""
        event = meta.get("dagster_event")
        if event is None:
            if record.levelno < logging.INFO:
                return
            message = meta.get("orig_message", record.getMessage())
            if record.levelno >= logging.WARNING:
                self._print(f"  ! {step or 'run'}: {message[:300]}")
            elif step and time.monotonic() - self.last_progress.get(step, -1e9) >= PROGRESS_EVERY_S:
                self.last_progress[step] = time.monotonic()
                self._print(f"    … {message[:160]}")
            return
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            meta = {k: v.value for k, v in mat.metadata.items()}
            before = self.materialized.get(step)
            if before and "dagster/row_count" in before and "dagster/row_count" in meta:
                # a multi-asset step (raw_tables): the rows of all its tables
                tables = before.get("tables", 1) + 1
                meta = {"dagster/row_count": before["dagster/row_count"] + meta["dagster/row_count"]}
                meta["tables"] = tables
            self.materialized[step] = meta
        elif kind == "STEP_START" and step not in self.last_progress:
            self.last_progress[step] = time.monotonic()  # first progress line after PROGRESS_EVERY_S
        elif kind == "STEP_SUCCESS" and step in self.materialized:
            seconds = event.event_specific_data.duration_ms / 1000
            self._print(step_line(step, seconds, self.materialized.pop(step)))
        elif kind == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None and error.cause is not None:  # Dagster's wrapper → the cause
                error = error.cause
            first = (error.message if error else "").strip().splitlines()[:1]
            self._print(f"  ✗ {step} failed: {first[0][:240] if first else '?'} (traceback in the log file)")
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            if not check.passed and check.check_name not in MODEL_CHECKS:
                self._print(f"  ✗ check {check.check_name} on {check.asset_key.to_user_string()} failed")


@dg.logger(description="`make run`'s console: one line per step (seconds, rows or model verdict).")
def step_lines(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.Logger("pulse.console", logging.DEBUG)
    log.addHandler(StepLineHandler())
    return log


class _ToLog:
    """A text stream that writes each line as a record of ``handler`` (which reopens its
    file if a library's logging.config call closed it; a raw stream would stay closed)."""

    def __init__(self, handler: logging.Handler, name: str) -> None:
        self.handler, self.name = handler, name

    def write(self, text: str) -> None:
        if text.strip():
            record = logging.LogRecord(self.name, logging.INFO, "", 0, text.strip(), None, None)
            self.handler.handle(record)

    def flush(self) -> None:
        """Records are written as they come."""


_HANDLERS: dict[Path, logging.Handler] = {}  # one open file per path and process


def log_file_handler(path: Path) -> logging.Handler:
    if path not in _HANDLERS:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"))
        _HANDLERS[path] = handler
    return _HANDLERS[path]


def route_to_file(path: Path) -> logging.Handler:
    """Python warnings and chatty libraries' logs of this process go to ``path``, not the console."""
    import mlflow.utils.logging_utils as mlflow_logging

    handler = log_file_handler(path)
    logging.captureWarnings(True)
    # MLflow prints events ("Created version '3' of model …") to this stream, which it
    # re-enables after logging a model: point it at the file instead
    mlflow_logging.MLFLOW_LOGGING_STREAM = _ToLog(handler, "mlflow")
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers = [handler]
        lib.propagate = False
    return handler


@dg.logger(
    config_schema={"path": dg.Field(str, description="log file (appended)")},
    description="Every event (DEBUG included), Python warnings and library logs, in a file.",
)
def run_file(init_context: dg.InitLoggerContext) -> logging.Logger:
    handler = route_to_file(Path(init_context.logger_config["path"]))
    log = logging.Logger("pulse.file", logging.DEBUG)
    log.addHandler(handler)
    return log
