"""DVC stage fetch: the raw datasets -> data/raw (generated, your own folders, or downloads),
and the unlabeled pool's list -> data/pool.csv."""

from __future__ import annotations

from argparse import Namespace

from ..core.schema import Params

SECTIONS = ("data",)
PATHS = ("raw",)
OPTIONAL = ("pool",)


def run(params: Params, paths: Namespace) -> str:
    from ..prepare.fetch import fetch

    manifest = fetch(params.data, paths.raw, paths.pool)
    return f"fetch: {manifest['source']} {manifest['layout']} data ready in {paths.raw}"
