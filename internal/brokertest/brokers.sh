#!/usr/bin/env bash
# Starts the brokers the destination tests publish to, when they are not
# running: RabbitMQ on 127.0.0.1:5672 (rabbitmq-server -detached) and NATS
# with JetStream (nats-server -js, on 127.0.0.1:4222 if that is free, else on
# a free port, whose URL goes to $TMPDIR/asyncgate-test-nats.url where
# internal/brokertest finds it). Installs the Debian packages when absent.
# Never fails the build: a broker that cannot be had makes its tests skip,
# saying so.
set -uo pipefail
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
install() {
	echo "installing $1 with apt-get"
	$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null
}

if up 5672; then
	echo "RabbitMQ: running on 127.0.0.1:5672"
else
	command -v rabbitmq-server >/dev/null 2>&1 || install rabbitmq-server
	if command -v rabbitmq-server >/dev/null 2>&1; then
		echo "RabbitMQ: starting (rabbitmq-server -detached)"
		$SUDO rabbitmq-server -detached >/dev/null 2>&1
		for _ in $(seq 1 120); do up 5672 && break; sleep 1; done
	fi
	up 5672 && echo "RabbitMQ: running on 127.0.0.1:5672" || echo "RabbitMQ: not available; its tests will skip"
fi

urlfile="${TMPDIR:-/tmp}/asyncgate-test-nats.url"
if [ -n "${ASYNCGATE_TEST_NATS_URL:-}" ]; then
	echo "NATS: $ASYNCGATE_TEST_NATS_URL (ASYNCGATE_TEST_NATS_URL)"
	exit 0
fi
if up 4222; then
	echo "NATS: running on 127.0.0.1:4222"
	exit 0
fi
if [ -s "$urlfile" ] && up "$(sed 's/.*://' "$urlfile")"; then
	echo "NATS: running at $(cat "$urlfile")"
	exit 0
fi
command -v nats-server >/dev/null 2>&1 || install nats-server
if ! command -v nats-server >/dev/null 2>&1; then
	echo "NATS: not available; its tests will skip"
	exit 0
fi
port=4222
while up "$port"; do port=$((port + 1)); done
dir=$(mktemp -d "${TMPDIR:-/tmp}/asyncgate-nats.XXXXXX")
echo "NATS: starting (nats-server -js) on 127.0.0.1:$port"
setsid nohup nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir" >"$dir/nats.log" 2>&1 </dev/null &
for _ in $(seq 1 50); do up "$port" && break; sleep 0.2; done
if up "$port"; then
	echo "nats://127.0.0.1:$port" >"$urlfile"
else
	echo "NATS: did not start (see $dir/nats.log); its tests will skip"
fi
exit 0
