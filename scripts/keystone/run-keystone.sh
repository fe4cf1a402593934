#!/usr/bin/env bash
# Runs a real OpenStack Keystone (from PyPI) on loopback, for the tests of
# Neutrino's external-Keystone mode (crates/neutrino/tests/external_keystone.rs)
# and for trying that mode by hand.
#
#   scripts/keystone/run-keystone.sh [options]
#
#   --venv DIR              virtualenv to (re)use        [target/keystone-venv]
#   --state DIR             database, keys, config, logs [target/keystone-state]
#   --port PORT             listen on 127.0.0.1:PORT     [35357]
#   --token-expiration S    token lifetime in seconds    [3600]
#   --install-only          only make sure the virtualenv exists, then exit
#   --setup-only            install and set up the state directory, then exit
#
# Steps, each skipped when already done:
#   1. a virtualenv with keystone==KEYSTONE_VERSION and every dependency
#      pinned (resolved on CPython 3.11); rebuilt only when the pins or the
#      interpreter change, under a lock so parallel runs share one build;
#   2. keystone.conf in the state directory: SQLite database, Fernet tokens,
#      cheap password hashing, log in keystone.log (rewritten every run);
#   3. keystone-manage db_sync, fernet_setup, credential_setup, bootstrap
#      (admin user and project, roles admin/manager/member/reader/service,
#      region RegionOne, identity endpoint);
#   4. exec serve.py (this directory): the public WSGI application on
#      127.0.0.1:PORT (stdlib wsgiref, threaded), which creates the accounts
#      below through the identity API and then writes STATE/ready.json
#      (URL, ids, passwords): wait for that file, not for the port.
#
# Accounts (domain Default; passwords can be set in the environment):
#   admin    / project admin   / role admin    KEYSTONE_ADMIN_PASSWORD   [admin-secret]
#   neutrino / project service / role service  KEYSTONE_SERVICE_PASSWORD [neutrino-secret]
#   demo     / project demo    / role member   KEYSTONE_DEMO_PASSWORD    [demo-secret]
#   alt      / project alt     / role member   KEYSTONE_ALT_PASSWORD     [alt-secret]
#
# Keystone stays in the foreground under the script's process id (the script
# execs it), so killing that process stops it; with KEYSTONE_EXIT_WITH_PID=N
# in the environment it also stops by itself once process N is gone. Needs python3 (>= 3.10) with
# the venv module and access to PyPI; set PYTHON for another interpreter.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"

VENV="$REPO_DIR/target/keystone-venv"
STATE="$REPO_DIR/target/keystone-state"
PORT=35357
EXPIRATION=3600
MODE=serve
PY="${PYTHON:-python3}"
KEYSTONE_VERSION="30.0.0"
ADMIN_PASSWORD="${KEYSTONE_ADMIN_PASSWORD:-admin-secret}"

# The whole resolved set for keystone==$KEYSTONE_VERSION on CPython 3.11.
PINS="alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.1
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
idna==3.20
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
Mako==1.4.3
MarkupSafe==3.0.4
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.3
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
pytz==2026.6
PyYAML==6.0.3
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
yappi==1.7.6
keystone==${KEYSTONE_VERSION}"

die() {
    echo "run-keystone.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
    --venv) VENV="${2:?--venv needs a directory}"; shift 2 ;;
    --state) STATE="${2:?--state needs a directory}"; shift 2 ;;
    --port) PORT="${2:?--port needs a number}"; shift 2 ;;
    --token-expiration) EXPIRATION="${2:?--token-expiration needs seconds}"; shift 2 ;;
    --install-only) MODE=install; shift ;;
    --setup-only) MODE=setup; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number"
[[ "$EXPIRATION" =~ ^[0-9]+$ && "$EXPIRATION" -gt 0 ]] || die "--token-expiration must be a positive number"
[[ -n "$VENV" && -n "$STATE" ]] || die "--venv and --state must not be empty"
mkdir -p "$(dirname "$VENV")"
VENV="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
if [[ "$MODE" != install ]]; then
    mkdir -p "$STATE"
    STATE="$(cd "$STATE" && pwd)"
    # Whoever waits for ready.json must not see the one of an earlier run.
    rm -f "$STATE/ready.json"
fi

# --- 1. the virtualenv ------------------------------------------------------

command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install Python 3 (Debian: apt-get install python3 python3-venv)"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null || die "$PY is older than Python 3.10"
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    die "$PY lacks the venv/ensurepip modules (Debian: apt-get install python3-venv)"

PY_VERSION="$("$PY" -c 'import sys; print(sys.implementation.name, *sys.version_info[:3])')"
STAMP_TEXT="$(printf '%s\n%s\n' "$PY_VERSION" "$PINS")"
STAMP="$VENV/.neutrino-keystone-stamp"

venv_is_current() {
    [[ -x "$VENV/bin/keystone-manage" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$STAMP_TEXT" ]]
}

build_venv() {
    if [[ -e "$VENV" ]]; then
        # Only ever remove something that is a virtualenv.
        [[ -f "$VENV/pyvenv.cfg" ]] || die "$VENV exists and is not a virtualenv; refusing to replace it"
        rm -rf "$VENV"
    fi
    local log constraints started
    log="$(mktemp)"
    constraints="$(mktemp)"
    printf '%s\n' "$PINS" >"$constraints"
    started=$SECONDS
    echo "run-keystone.sh: installing keystone==$KEYSTONE_VERSION into $VENV" >&2
    if ! "$PY" -m venv "$VENV" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log" "$constraints"
        die "creating the virtualenv failed (Debian: apt-get install python3-venv)"
    fi
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install --quiet \
        --constraint "$constraints" "keystone==$KEYSTONE_VERSION" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log" "$constraints"
        rm -rf "$VENV"
        die "installing keystone==$KEYSTONE_VERSION failed"
    fi
    if ! "$VENV/bin/python" -W ignore -c 'import keystone.server.wsgi' >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log" "$constraints"
        rm -rf "$VENV"
        die "the installed keystone does not import"
    fi
    rm -f "$log" "$constraints"
    printf '%s\n' "$STAMP_TEXT" >"$STAMP"
    echo "run-keystone.sh: installed in $((SECONDS - started)) s" >&2
}

if ! venv_is_current; then
    # Parallel runs: one builds, the others wait and reuse it.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$VENV.lock"
        flock 9
    fi
    venv_is_current || build_venv
    if command -v flock >/dev/null 2>&1; then
        exec 9>&-
    fi
fi
[[ "$MODE" == install ]] && exit 0

# --- 2. configuration -------------------------------------------------------

chmod 700 "$STATE"
CONF="$STATE/keystone.conf"
{
    echo "# Written by scripts/keystone/run-keystone.sh; rewritten on every run."
    echo "[DEFAULT]"
    echo "log_file = $STATE/keystone.log"
    echo
    echo "[database]"
    echo "connection = sqlite:///$STATE/keystone.db"
    echo
    echo "[token]"
    echo "provider = fernet"
    echo "expiration = $EXPIRATION"
    echo
    echo "[fernet_tokens]"
    echo "key_repository = $STATE/fernet-keys"
    echo
    echo "[credential]"
    echo "key_repository = $STATE/credential-keys"
    echo
    echo "[identity]"
    echo "# Tests only: the cheapest bcrypt cost, so a login takes milliseconds."
    echo "password_hash_rounds = 4"
} >"$CONF"

# --- 3. database, keys and bootstrap ----------------------------------------

# Keystone's dependencies warn about eventlet's deprecation on every start.
export PYTHONWARNINGS="ignore::DeprecationWarning"
SETUP_STAMP="$STATE/.setup-stamp"
SETUP_TEXT="keystone $KEYSTONE_VERSION port $PORT admin $(printf '%s' "$ADMIN_PASSWORD" | sha256sum | cut -c1-16)"

run_manage() {
    local log="$STATE/keystone-manage-$1.log"
    if ! "$VENV/bin/keystone-manage" --config-file "$CONF" "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "keystone-manage $1 failed (full output: $log)"
    fi
}

if [[ ! -f "$SETUP_STAMP" || "$(cat "$SETUP_STAMP")" != "$SETUP_TEXT" ]]; then
    started=$SECONDS
    user="$(id -un)"
    group="$(id -gn)"
    # Independent steps at once (each is mostly Python start-up).
    pids=()
    run_manage db_sync &
    pids+=($!)
    if [[ ! -f "$STATE/fernet-keys/0" ]]; then
        run_manage fernet_setup --keystone-user "$user" --keystone-group "$group" &
        pids+=($!)
    fi
    if [[ ! -f "$STATE/credential-keys/0" ]]; then
        run_manage credential_setup --keystone-user "$user" --keystone-group "$group" &
        pids+=($!)
    fi
    failed=0
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    [[ "$failed" == 0 ]] || die "setting up $STATE failed"
    run_manage bootstrap --bootstrap-password "$ADMIN_PASSWORD" \
        --bootstrap-region-id RegionOne \
        --bootstrap-public-url "http://127.0.0.1:$PORT/v3"
    printf '%s\n' "$SETUP_TEXT" >"$SETUP_STAMP"
    echo "run-keystone.sh: state set up in $STATE in $((SECONDS - started)) s" >&2
fi
[[ "$MODE" == setup ]] && exit 0

# --- 4. serve ---------------------------------------------------------------

export OS_KEYSTONE_CONFIG_FILES="$CONF"
exec "$VENV/bin/python" "$SCRIPT_DIR/serve.py" --port "$PORT" --ready "$STATE/ready.json" \
    --admin-password "$ADMIN_PASSWORD" --token-expiration "$EXPIRATION"
