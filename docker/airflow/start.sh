#!/bin/sh
# Starts an Airflow command with the admin password from AIRFLOW_ADMIN_PASSWORD
# (Airflow's simple auth manager reads it from a JSON file; the value never
# appears on a command line).
set -eu
if [ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ] && [ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" ]; then
  umask 077
  python3 - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w") as f:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, f)
PY
fi
exec "$@"
