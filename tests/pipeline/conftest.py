"""One tiny `dvc repro` for the whole test run: built once, under a file lock, by the first
pytest-xdist worker that needs it, and copied by every test that starts from it (the other
worker runs other tests meanwhile: `tests/conftest.py` schedules the file that builds it first
and the files that only read it last)."""

import json
import shutil
import traceback

import pytest
from filelock import FileLock
from helpers.repo import GIT, copy_repo, default_params, run, tiny
from helpers.servers import TOKEN


@pytest.fixture(scope="session")
def finished(tmp_path_factory, worker_id):
    """A tiny pipeline after its first `dvc repro`, committed to git: (folder, params, the
    repro's output). Shared by the workers of this run (read it; `copy_of` to change it)."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the run's folder, above each worker's own
    base = shared / f"tiny-repro-{TOKEN[:12]}"
    with FileLock(str(base) + ".lock"):
        done, failed = base / "done.json", base / "failed.txt"
        if failed.exists():
            pytest.fail(f"the shared tiny dvc repro failed:\n{failed.read_text()[-6000:]}")
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            params = tiny(default_params())
            try:
                work = copy_repo(base / "repo", params)
                out = run(["dvc", "repro"], work, merge=True).stdout
                run(["git", "add", "-A"], work)
                run(["git", "commit", "-qm", "first repro"], work, env=GIT)
            except BaseException:
                failed.write_text(traceback.format_exc())
                raise
            done.write_text(json.dumps({"params": params, "output": out}))
    record = json.loads(done.read_text())
    return base / "repo", record["params"], record["output"]
