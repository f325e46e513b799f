#!/usr/bin/env bash
# Builds a Redis image from Debian's `redis-server` on a machine with no container registry, the
# way build-image.sh builds alb's: the host's binary and exactly the libraries it links, imported
# as an image (nothing pulled, no base image). For the fleet stack (deploy/fleet/), where the alb
# replicas share their rate limits through it.
#
#   apt-get install -y redis-server          (the host's binary: REDIS_BIN=path takes another)
#   deploy/docker/build-redis-image.sh [TAG] (default alb-redis:local)
#
# The image runs `redis-server` as `nonroot` (uid 65532) on 0.0.0.0:6379 with protected mode off
# (it is reached from the other containers of a private network, with no password) and no
# persistence (no RDB snapshots, no AOF): the limiters' state is a few seconds' worth, and a Redis
# that restarts empty only hands every key a fresh bucket.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${1:-alb-redis:local}"
bin="${REDIS_BIN:-/usr/bin/redis-server}"
# shellcheck source=rootfs.sh
. "$here/rootfs.sh"

if [ ! -x "$bin" ]; then
    echo "no $bin: apt-get install -y redis-server (or REDIS_BIN=path)" >&2
    exit 1
fi

mkdir -p "$root/target"
work="$(mktemp -d "$root/target/docker-redis.XXXXXX")"
trap 'rm -rf "$work"' EXIT

rootfs_new "$work/rootfs"
# Debian's /usr/bin/redis-server is a link to redis-check-rdb, and Redis picks its mode from the
# name it was started by: the file is copied under the server's name.
rootfs_binary "$work/rootfs" "$bin" /usr/bin/redis-server
rootfs_import "$work/rootfs" "$tag" \
    --change 'USER nonroot:nonroot' \
    --change 'WORKDIR /tmp' \
    --change 'EXPOSE 6379' \
    --change 'CMD ["/usr/bin/redis-server", "--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]'
docker image inspect -f "built $tag: {{.Size}} bytes, user {{.Config.User}}" "$tag"
