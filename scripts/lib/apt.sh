# apt_install PKG...: installs the Debian packages that are missing, idempotently.
# Runs `apt-get update` at most once per run. Without root it only says what is missing.
APT_UPDATED=${APT_UPDATED:-}
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
        return 1
    fi
    if [[ -z $APT_UPDATED ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
        export APT_UPDATED
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pip_install SPEC...: installs Python packages into the test venv when missing.
pip_install() {
    local venv=${BERTH_VENV:?scripts/test sets BERTH_VENV}
    local missing=()
    for spec in "$@"; do
        "$venv/bin/pip" show -q "${spec%%[=<>]*}" >/dev/null 2>&1 || missing+=("$spec")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    "$venv/bin/pip" install -q --disable-pip-version-check "${missing[@]}"
}
