# Sourced by scripts/test.sh and scripts/serve.sh: makes $KWS_VENV (default .venv) and installs the project
# with the extras given (once per pyproject.toml version). Usage: ensure_venv EXTRAS
ensure_venv() {
    VENV="${KWS_VENV:-.venv}"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$1-$(sha1sum pyproject.toml | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[$1]"
        touch "$stamp"
    fi
}
