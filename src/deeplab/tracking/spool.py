"""Training outlives its tracking server: metrics go through a spool.

A training stage logs every metric record through `MetricSpool.log`, which returns at once: a
background thread delivers the records in order. While the tracking server does not answer,
they wait in memory and in a spool file beside the checkpoint (JSON lines), with one warning
line when the server goes away and one when it answers again; training goes on. At the end,
`close` waits a little for the queue to drain; whatever is still undelivered stays in the spool
file, and the next run of the stage (which resumes the same MLflow run from its checkpoint)
delivers it first. Every record is delivered exactly once: a resumed run skips the
(metric, step) points its run already has.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator

from ..core.io import append_text

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quick_requests(timeout: float = 5.0) -> Iterator[None]:
    """MLflow's HTTP calls inside the block try once, for at most `timeout` seconds."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MetricSpool:
    """Ordered, non-blocking delivery of `{metric: value}` records at a step to one MLflow run.

    `resumed`: the run existed before this process (a resumed stage), so points it already
    has are not sent again. `retry_s`: the pause between attempts while the server is away.
    """

    def __init__(self, run_id: str, path: Path, resumed: bool = False, retry_s: float = 5.0,
                 client: Any = None) -> None:
        from mlflow import MlflowClient

        self.run_id, self.path, self.retry_s = run_id, Path(path), retry_s
        self.client = client or MlflowClient()
        self.queue: deque[dict[str, Any]] = deque()
        self.lock = threading.Condition()
        self.resumed = resumed or self.path.is_file()
        self.known: dict[str, set[int]] = {}  # a resumed run's points on the server, by metric
        self.offline_since: float | None = None
        self.closing = False
        for record in self._read_spool():  # what an earlier run could not deliver goes first
            self.queue.append(record)
        self.thread = threading.Thread(target=self._deliver, name="metric-spool", daemon=True)
        self.thread.start()

    def _read_spool(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
                record = json.loads(line)
                if record.get("run_id") == self.run_id:
                    records.append(record)
        if records:
            log.info("delivering %d metric records kept in %s by an earlier run", len(records),
                     self.path)
        return records

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Queue one record (and keep it in the spool file until it is delivered)."""
        record = {"run_id": self.run_id, "step": int(step), "time": int(time.time() * 1000),
                  "metrics": {k: float(v) for k, v in metrics.items()}}
        with self.lock:
            self.queue.append(record)
            append_text(self.path, json.dumps(record) + "\n")
            self.lock.notify()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Queue tags for the run (after the metrics queued before them)."""
        with self.lock:
            record = {"run_id": self.run_id, "tags": dict(tags)}
            self.queue.append(record)
            append_text(self.path, json.dumps(record) + "\n")
            self.lock.notify()

    def _unsent(self, record: dict[str, Any]) -> list[Any]:
        """The record's points the run does not have yet, as MLflow metrics."""
        from mlflow.entities import Metric

        out = []
        for key, value in record["metrics"].items():
            if self.resumed and key not in self.known:
                self.known[key] = {m.step for m in self.client.get_metric_history(self.run_id, key)}
            if record["step"] not in self.known.get(key, ()):
                out.append(Metric(key, value, record["time"], record["step"]))
        return out

    def _deliver(self) -> None:
        while True:
            with self.lock:
                while not self.queue and not self.closing:
                    self.lock.wait()
                if not self.queue:
                    return
                record = self.queue[0]
            try:
                for key, value in record.get("tags", {}).items():
                    self.client.set_tag(self.run_id, key, value)
                metrics = self._unsent(record) if "metrics" in record else []
                if metrics:
                    self.client.log_batch(self.run_id, metrics=metrics)
                    for m in metrics:
                        if self.resumed:
                            self.known.setdefault(m.key, set()).add(m.step)
            except Exception as exc:  # noqa: BLE001 - any failure to reach the server
                if self.closing:  # the stage has ended: what is left stays in the spool file
                    return
                if self.offline_since is None:
                    self.offline_since = time.time()
                    log.warning("tracking server unreachable (%s): training goes on; metrics are "
                                "kept in %s and delivered when it answers",
                                str(exc).strip().splitlines()[0][:200] if str(exc).strip() else
                                type(exc).__name__, self.path)
                with self.lock:
                    if self.closing:
                        return
                    self.lock.wait(self.retry_s)
                continue
            with self.lock:
                self.queue.popleft()
                self.lock.notify_all()
                if self.offline_since is not None:
                    log.warning("tracking server answers again after %.0f s; delivering the "
                                "%d records kept meanwhile", time.time() - self.offline_since,
                                len(self.queue) + 1)
                    self.offline_since = None
                if not self.queue:  # everything delivered; a file left behind (read-only
                    with contextlib.suppress(OSError):  # folder) is deduplicated on rerun
                        self.path.unlink(missing_ok=True)

    def close(self, wait_s: float = 60.0) -> int:
        """Wait up to `wait_s` for the queue to drain; the number of records not delivered
        (they stay in the spool file for the next run)."""
        deadline = time.time() + wait_s
        with self.lock:
            while self.queue and time.time() < deadline:
                self.lock.wait(min(1.0, max(0.0, deadline - time.time())))
            left = len(self.queue)
            self.closing = True
            self.lock.notify_all()
        if not left:
            self.thread.join(timeout=5)
        return left


def spool_file(checkpoint: Path) -> Path:
    """Where a stage keeps the metric records its tracking server has not received yet."""
    return checkpoint.with_name(checkpoint.name + ".metrics.jsonl")


def end_run(spool: MetricSpool, status: str, kept: str, wait_s: float = 30.0) -> None:
    """End the stage's active MLflow run once its records are delivered. If the server is
    still away, the run is left for the next run of the stage (the records stay in the spool
    file) and, for a stage that otherwise finished, a RegistryError says in one line what is
    kept (`kept`) and how to deliver the rest."""
    import mlflow

    from ..core.errors import RegistryError
    from .store import tracking_uri

    left = spool.close(wait_s)
    if not left:
        try:
            mlflow.end_run(status)
            return
        except Exception:  # noqa: BLE001 - the server went away just now
            left = 1
    with quick_requests(), contextlib.suppress(Exception):
        mlflow.end_run(status)  # forgets the active run; the server does not answer
    if status == "FINISHED":
        # The delivery thread may still be inside a request: its HTTP retries must not
        # print after the one line below.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        raise RegistryError(
            f"tracking server {tracking_uri()} did not answer at the end: {kept}; {left} metric "
            f"records are kept in {spool.path}. Run the stage again (dvc repro) when the server "
            f"answers: it delivers them without training again")
