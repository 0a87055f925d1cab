#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer; start them with the
# commands from DESIGN.md when they do not; fail loudly when that does not work.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.2; done
  return 1
}

if ! up 6379; then
  echo "redis is not answering on 127.0.0.1:6379; starting it" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_up 6379 || { echo "FATAL: could not start Redis on 127.0.0.1:6379" >&2; exit 1; }
fi

if ! up 5432; then
  echo "postgresql is not answering on 127.0.0.1:5432; starting it" >&2
  if [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  wait_up 5432 || { echo "FATAL: could not start PostgreSQL on 127.0.0.1:5432" >&2; exit 1; }
fi
echo "services: redis 127.0.0.1:6379 and postgresql 127.0.0.1:5432 are up"
