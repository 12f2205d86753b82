"""Sharing and sweeping the finished tiny pipeline: a teammate's clone that pulls retrains
nothing; queued sweep points rerun finetune and what follows it; `dvc exp show` leads with the
mIoU; the sweep moves no alias."""

import json
import re
import shutil
import time

import pytest
import yaml
from helpers.repo import GIT, copy_of, run, stages_run


@pytest.mark.slow
def test_pull_then_nothing_retrains_and_a_queued_sweep_reruns_finetune_onward(finished, tmp_path):
    """A teammate's clone: `dvc pull` from a directory remote, then `dvc repro` runs no
    training stage and leaves dvc.lock as it was. A `finetune.lr` point reruns finetune and
    what follows it, the ablation variants too (dvc status); a queued point that drops them
    (`-S '~ablations.<name>'`) runs finetune onward without them."""
    work = copy_of(finished, tmp_path)
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], work)
    run(["dvc", "push"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "results"], work, env=GIT)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    for model in ("pretrain.pt", "finetune.pt"):
        assert (clone / "models" / model).read_bytes() == (work / "models" / model).read_bytes()
    again = run(["dvc", "repro"], clone).stdout
    assert stages_run(again) == {"fetch"}, again
    assert run(["git", "status", "--porcelain", "dvc.lock"], clone).stdout == ""

    # A sweep point of finetune.* reruns finetune and what follows it, the ablation variants
    # included (read from `dvc status`); the queued point drops them (docs/tracking.md
    # "Sweeps"), so they do not retrain.
    variants = list(finished[1]["ablations"])
    params = yaml.safe_load((work / "params.yaml").read_text())
    original = (work / "params.yaml").read_text()
    params["finetune"]["lr"] = 0.01
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    stale = set(json.loads(run(["dvc", "status", "--json"], work).stdout or "{}")) - {"fetch"}
    assert stale == {"finetune", *(f"variant@{v}" for v in variants)}, stale
    (work / "params.yaml").write_text(original)
    main_only = [arg for v in variants for arg in ("-S", f"~ablations.{v}")]
    run(["dvc", "exp", "run", "--queue", "-S", "finetune.lr=0.02", *main_only], work)
    run(["dvc", "queue", "start"], work)
    deadline = time.time() + 3600  # a safety net: a busy machine is slow, not broken
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], work).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    tasks = [line.split() for line in status.splitlines()[1:] if line.strip() and "Success" in line]
    assert len(tasks) == 1, status
    names = [parts[1] for parts in tasks]  # columns: Task, Name, Created (hh:mm AM), Status
    ran = stages_run(run(["dvc", "queue", "logs", tasks[0][0]], work).stdout)
    assert ran == {"fetch", "finetune", "deploy", "evaluate", "register", "rank"}, ran

    # The documented `dvc exp show` (docs/tracking.md) leads with the mIoU, then the variants'
    # and the changed params, and fits a 120-column terminal.
    show = ["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop",
            "Created|reports/.*|models/.*|data/.*|src/.*|pipeline/.*"]
    header = run([*show, "--csv"], work).stdout.splitlines()[0].split(",")
    first = header.index("miou")  # after Experiment, rev, typ (and a queue's State, Executor)
    assert header[first:first + 3] == ["miou", "low", "high"], header
    assert not [h for h in header[:first] if h not in ("Experiment", "rev", "typ", "State", "Executor")]
    assert "finetune.lr" in header and "train_images_per_s" not in ",".join(header)
    if shutil.which("script"):  # a terminal of 120 columns (util-linux)
        table = run(["script", "-qc", "stty cols 120; " + " ".join(
            f"'{a}'" if "|" in a else a for a in show), "/dev/null"], work).stdout
        assert max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in table.splitlines()) <= 120

    # Each MLflow run records the experiment and its exact params; the sweep moved no alias.
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deeplabv3plus")
    finetunes = client.search_runs([experiment.experiment_id],
                                   filter_string="tags.`dvc.stage` = 'finetune'")
    swept = {r.data.tags["dvc.exp"]: r.data.params["finetune.lr"] for r in finetunes
             if r.data.tags["dvc.exp"] != "workspace"}
    assert sorted(swept.values()) == ["0.02"] and set(swept) == set(names)
    champion = client.get_model_version_by_alias("deeplabv3plus", "champion")
    assert champion.tags.get("dvc.exp", "workspace") == "workspace"
    versions = client.search_model_versions("name='deeplabv3plus'")
    assert {v.tags.get("dvc.exp") for v in versions} >= set(names)
    for v in versions:
        if v.tags.get("dvc.exp") in names:
            assert json.loads(v.tags["training.params"])["finetune"]["lr"] == 0.02
