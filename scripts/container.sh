#!/usr/bin/env bash
# Builds the service image with whatever container tooling this machine has.
#
#   scripts/container.sh tool           prints "docker" (a daemon answers), "podman" (podman + buildah + runc), or fails
#   scripts/container.sh build [TAG]    builds the Dockerfile as TAG (default localhost/kws:latest)
#   scripts/container.sh run [TAG] [ARGS...]   runs it detached on 127.0.0.1:${KWS_CONTAINER_PORT:-18000}, prints the id
#   scripts/container.sh engine ARGS... runs the engine command with this machine's flags (podman: vfs storage, runc)
#
# With a Docker daemon this is plain `docker build` from the public python:3.11-slim base. Without one (these
# machines: no daemon, no registry) it follows ../shared/docs/containers.md: a Debian bookworm base made
# locally with debootstrap (once), buildah to build (Docker format: OCI images drop HEALTHCHECK), podman +
# runc to run.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=localhost/debian-bookworm:minbase
PODMAN=(podman --storage-driver vfs --runtime runc)

tool() {
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null && command -v buildah >/dev/null && command -v runc >/dev/null; then
        echo podman
    else
        echo "no container tooling: neither a Docker daemon nor podman + buildah + runc" >&2
        return 1
    fi
}

engine() {
    if [ "$(tool)" = docker ]; then
        docker "$@"
    elif [ "${1:-}" = run ]; then  # runc here refuses podman's default rlimits
        shift
        "${PODMAN[@]}" run --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "$@"
    else
        "${PODMAN[@]}" "$@"
    fi
}

local_base() {
    if "${PODMAN[@]}" image exists "$LOCAL_BASE"; then
        return
    fi
    command -v debootstrap >/dev/null || { echo "debootstrap is needed to make the local base image" >&2; return 1; }
    local rootfs mirror
    rootfs=$(mktemp -d)
    trap "rm -rf '$rootfs'" EXIT  # a failed debootstrap leaves nothing behind
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    # What python:3.11-slim also leaves out: package caches, lists, docs, man pages, translations.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*
    chmod 755 "$rootfs"  # mktemp's 700 would become the image's / and lock out the non-root user
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

build() {
    local tag=${1:-localhost/kws:latest}
    if [ "$(tool)" = docker ]; then
        docker build -t "$tag" .
        return
    fi
    local_base
    local cert_args=()
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then  # package downloads here go through a TLS-inspecting proxy
        cert_args=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
    fi
    buildah bud --isolation chroot --storage-driver vfs --layers --format docker "${cert_args[@]}" \
        --build-arg BASE_IMAGE="$LOCAL_BASE" -t "$tag" .
}

run() {
    local tag=${1:-localhost/kws:latest}
    shift || true
    engine run -d -p "127.0.0.1:${KWS_CONTAINER_PORT:-18000}:8000" "$@" "$tag"
}

command=${1:-}
shift || true
case "$command" in
    tool) tool ;;
    build) build "$@" ;;
    run) run "$@" ;;
    engine) engine "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
