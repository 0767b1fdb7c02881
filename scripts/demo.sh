#!/usr/bin/env bash
# One command for the built-in demo: installs what it needs, then runs `neuroinspect demo "$@"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system-packages.sh
exec .venv/bin/neuroinspect demo "$@"
