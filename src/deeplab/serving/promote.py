"""The champion/challenger rule, and moving `@champion` on purpose:
`python -m deeplab.serving.promote --version 3 --reason "..."`; `--list` shows every version
with its aliases, the `dvc exp` that registered it and the state of its registering run.

The production alias moves only by the rule of `register.promote` (`assign_alias`, in the
workspace's `dvc repro`, never in a `dvc exp run`) or by this command. Either way the new
champion's version records who moved it, when, why, and which version it replaced
(`promotion.*` tags).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import socket
import sys
import time
from typing import Any, Sequence

from ..core.cli import run_command
from ..core.errors import RegistryError

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def set_champion(client: Any, name: str, version: int, reason: str) -> dict[str, Any]:
    """Give `version` the champion alias and record who, when, why and what it replaced."""
    from mlflow.exceptions import MlflowException

    try:
        previous = client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if CHALLENGER in client.get_model_version(name, str(version)).aliases:
        client.delete_registered_model_alias(name, CHALLENGER)  # it is the champion now
    tags = {"promotion.by": who(), "promotion.at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "promotion.reason": reason, "promotion.previous": str(previous or "none")}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value[:5000])
    return {"name": name, "version": int(version), "previous": previous, **tags}


def assign_alias(client: Any, name: str, version: int, miou: float, rule: str,
                 experiment: str, val_hash: str | None = None) -> list[str]:
    """Aliases by `register.promote` (`rule`), in the workspace only (a `dvc exp run` moves
    none): `if_better` gives `champion` when this version beats the champion's validation mIoU
    on the same validation split (`val_hash`; or there is no champion), else `challenger`;
    `always` gives `champion`; `never` gives `challenger`. A version that already has an alias
    keeps it. (Versions of another class list never get here: `registry.check_same_classes`.)"""
    from mlflow.exceptions import MlflowException

    current = list(client.get_model_version(name, str(version)).aliases)
    if current:
        return current
    if experiment != "workspace":
        log.info("%s version %d: registered by experiment %s, no alias moved (promote it with "
                 "python -m deeplab.serving.promote)", name, version, experiment)
        return []
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        best = float(champion.tags.get("val_miou", "-inf"))
    except MlflowException:
        champion, best = None, float("-inf")
    was = "none" if champion is None else f"{best:.4f}"
    theirs = champion.tags.get("data.val_hash") if champion is not None else None
    if rule == "if_better" and val_hash and theirs and theirs != val_hash:
        best, was = float("inf"), f"{was} on another validation split, not comparable"
    if rule == "always" or (rule == "if_better" and miou > best):
        set_champion(client, name, version, f"register.promote: {rule} (val mIoU {miou:.4f}; "
                                            f"champion had {was})")
        alias = CHAMPION
    else:
        alias = CHALLENGER
        client.set_registered_model_alias(name, alias, str(version))
    log.info("%s version %d is @%s (val mIoU %.4f; champion had %s; register.promote: %s)",
             name, version, alias, miou, was, rule)
    return [alias]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.serving.promote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=None, help="registered model (default: register.model_name)")
    parser.add_argument("--version", type=int, help="the version to make champion")
    parser.add_argument("--reason", help="why (recorded in the version's tags)")
    parser.add_argument("--list", action="store_true",
                        help="list the versions: aliases, val mIoU, the dvc exp that registered "
                             "each, and the state of its registering run")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if args.list:
        return run_command(lambda: _list(args))
    if args.version is None or args.reason is None:
        parser.error("--version and --reason are required (or --list)")
    return run_command(lambda: _promote(args))


def _client(args: argparse.Namespace) -> tuple[Any, str]:
    import mlflow

    from ..core.config import load_params
    from ..tracking.runs import end_orphans
    from ..tracking.store import check_store, tracking_uri

    name = args.name or load_params(args.params, sections=("register",)).registration.model_name
    uri = tracking_uri()
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    for experiment in client.search_experiments():  # runs of dead processes end as KILLED
        end_orphans(client, experiment.experiment_id)
    return client, name


def _list(args: argparse.Namespace) -> int:
    """One line per version of the registered model, newest first."""
    from mlflow.exceptions import MlflowException

    client, name = _client(args)
    found = client.search_model_versions(f"name='{name}'")  # (searches leave aliases out)
    versions = [client.get_model_version(name, v.version) for v in
                sorted(found, key=lambda v: -int(v.version))]
    if not versions:
        raise RegistryError(f"{name}: no registered versions")
    print("version\taliases\tval_miou\tdvc_exp\tregistered_by_run\tcreated")
    for v in versions:
        try:
            state = client.get_run(v.run_id).info.status if v.run_id else "-"
        except MlflowException:
            state = "deleted"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000))
        print(f"{v.version}\t{','.join(v.aliases) or '-'}\t{v.tags.get('val_miou', '-')}\t"
              f"{v.tags.get('dvc.exp', '-')}\t{state}\t{created}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    if not args.reason.strip():
        raise RegistryError("--reason: say why this version becomes the champion")
    client, name = _client(args)
    try:
        client.get_model_version(name, str(args.version))
        result = set_champion(client, name, args.version, args.reason.strip())
    except MlflowException as exc:
        raise RegistryError(f"{name} version {args.version}: {str(exc).splitlines()[0]}") from None
    print(f"promote: {result['name']} version {result['version']} is @champion "
          f"(was {result['previous'] or 'none'}), by {result['promotion.by']}: {result['promotion.reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
