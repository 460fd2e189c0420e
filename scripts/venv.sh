# Sourced by scripts/test.sh and scripts/demo.sh: makes sure the checkout's .venv exists and is current.
# The venv is (re)built when missing or when requirements.txt / pyproject.toml changed since it was made.
ensure_venv() {
    local root venv stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="$root/.venv"
    stamp="$venv/.promptiqa-installed"
    want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha1sum | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ]; then
        echo "[promptiqa] creating $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "[promptiqa] installing requirements into $venv (first run: several minutes, torch is large)" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$root" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pytest>=7" >&2
        echo "$want" > "$stamp"
    fi
    PY="$venv/bin/python"
}
