#!/usr/bin/env bash
# Makes sure a NATS server with JetStream answers on 127.0.0.1:4222 for the real-backend tests.
# GitHub's service containers take no command-line arguments, and the NATS image needs -js, so
# the workflow starts it here, with Docker; on a machine that already runs one (this project's
# CI machine, a developer's), it only checks. scripts/backends.sh then finds it running.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if answers; then
  echo "ci-nats: NATS answers on 127.0.0.1:4222"
  exit 0
fi
docker run -d --name fabrikam-nats -p 127.0.0.1:4222:4222 nats:2.10-alpine -js >/dev/null
for _ in $(seq 1 100); do
  if answers; then
    echo "ci-nats: NATS with JetStream started on 127.0.0.1:4222"
    exit 0
  fi
  sleep 0.1
done
echo "ci-nats: NATS did not start" >&2
docker logs fabrikam-nats >&2 || true
exit 1
