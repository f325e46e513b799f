#!/usr/bin/env bash
# Builds alb's Docker image on a machine with no container registry: the engine may hold no image
# at all, so nothing is pulled.
#
#   deploy/docker/build-image.sh [TAG]        (default alb:latest; ALB_BIN=path skips cargo build)
#
# 1. the release binary, built on the host (or ALB_BIN), stripped;
# 2. a runtime base image `alb-runtime:local` (ALB_RUNTIME_IMAGE) imported from a tarball holding
#    exactly the shared libraries that binary links (read off `ldd`), /etc/passwd and /etc/group
#    with a `nonroot` user (uid 65532, as in distroless), /tmp, and the host's CA bundle
#    (rootfs.sh beside this script, which build-redis-image.sh uses too);
# 3. the Dockerfile's `prebuilt` target on that base, from a context of a few files (not the
#    whole checkout), so the image is the one a registry user builds, save where its base came from.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${1:-alb:latest}"
base="${ALB_RUNTIME_IMAGE:-alb-runtime:local}"
# shellcheck source=rootfs.sh
. "$here/rootfs.sh"

bin="${ALB_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --locked)
    bin="$root/target/release/alb"
fi

# A directory of its own: two builds at once (two tests, two tags) do not share one.
mkdir -p "$root/target"
work="$(mktemp -d "$root/target/docker-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/context/dist" "$work/context/deploy"

rootfs_new "$work/rootfs"
rootfs_libraries "$work/rootfs" "$bin"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$work/rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/"
fi
rootfs_import "$work/rootfs" "$base" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin'

cp "$bin" "$work/context/dist/alb"
strip "$work/context/dist/alb" 2>/dev/null || true
cp "$root/Dockerfile" "$work/context/Dockerfile"
cp "$root/deploy/alb.compose.toml" "$work/context/deploy/"
docker build -q --target prebuilt --build-arg "RUNTIME_IMAGE=$base" -t "$tag" "$work/context" >/dev/null
docker image inspect -f "built $tag: {{.Size}} bytes, user {{.Config.User}}" "$tag"
