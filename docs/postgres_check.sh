#!/usr/bin/env bash
# Check the registry against a PostgreSQL tracking backend, once, on this machine:
# a throwaway cluster on 127.0.0.1 (Debian's `postgresql` package), a real `mlflow server` on
# it, then register (twice: one version), promote, and load models:/...@champion through it.
# Needs: apt-get install postgresql; the project's venv (.venv); installs psycopg2-binary
# there if it is missing (a check-time tool, not a pipeline requirement).
#   bash docs/postgres_check.sh
# It prints "postgres check: OK" or stops at the first failure. Last run: 2026-11-24, Debian 12,
# PostgreSQL 15, mlflow 3.17.2, SQLAlchemy's psycopg2 driver: OK.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -c "import psycopg2" 2>/dev/null || .venv/bin/pip install -q psycopg2-binary
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d)
chown postgres "$WORK" 2>/dev/null || true
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
cleanup() { as_pg "$BIN/pg_ctl -D $WORK/db -m fast stop" >/dev/null 2>&1 || true; kill "${SERVER:-0}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
as_pg "$BIN/initdb -D $WORK/db -A trust -U postgres" >/dev/null
as_pg "$BIN/pg_ctl -D $WORK/db -o '-p $PORT -k $WORK -c listen_addresses=127.0.0.1' -l $WORK/log -w start" >/dev/null
as_pg "$BIN/createdb -h 127.0.0.1 -p $PORT -U postgres mlflow"
MPORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
.venv/bin/mlflow server --backend-store-uri "postgresql+psycopg2://postgres@127.0.0.1:$PORT/mlflow" \
    --serve-artifacts --artifacts-destination "$WORK/artifacts" --host 127.0.0.1 --port "$MPORT" \
    --workers 1 > /tmp/pgcheck-server.log 2>&1 &
SERVER=$!
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$MPORT/health" >/dev/null && break; kill -0 $SERVER 2>/dev/null || { tail -5 /tmp/pgcheck-server.log; exit 1; }; sleep 1; done
MLFLOW_TRACKING_URI="http://127.0.0.1:$MPORT" DVC_ROOT="$WORK" "$PY" - <<'PYCODE'
import json, os, tempfile
from pathlib import Path
import numpy as np, torch
from deeplab.core.config import parse_params
from deeplab.model import DeepLabV3Plus
from deeplab.model.files import save_model
from deeplab.serving.registry import register
from deeplab.serving.segmenter import load_segmenter
from deeplab.serving.promote import main as promote
work = Path(os.environ["DVC_ROOT"])
torch.manual_seed(0)
save_model(work / "m.pt", DeepLabV3Plus(21, "mobilenet_v2", 16, aspp_channels=8, decoder_channels=8))
(work / "metrics.json").write_text(json.dumps({"miou": 0.5}))
p = parse_params({"seed": 0, "mlflow": {"experiment": "postgres-check"}, "register": {
    "model_name": "pgcheck", "min_miou": 0.0, "inference": {"output_stride": 16, "scales": [1.0], "flip": False}}},
    sections=("register", "mlflow"))
first, again = register(work / "m.pt", work / "metrics.json", p), register(work / "m.pt", work / "metrics.json", p)
assert first["new"] and not again["new"] and first["version"] == again["version"] == 1, (first, again)
assert promote(["--name", "pgcheck", "--version", "1", "--reason", "postgres check"]) == 0
seg = load_segmenter("models:/pgcheck@champion")
x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8))
assert seg(x).shape == (1, 40, 40)
print("postgres check: OK (one version for two registrations, promote, verified load through the server)")
PYCODE
