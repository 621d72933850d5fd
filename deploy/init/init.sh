#!/bin/sh
# The Compose stack's one-shot init (docker-compose.yml, service `init`; docs/deploy.md). It runs before
# the broker at every `docker compose up` and changes nothing once everything is in place:
#   - the first time, the device registry starts with the demo line's devices;
#   - the broker's service accounts get the passwords from .env (never printed).
# `init.sh --rotate` gives the existing service accounts the passwords now in .env.
set -eu

broker_dir="${BROKER_DIR:-deploy/mosquitto/auth}"  # pilot devices' default, relative to the working folder
registry="${PILOT_DEVICES_FILE:?PILOT_DEVICES_FILE must name the device registry}"
seed="${SEED_DEVICES_FILE:-}"
case "${1:-}" in
    "") rotate="" ;;
    --rotate) rotate="--rotate" ;;
    *) echo "usage: init.sh [--rotate]" >&2; exit 2 ;;
esac

if [ ! -e "$registry" ] && [ -n "$seed" ]; then
    cp "$seed" "$registry"
    echo "init: the device registry $registry starts with the devices of $seed"
fi

# NAME ROLE PASSWORD_VARIABLE: the account, with the password held by that variable.
account() {
    # $rotate stays unquoted: when empty it must vanish, not become an empty argument.
    # shellcheck disable=SC2086
    if ! pilot devices service-account "$1" --role "$2" --password-env "$3" --broker-dir "$broker_dir" $rotate; then
        echo "init: the broker account $1 could not be set up (see above). If you changed $3 in .env," \
            "apply it with: docker compose run --rm init sh /opt/pilot/init.sh --rotate" >&2
        exit 1
    fi
}
account pilot-collector collector MQTT_COLLECTOR_PASSWORD  # its name is its client id; dead letters: PILOT_*
account simulator publisher MQTT_SIMULATOR_PASSWORD
account pilot-healthcheck monitor MQTT_HEALTHCHECK_PASSWORD
echo "init: broker accounts ready in $broker_dir"
