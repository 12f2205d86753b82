"""Pruning: under a sweep the finetune stage reports its validation mIoU to its trial at every
`val_every` and stops at once when the pruner says it lags (checkpoint kept, its MLflow run
tagged PRUNED); outside a sweep training is unchanged, loss for loss."""

import pandas as pd
import pytest
import torch
from helpers.repo import REPO

from deeplab.core.config import load_params
from deeplab.engine.stage import FINETUNE, StageFiles, run_training_stage
from deeplab.sweep.pruning import TrialPruned
from deeplab.sweep.trial import open_storage


def params(iterations: int = 4):
    p = load_params(REPO / "params.yaml")
    return p.replace(model=p.model.replace(aspp_channels=16, decoder_channels=16),
                     runtime=p.runtime.replace(workers=0, threads=1, log_every=1),
                     finetune=p.finetune.replace(iterations=iterations, batch_size=2, crop_size=33,
                                                 checkpoint_every=1, val_every=2, init="scratch"),
                     mlflow=p.mlflow.replace(experiment="sweep-pruning"))


def files(out, tiny_train_csv, tiny_val_csv, tiny_classes):
    return StageFiles(tiny_train_csv, tiny_val_csv, tiny_classes, out / "m.pt", out / "c.ckpt",
                      out / "reports")


def test_a_lagging_trial_is_pruned_and_training_outside_a_sweep_is_unchanged(
        tmp_path, monkeypatch, tiny_train_csv, tiny_val_csv, tiny_classes):
    import optuna
    from mlflow import MlflowClient

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plain = run_training_stage(FINETUNE, params(), files(tmp_path / "plain", tiny_train_csv,
                                                         tiny_val_csv, tiny_classes))
    # A study whose finished trial did far better at every step: this one lags at step 2.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={2: 1.0, 4: 1.0},
                                              params={}, distributions={}))
    trial = study.ask()
    monkeypatch.setenv("DEEPLAB_SWEEP_STORAGE", url)
    monkeypatch.setenv("DEEPLAB_SWEEP_STUDY", "s")
    monkeypatch.setenv("DEEPLAB_SWEEP_TRIAL", str(trial._trial_id))
    monkeypatch.setenv("DEEPLAB_SWEEP_NUMBER", str(trial.number))
    monkeypatch.setenv("DEEPLAB_SWEEP_PRUNER", "median")
    monkeypatch.setenv("DEEPLAB_SWEEP_RUN", "")
    out = tmp_path / "swept"
    with pytest.raises(TrialPruned, match=f"sweep trial {trial.number} pruned at iteration 2"):
        run_training_stage(FINETUNE, params(), files(out, tiny_train_csv, tiny_val_csv, tiny_classes))
    frozen = study.trials[trial.number]
    assert frozen.user_attrs["pruned_at"] == 2 and list(frozen.intermediate_values) == [2]
    assert torch.load(out / "c.ckpt", weights_only=True)["iteration"] == 2  # its checkpoint kept
    assert not (out / "m.pt").exists()  # no model file: nothing takes it for a result
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-pruning").experiment_id
    run = client.search_runs([experiment], filter_string="tags.`sweep.trial` = '1'")[0]
    assert run.data.tags["sweep.state"] == "PRUNED" and run.info.status == "KILLED"

    # The trial's steps before pruning trained exactly as outside a sweep; a sweep that does not
    # prune (pruner none) changes nothing at any logged step.
    monkeypatch.setenv("DEEPLAB_SWEEP_PRUNER", "none")
    trial2 = study.ask()
    monkeypatch.setenv("DEEPLAB_SWEEP_TRIAL", str(trial2._trial_id))
    monkeypatch.setenv("DEEPLAB_SWEEP_NUMBER", str(trial2.number))
    unpruned = run_training_stage(FINETUNE, params(), files(tmp_path / "nopruning", tiny_train_csv,
                                                            tiny_val_csv, tiny_classes))
    curves = [pd.read_csv(tmp_path / name / "reports/curve.csv")["loss"].tolist()
              for name in ("plain", "nopruning")]
    assert curves[0] == curves[1] and len(curves[0]) == 4
    assert unpruned["val_miou"] == plain["val_miou"]
    assert list(study.trials[trial2.number].intermediate_values) == [2]  # every val_every
