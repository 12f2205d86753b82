"""`python -m deeplab.sweep run [--trials N]`: this clone's worker of the study `params.yaml`
`sweep` describes (docs/sweeps.md); `python -m deeplab.sweep show`: its trials and the best."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..core.cli import run_command


def _params(path: str):
    from ..core.config import load_params
    from ..core.errors import ConfigError
    from ..core.safe_yaml import read_yaml

    params = load_params(path)
    if params.sweep is None:
        raise ConfigError(f"{path}: no sweep section (docs/sweeps.md)")
    return params.sweep, read_yaml(Path(path))


def show(path: str) -> int:
    """The study's trials (number, params, value, state, duration, worker host) and the best."""
    import optuna
    from optuna.trial import TrialState

    from .study import storage_url
    from .trial import open_storage

    cfg, _ = _params(path)
    study = optuna.load_study(study_name=cfg.study, storage=open_storage(storage_url(cfg)))
    keys = list(cfg.space)
    print("\t".join(["trial", *keys, cfg.metric, "state", "seconds", "host"]))
    for t in study.get_trials(deepcopy=False):
        value = "" if t.value is None else f"{t.value:.4f}"
        seconds = t.user_attrs.get("seconds", "")
        print("\t".join([str(t.number), *(str(t.params.get(k, "")) for k in keys), value,
                         t.state.name + (f" ({t.user_attrs['reason']})" if "reason" in t.user_attrs
                                         else ""), str(seconds), t.user_attrs.get("host", "")]))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        print(f"best: trial {best.number}, {cfg.metric} {best.value:.4f}, "
              f"experiment {best.user_attrs.get('experiment')}, {best.params}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.sweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="work on the study until it has its trials")
    run.add_argument("--trials", type=int, default=None,
                     help="finished trials the study needs (default: sweep.trials)")
    run.add_argument("--params", default="params.yaml")
    shown = sub.add_parser("show", help="the study's trials and the best")
    shown.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command == "show":
        return run_command(lambda: show(args.params))

    def work() -> int:
        from .worker import run_worker

        cfg, raw = _params(args.params)
        return run_worker(cfg, raw, args.trials)
    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
