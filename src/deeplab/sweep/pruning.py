"""Training under a sweep: the finetune stage reports its validation mIoU at every `val_every`
to its trial, and stops at once when the study's pruner says so (its checkpoint kept). Outside
a sweep (no `DEEPLAB_SWEEP_*` in the environment) nothing here runs."""

from __future__ import annotations

from typing import Any

from ..core.errors import DeeplabError
from .trial import in_sweep, open_storage, pruner


class TrialPruned(DeeplabError):
    """The sweep's pruner stopped this trial's training: one line, exit status 2; the worker
    records the trial as PRUNED (its shorter training is never taken for a result)."""


class TrialReporter:
    """`report(miou, iteration)` into the trial this process trains for."""

    def __init__(self, context: dict[str, str]) -> None:
        import optuna

        self.storage = open_storage(context["DEEPLAB_SWEEP_STORAGE"])
        study = optuna.load_study(study_name=context["DEEPLAB_SWEEP_STUDY"], storage=self.storage,
                                  pruner=pruner(context["DEEPLAB_SWEEP_PRUNER"]))
        self.trial_id = int(context["DEEPLAB_SWEEP_TRIAL"])
        self.trial = optuna.trial.Trial(study, self.trial_id)
        self.number = self.trial.number

    @classmethod
    def from_env(cls) -> "TrialReporter | None":
        context = in_sweep()
        return cls(context) if context else None

    def tags(self) -> dict[str, str]:
        return {"sweep.study": self.trial.study.study_name, "sweep.trial": str(self.number)}

    def report(self, miou: float, iteration: int) -> None:
        """Report; TrialPruned when the pruner stops the trial here."""
        self.trial.report(miou, iteration)
        if self.trial.should_prune():
            self.storage.set_trial_user_attr(self.trial_id, "pruned_at", iteration)
            raise TrialPruned(f"sweep trial {self.number} pruned at iteration {iteration} "
                              f"(val mIoU {miou:.4f}, below the study's median there); its "
                              f"checkpoint is kept")


def reporter(stage_name: str) -> Any:
    """The trial reporter of the finetune stage under a sweep; None otherwise."""
    return TrialReporter.from_env() if stage_name == "finetune" else None
