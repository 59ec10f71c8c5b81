#!/usr/bin/env bash
# Makes sure the redis-server binary exists (the tests and `make run` start their own servers from it).
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "redis-server is missing: installing it with apt-get" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null 2>&1 && exit 0
fi
echo "redis-server is not installed and could not be installed here: install Redis 7 (e.g. 'apt-get install redis-server' or 'brew install redis') and run again" >&2
exit 1
