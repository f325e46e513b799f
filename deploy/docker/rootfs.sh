# Sourced by build-image.sh and build-redis-image.sh: an image's root filesystem made from a
# binary and exactly the shared libraries it links, imported with `docker import`, so that no base
# image and no registry is needed.
#
#   rootfs_new DIR                   an empty tree: /etc/passwd and /etc/group with root and a
#                                    `nonroot` user (uid 65532, as in distroless), nsswitch.conf
#                                    (files, then DNS), /tmp, /home/nonroot
#   rootfs_libraries DIR BINARY      every library the dynamic loader maps for BINARY, the loader
#                                    itself included, at the paths it asks for (read off `ldd`;
#                                    symlinks followed, so each file is the real library)
#   rootfs_binary DIR BINARY [PATH]  BINARY (symlinks followed) at PATH (default: its own path),
#                                    and its libraries
#   rootfs_import DIR IMAGE [ARG...] the tree as IMAGE; ARGs go to `docker import` (--change ...)

rootfs_new() {
    local dir="$1"
    mkdir -p "$dir/etc" "$dir/tmp" "$dir/home/nonroot"
    chmod 1777 "$dir/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        >"$dir/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
    printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
}

rootfs_libraries() {
    local dir="$1" bin="$2" lib
    for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        mkdir -p "$dir$(dirname "$lib")"
        cp -L "$lib" "$dir$lib"
    done
}

rootfs_binary() {
    local dir="$1" bin="$2" at="${3:-$2}"
    mkdir -p "$dir$(dirname "$at")"
    cp -L "$bin" "$dir$at"
    rootfs_libraries "$dir" "$bin"
}

rootfs_import() {
    local dir="$1" image="$2"
    shift 2
    tar --numeric-owner --owner=0 --group=0 -C "$dir" -cf - . | docker import "$@" - "$image" >/dev/null
}
