# Sourced by scripts/test.sh and scripts/serve.sh: makes $KWS_VENV (default .venv) and installs the project
# with the extras given (once per pyproject.toml + constraints version), every package at the version pinned in
# requirements/constraints.txt. Usage: ensure_venv EXTRAS
TEST_EXTRAS="train,synth,serve,export,loadtest,dev"  # what the test suite needs (scripts/test.sh, .ci/run)
ensure_venv() {
    VENV="${KWS_VENV:-.venv}"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$1-$(cat pyproject.toml requirements/constraints.txt | sha1sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[$1]" -c requirements/constraints.txt
        touch "$stamp"
    fi
}
