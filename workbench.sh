#!/usr/bin/env bash
# Set up (first run) and start the workbench, or run the tests:
#   ./workbench.sh            install into .venv if needed, then start the web UI + model worker
#   ./workbench.sh pytest     install into .venv if needed, then run the test suite (pytest)
#   ./workbench.sh lint       install into .venv if needed, then lint (ruff check ., rules in ruff.toml)
#   ./workbench.sh <verb>     any CLI verb: import, round, export, status, worker (see ./workbench.sh --help)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/.requirements.installed; then
  echo "Installing the workbench's requirements into .venv (first run takes a few minutes)..."
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  cp requirements.txt .venv/.requirements.installed
fi
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # no busy-waiting torch threads on a shared CPU
case "${1:-start}" in
  pytest|test) shift; exec .venv/bin/python -m pytest "$@" ;;
  lint) shift; exec .venv/bin/ruff check . "$@" ;;
  *) [ $# -eq 0 ] && set -- start; exec .venv/bin/python -m app "$@" ;;
esac
