"""@champion moves by the register.promote rule or the promote command, never in a sweep."""

from pathlib import Path

from helpers.models import (
    model_and_metrics,
    register_params,
)


def params(promote: str = "if_better"):
    return register_params(experiment="team", promote=promote)









def test_the_champion_moves_by_the_rule_and_never_in_an_experiment(tracking, monkeypatch):
    from mlflow import MlflowClient

    from deeplab.serving.registry import register

    tmp = tracking
    first = register(*model_and_metrics(tmp, 0, 0.5), params())
    assert first["aliases"] == ["champion"]
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")  # a sweep point
    swept = register(*model_and_metrics(tmp, 1, 0.9), params())
    assert swept["aliases"] == []  # better, but a sweep never moves the champion
    monkeypatch.delenv("DVC_EXP_NAME")
    assert register(*model_and_metrics(tmp, 2, 0.4), params())["aliases"] == ["challenger"]
    assert register(*model_and_metrics(tmp, 3, 0.3), params("always"))["aliases"] == ["champion"]
    assert register(*model_and_metrics(tmp, 4, 0.99), params("never"))["aliases"] == ["challenger"]

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    sweep_version = client.get_model_version("seg", str(swept["version"]))
    assert sweep_version.tags["dvc.exp"] == "brisk-lamb" and not sweep_version.aliases
    champion = client.get_model_version_by_alias("seg", "champion")
    assert int(champion.version) == 4
    assert champion.tags["promotion.reason"].startswith("register.promote: always")
    assert champion.tags["promotion.previous"] == "1" and "@" in champion.tags["promotion.by"]


def test_promote_command_records_who_what_and_why(tracking, capsys):
    from mlflow import MlflowClient

    from deeplab.serving.promote import main as promote
    from deeplab.serving.registry import register

    tmp = tracking
    register(*model_and_metrics(tmp, 0, 0.5), params())
    register(*model_and_metrics(tmp, 1, 0.4), params())
    repo = Path(__file__).resolve().parents[1]
    assert promote(["--name", "seg", "--version", "2", "--reason", "better on the night shots",
                    "--params", str(repo / "params.yaml")]) == 0
    assert "seg version 2 is @champion (was 1)" in capsys.readouterr().out
    champion = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").get_model_version_by_alias("seg", "champion")
    assert str(champion.version) == "2" and champion.aliases == ["champion"] and champion.tags["promotion.reason"] == "better on the night shots"
    assert promote(["--name", "seg", "--version", "9", "--reason", "x",
                    "--params", str(repo / "params.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: seg version 9:")


def test_another_dataset_never_takes_the_champion(tracking):
    """A 3-class model registered under the VOC model's name is refused in one line naming
    the fix; under its own name it is its own champion, and VOC's @champion stays where it was.
    A version validated on another split is never compared: it becomes the challenger."""
    import pytest
    from helpers.models import tiny_net
    from mlflow import MlflowClient

    from deeplab.core.errors import RegistryError
    from deeplab.data.classes import ClassList
    from deeplab.model.files import save_model
    from deeplab.serving.registry import register

    tmp = tracking
    voc = register(*model_and_metrics(tmp, 0, 0.5), params())
    cracks = tmp / "cracks.pt"
    save_model(cracks, tiny_net(5, num_classes=3, channels=8),
               ClassList(("background", "crack", "rust"), ((0, 0, 0), (255, 0, 0), (0, 255, 0))),
               stage="finetune")
    (tmp / "cracks.json").write_text('{"miou": 0.95}')
    with pytest.raises(RegistryError, match=r"^register.model_name: 'seg' holds models of other "
                                            r"classes \(version 1: background, aeroplane, .*this one "
                                            r"has 3 \(background, crack, rust\)\. Give this dataset"):
        register(cracks, tmp / "cracks.json", params())
    own = register(cracks, tmp / "cracks.json", register_params(experiment="team", name="cracks"))
    assert own["aliases"] == ["champion"]
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    assert int(client.get_model_version_by_alias("seg", "champion").version) == voc["version"]
    assert len(client.search_model_versions("name='seg'")) == 1

    # Same classes, another validation split: not comparable, so a challenger however good.
    other_split = tmp / "m7.pt"
    save_model(other_split, tiny_net(7, channels=8), stage="finetune", val_hash="another")
    client.set_model_version_tag("seg", str(voc["version"]), "data.val_hash", "the-first")
    (tmp / "m7.json").write_text('{"miou": 0.99}')
    assert register(other_split, tmp / "m7.json", params())["aliases"] == ["challenger"]


def test_a_dead_sweep_leaves_no_running_run_and_its_versions_are_listed(tracking, capsys, dead_pid):
    """A queued `dvc exp` whose worker was killed: its runs (any stage) end as KILLED the next
    time the store is used, and `promote --list` shows the versions it registered with their
    `dvc.exp` and the state of their registering run."""
    import socket

    from mlflow import MlflowClient

    from deeplab.serving.promote import main as promote
    from deeplab.serving.registry import register

    tmp = tracking
    register(*model_and_metrics(tmp, 0, 0.5), params())
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("team").experiment_id
    orphans = {}
    for stage in ("evaluate", "register"):  # what a killed worker left RUNNING
        run = client.create_run(experiment, run_name=stage, tags={
            "dvc.stage": stage, "dvc.exp": "waste-leaf", "process.host": socket.gethostname(),
            "process.pid": str(dead_pid)})
        orphans[stage] = run.info.run_id
    source = client.get_model_version("seg", "1").source
    client.create_model_version("seg", source, run_id=orphans["register"],
                                tags={"dvc.exp": "waste-leaf", "val_miou": "0.700000"})
    repo = Path(__file__).resolve().parents[1]
    assert promote(["--name", "seg", "--list", "--params", str(repo / "params.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("version\taliases\tval_miou\tdvc_exp\tregistered_by_run")
    assert lines[1].startswith("2\t-\t0.700000\twaste-leaf\tKILLED\t")
    assert lines[2].startswith("1\tchampion\t0.500000\tworkspace\tFINISHED\t")
    for run_id in orphans.values():
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and "ended without finishing" in run.data.tags["killed.reason"]
