"""Move `@champion` on purpose: `python -m deeplab.serving.promote --version 3 --reason "..."`.

The production alias moves only by the rule of `register.promote` (in the workspace's `dvc
repro`, never in a `dvc exp run`) or by this command. Either way the new champion's version
records who moved it, when, why, and which version it replaced (`promotion.*` tags).
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
import time
from typing import Any, Sequence

from ..core.cli import error_line
from ..core.errors import RegistryError

CHAMPION = "champion"


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
    if "challenger" in client.get_model_version(name, str(version)).aliases:
        client.delete_registered_model_alias(name, "challenger")  # it is the champion now
    tags = {"promotion.by": who(), "promotion.at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "promotion.reason": reason, "promotion.previous": str(previous or "none")}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value[:5000])
    return {"name": name, "version": int(version), "previous": previous, **tags}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deeplab.serving.promote", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=None, help="registered model (default: register.model_name)")
    parser.add_argument("--version", type=int, required=True, help="the version to make champion")
    parser.add_argument("--reason", required=True, help="why (recorded in the version's tags)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        import mlflow
        from mlflow.exceptions import MlflowException

        from ..core.config import load_params
        from ..tracking import check_store, tracking_uri

        name = args.name or load_params(args.params, sections=("register",)).registration.model_name
        if not args.reason.strip():
            raise RegistryError("--reason: say why this version becomes the champion")
        uri = tracking_uri()
        check_store(uri)
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        try:
            client.get_model_version(name, str(args.version))
            result = set_champion(client, name, args.version, args.reason.strip())
        except MlflowException as exc:
            raise RegistryError(f"{name} version {args.version}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - user errors: one line; bugs: traceback
        line = error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    print(f"promote: {result['name']} version {result['version']} is @champion "
          f"(was {result['previous'] or 'none'}), by {result['promotion.by']}: {result['promotion.reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
