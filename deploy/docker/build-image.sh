#!/usr/bin/env bash
# Builds alb's Docker image on a machine with no container registry: the engine may hold no image
# at all, so nothing is pulled.
#
#   deploy/docker/build-image.sh [TAG]        (default alb:latest; ALB_BIN=path skips cargo build)
#
# 1. the release binary, built on the host (or ALB_BIN), stripped;
# 2. a runtime base image `alb-runtime:local` imported from a tarball holding exactly the shared
#    libraries that binary links (read off `ldd`), /etc/passwd and /etc/group with a `nonroot`
#    user (uid 65532, as in distroless), /tmp, and the host's CA bundle;
# 3. the Dockerfile's `prebuilt` target on that base, from a context of a few files (not the
#    whole checkout), so the image is the one a registry user builds, save where its base came from.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tag="${1:-alb:latest}"
base="${ALB_RUNTIME_IMAGE:-alb-runtime:local}"
work="$root/target/docker-image"

bin="${ALB_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --locked)
    bin="$root/target/release/alb"
fi

rm -rf "$work"
mkdir -p "$work/rootfs/etc" "$work/rootfs/tmp" "$work/context/dist" "$work/context/deploy"
chmod 1777 "$work/rootfs/tmp"

# Every library the dynamic loader maps for the binary, the loader itself included, at the path
# the binary asks for (symlinks followed, so each file is the real library).
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$work/rootfs$(dirname "$lib")"
    cp -L "$lib" "$work/rootfs$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$work/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/rootfs/etc/group"
printf 'hosts: files dns\n' >"$work/rootfs/etc/nsswitch.conf"
mkdir -p "$work/rootfs/home/nonroot"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$work/rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/"
fi
tar --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -cf "$work/rootfs.tar" .
docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$work/rootfs.tar" "$base" >/dev/null

cp "$bin" "$work/context/dist/alb"
strip "$work/context/dist/alb" 2>/dev/null || true
cp "$root/Dockerfile" "$work/context/Dockerfile"
cp "$root/deploy/alb.compose.toml" "$work/context/deploy/"
docker build -q --target prebuilt --build-arg "RUNTIME_IMAGE=$base" -t "$tag" "$work/context" >/dev/null
docker image inspect -f "built $tag: {{.Size}} bytes, user {{.Config.User}}" "$tag"
