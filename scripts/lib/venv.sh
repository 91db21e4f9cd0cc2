# shellcheck shell=bash
# A Python venv with pinned requirements, for the test stages that drive
# the system with Python tools (the fuzzer, the official SDK).
#
# ensure_venv DIR REQUIREMENTS_FILE LABEL: makes DIR a venv (installing
# python3-venv with apt-get when it is missing and we are root) and
# installs REQUIREMENTS_FILE into it, unless it holds exactly those pins
# already. Messages are prefixed with [LABEL].
ensure_venv() {
    local venv=$1 requirements label=$3
    requirements=$(cat "$2")
    if ! command -v python3 >/dev/null 2>&1; then
        printf '[%s] ERROR: python3 is needed (apt-get install python3 python3-venv).\n' "$label" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        if ! python3 -m venv "$venv"; then
            rm -rf "$venv"
            # Debian's python3 keeps venv in a package of its own.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                printf '[%s] installing python3-venv\n' "$label" >&2
                { apt-get update -qq && apt-get install -y -qq python3-venv; } >&2 || true
            fi
            python3 -m venv "$venv" || {
                rm -rf "$venv"
                printf '[%s] ERROR: python3 -m venv failed: install python3-venv.\n' "$label" >&2
                return 1
            }
        fi
    fi
    if [ "$(cat "$venv/requirements.txt" 2>/dev/null)" != "$requirements" ]; then
        printf '[%s] installing %s into %s\n' "$label" "$2" "$venv" >&2
        printf '%s\n' "$requirements" >"$venv/requirements.in"
        "$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
            -r "$venv/requirements.in" || {
            printf '[%s] ERROR: pip install failed (see above).\n' "$label" >&2
            return 1
        }
        printf '%s' "$requirements" >"$venv/requirements.txt"
    fi
}
