#!/usr/bin/env bash
# Creates (idempotently) a Python virtualenv holding a pinned
# python-openstackclient, used by the tests that drive Neutrino with the real
# `openstack` CLI (crates/neutrino/tests/openstack_cli.rs).
#
#   scripts/osc-venv.sh [VENV_DIR]      (default: target/osc-venv)
#
# Needs python3 with the venv module (Debian: `apt-get install python3-venv`)
# and access to PyPI. Every package of the environment is pinned (pins below,
# resolved on CPython 3.11), so all machines get the same client. The venv is
# rebuilt only when the pins or the interpreter change; on success the script
# prints nothing. Set PYTHON to use another interpreter than python3.
set -euo pipefail

VENV="${1:-target/osc-venv}"
PY="${PYTHON:-python3}"
OSC_VERSION="10.5.0"

# The whole resolved set for python-openstackclient==$OSC_VERSION.
PINS="autopage==0.6.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
cliff==4.17.0
cmd2==4.3.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
dogpile.cache==1.5.0
idna==3.20
iso8601==2.1.0
jmespath==1.1.0
jsonpatch==1.47
jsonpointer==3.12
keystoneauth1==5.18.1
markdown-it-py==4.3.0
mdurl==0.1.2
msgpack==1.2.4
netaddr==1.3.0
openstacksdk==4.22.0
os-service-types==1.9.0
osc-lib==4.7.0
oslo.config==10.7.0
oslo.context==6.5.0
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.serialization==5.11.0
oslo.utils==10.2.0
packaging==26.3
pbr==7.1.3
platformdirs==4.14.7
prettytable==3.18.0
prompt_toolkit==3.0.53
psutil==7.2.2
pycparser==3.12
Pygments==2.21.0
pyparsing==3.3.3
pyperclip==1.11.0
python-dateutil==4.0.0
python-keystoneclient==6.0.0
python-manilaclient==6.3.0
python-openstackclient==${OSC_VERSION}
PyYAML==6.0.3
requests==2.34.2
rfc3986==2.0.0
rich==15.0.0
rich-argparse==1.8.0
stevedore==5.10.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
wcwidth==0.9.4
wrapt==2.5.2"

die() {
    echo "osc-venv.sh: $*" >&2
    exit 1
}

command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install Python 3 (Debian: apt-get install python3 python3-venv)"
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    die "$PY lacks the venv/ensurepip modules (Debian: apt-get install python3-venv)"

PY_VERSION="$("$PY" -c 'import sys; print(sys.implementation.name, *sys.version_info[:3])')"
STAMP_TEXT="$(printf '%s\n%s\n' "$PY_VERSION" "$PINS")"
STAMP="$VENV/.neutrino-osc-stamp"

is_current() {
    [[ -x "$VENV/bin/openstack" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$STAMP_TEXT" ]]
}

is_current && exit 0

mkdir -p "$(dirname "$VENV")"
# Two test runs may ask at once: one builds, the other waits and reuses.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock 9
    is_current && exit 0
fi

if [[ -e "$VENV" ]]; then
    # Only ever remove a virtualenv (or an empty directory).
    if [[ -f "$VENV/pyvenv.cfg" ]] || [[ -d "$VENV" && -z "$(ls -A "$VENV")" ]]; then
        rm -rf "$VENV"
    else
        die "$VENV exists and is not a virtualenv; refusing to replace it"
    fi
fi

LOG="$(mktemp)"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$LOG" "$CONSTRAINTS"' EXIT
printf '%s\n' "$PINS" >"$CONSTRAINTS"

if ! "$PY" -m venv "$VENV" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    die "creating the virtualenv failed (Debian: apt-get install python3-venv)"
fi
if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install --quiet \
    --constraint "$CONSTRAINTS" "python-openstackclient==$OSC_VERSION" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -rf "$VENV"
    die "installing python-openstackclient==$OSC_VERSION failed"
fi
if ! "$VENV/bin/openstack" --version >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -rf "$VENV"
    die "the installed openstack CLI does not run"
fi
printf '%s\n' "$STAMP_TEXT" >"$STAMP"
