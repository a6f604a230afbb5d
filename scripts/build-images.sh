#!/usr/bin/env bash
# Builds the project's container images from the Dockerfiles users build, with no registry:
# buildah (Debian) builds them, and the base images their FROM lines name are made here first from
# Debian packages and passed in as build arguments (RUST_IMAGE, PYTHON_IMAGE, RUNTIME_IMAGE):
#   localhost/modelrollout-base/build:bookworm   debootstrap'd Debian with gcc, python3/pip and the
#                                                Rust toolchain this machine builds with (rustup's)
#   localhost/modelrollout-base/cc:bookworm      distroless-like: the files of libc6, libgcc-s1,
#                                                libstdc++6, tzdata, netbase, a CA bundle, uid 65532
# Outputs, as docker-archive tars in $MODELROLLOUT_CACHE/images/out (name:tag inside):
#   ghcr.io/modelrollout/controller:0.1.0, ghcr.io/modelrollout/inference-sidecar:0.1.0, ghcr.io/modelrollout/evidence:0.1.0,
#   ghcr.io/modelrollout/models:0.1.0 (the example models, for oci:// artifacts), and for the tests
#   localhost/modelrollout/busybox:test (Debian's busybox-static: the model store's file server),
#   localhost/modelrollout/envoy-gateway:<v> and localhost/modelrollout/envoy:<v> (the gateway)
#
#   scripts/build-images.sh            build both; prints IMAGES_DIR=<dir> on its last line
#   scripts/build-images.sh --sizes    also print each image's size
#
# cargo's registry and target dirs are RUN cache mounts (`--mount=type=cache`), so a second build
# compiles only what changed. Storage (vfs) lives in $MODELROLLOUT_CACHE/containers.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$(dirname "$0")/../tests/lib.sh"
IMG="$CACHE/images"
OUT="$IMG/out"
mkdir -p "$IMG" "$OUT"
STORE=(--root "$CACHE/containers/storage" --runroot "$CACHE/containers/run" --storage-driver vfs)
TAG=0.1.0
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

[[ $(id -u) == 0 ]] || { echo "build-images.sh: run as root (buildah vfs storage, chroot builds)" >&2; exit 1; }
bash "$ROOT/scripts/debian-packages.sh" buildah debootstrap >&2
command -v rustc >/dev/null || { echo "build-images.sh: rustc not found (the build base copies this machine's toolchain)" >&2; exit 1; }
b() { buildah "${STORE[@]}" "$@"; }
has_image() { b inspect --type image "$1" >/dev/null 2>&1; }

# --- Debian root file system (cached; keyed by the package list) -----------------------------
PACKAGES=ca-certificates,gcc,libc6-dev,pkg-config,python3,python3-pip,python-is-python3,tzdata,netbase
KEY=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
ROOTFS="$IMG/rootfs-$SUITE-$KEY"
if [[ ! -f "$ROOTFS/.done" ]]; then
  step "debootstrap $SUITE (minbase + $PACKAGES)"
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$IMG/debootstrap.log" 2>&1 \
    || { tail -20 "$IMG/debootstrap.log" >&2; exit 1; }
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
  touch "$ROOTFS/.done"
fi

# --- build base: Debian + this machine's Rust toolchain ---------------------------------------
TOOLCHAIN=$(rustc --print sysroot)
RUST_VERSION=$(rustc --version | awk '{print $2}')
BUILD_BASE="localhost/modelrollout-base/build:$SUITE-rust-$RUST_VERSION-$KEY"
if ! has_image "$BUILD_BASE"; then
  step "build base $BUILD_BASE"
  c=$(b from scratch)
  b copy "$c" "$ROOTFS" /
  b run --isolation chroot "$c" -- rm -f /.done
  mnt=$(b mount "$c")
  mkdir -p "$mnt/usr/local/rust" "$mnt/usr/local/cargo"
  (cd "$TOOLCHAIN" && tar --exclude=./share/doc --exclude='./lib/rustlib/src' -cf - .) | tar -C "$mnt/usr/local/rust" -xf -
  # The build stages fetch crates and wheels from the registries through whatever this machine
  # reaches them by: they trust this machine's CAs (the runtime base keeps Debian's own bundle).
  cp /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  b umount "$c" >/dev/null
  b config --env CARGO_HOME=/usr/local/cargo --env PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  b commit --quiet --rm "$c" "$BUILD_BASE" >/dev/null
fi

# --- runtime base: the files of a few Debian packages, no shell, uid 65532 ---------------------
RUNTIME_BASE="localhost/modelrollout-base/cc:$SUITE-$KEY"
if ! has_image "$RUNTIME_BASE"; then
  step "runtime base $RUNTIME_BASE"
  stage=$(mktemp -d)
  # Debian's merged /usr: /lib, /lib64, /bin and /sbin are links into /usr, and stay links here.
  mkdir -p "$stage/usr/lib" "$stage/usr/lib64" "$stage/usr/bin" "$stage/usr/sbin"
  for d in lib lib64 bin sbin; do ln -s "usr/$d" "$stage/$d"; done
  for p in libc6 libgcc-s1 libstdc++6 tzdata netbase; do
    chroot "$ROOTFS" dpkg -L "$p" | while read -r f; do
      [[ -L "$ROOTFS$f" || ( -e "$ROOTFS$f" && ! -d "$ROOTFS$f" ) ]] || continue
      case $f in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/man/* | /usr/share/gdb/*) continue ;; esac
      echo ".$f"
    done
  done | (cd "$ROOTFS" && tar --no-recursion -cf - -T -) | tar -C "$stage" --keep-directory-symlink -xf -
  mkdir -p "$stage/etc/ssl/certs" "$stage/tmp" "$stage/home/nonroot"
  cp "$ROOTFS/etc/ssl/certs/ca-certificates.crt" "$stage/etc/ssl/certs/"
  chmod 1777 "$stage/tmp"; chown 65532:65532 "$stage/home/nonroot"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$stage/etc/group"
  c=$(b from scratch)
  b copy "$c" "$stage" /
  b config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$c"
  b commit --quiet --rm "$c" "$RUNTIME_BASE" >/dev/null
  rm -rf "$stage"
fi

# --- the build context ---------------------------------------------------------------------------
# The images' cargo target cache is shared by every checkout built on this machine (CI's clone, a
# working tree), and cargo judges freshness by mtimes: a tree whose sources are older than the
# cache's last build from another checkout got that checkout's binaries (a controller image built
# here once lacked the commit it was built from). So the context is a copy of the tree (its files,
# as git lists them), and when its content differs from the last build's every file is touched:
# the same content builds incrementally, other content rebuilds the workspace's crates.
CONTEXT=$(mktemp -d "$IMG/context.XXXXXX")
trap 'rm -rf "$CONTEXT"' EXIT
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -p -t "$CONTEXT" 2>/dev/null) \
  || (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
        [[ -e $f ]] && cp --parents -p "$f" "$CONTEXT"; done)
cp -p "$ROOT/.dockerignore" "$CONTEXT/" 2>/dev/null || true
STAMP=$(cd "$CONTEXT" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [[ "$(cat "$OUT/.context-stamp" 2>/dev/null)" != "$STAMP" ]]; then
  find "$CONTEXT" -type f -exec touch {} +
fi

# --- the project's images, from the shipped Dockerfiles ---------------------------------------
build() {
  local dockerfile=$1 name=$2
  step "buildah bud -f $dockerfile -t $name"
  (cd "$CONTEXT" && b bud --quiet --isolation chroot --network host --layers=false \
    --build-arg "RUST_IMAGE=$BUILD_BASE" --build-arg "PYTHON_IMAGE=$BUILD_BASE" --build-arg "RUNTIME_IMAGE=$RUNTIME_BASE" \
    -f "$dockerfile" -t "$name" .) >&2
  local file
  file="$OUT/$(basename "${name%%:*}").tar"
  rm -f "$file"
  b push --quiet "$name" "docker-archive:$file:$name" >&2
}
build controller/Dockerfile "ghcr.io/modelrollout/controller:$TAG"
build inference-sidecar/Dockerfile "ghcr.io/modelrollout/inference-sidecar:$TAG"
build evidence/Dockerfile "ghcr.io/modelrollout/evidence:$TAG"
build models/Containerfile "ghcr.io/modelrollout/models:$TAG"
echo "$STAMP" > "$OUT/.context-stamp"

# --- for the tests only: a static file server (Debian's busybox-static) for the model store ---
STORE_IMAGE=localhost/modelrollout/busybox:test
if ! has_image "$STORE_IMAGE" || [[ ! -f "$OUT/busybox.tar" ]]; then
  step "test image $STORE_IMAGE (Debian's busybox-static)"
  deb=$(mktemp -d)
  (cd "$deb" && apt-get download busybox-static >/dev/null 2>&1) || { apt-get update -qq && (cd "$deb" && apt-get download busybox-static); }
  dpkg -x "$deb"/busybox-static_*.deb "$deb/x"
  c=$(b from scratch)
  b copy "$c" "$deb/x/bin/busybox" /bin/busybox
  b config --user 65532:65532 --entrypoint '["/bin/busybox"]' "$c"
  b commit --quiet --rm "$c" "$STORE_IMAGE" >/dev/null
  rm -f "$OUT/busybox.tar"
  b push --quiet "$STORE_IMAGE" "docker-archive:$OUT/busybox.tar:$STORE_IMAGE" >&2
  rm -rf "$deb"
fi
# --- for the tests only: Envoy Gateway's control plane and Envoy (tests/gateway/build.sh) -------
# On the runtime base, as upstream ships them on distroless: /usr/local/bin/{envoy-gateway,envoy},
# uid 65532. The EnvoyProxy resource names the Envoy image; the chart's values the other.
GATEWAY_ENV=$(bash "$ROOT/tests/gateway/build.sh")
GATEWAY_BIN=$(sed -n 's/^GATEWAY_BIN=//p' <<<"$GATEWAY_ENV")
gateway_image() {
  local name=$1 bin=$2 file="$OUT/$3.tar"
  if ! has_image "$name" || [[ ! -f $file || "$GATEWAY_BIN/$bin" -nt $file ]]; then
    step "test image $name"
    local c
    c=$(b from "$RUNTIME_BASE")
    b copy --chmod 0755 "$c" "$GATEWAY_BIN/$bin" "/usr/local/bin/$bin"
    b config --user 65532:65532 --entrypoint "[\"/usr/local/bin/$bin\"]" "$c"
    b commit --quiet --rm "$c" "$name" >/dev/null
    rm -f "$file"
    b push --quiet "$name" "docker-archive:$file:$name" >&2
  fi
}
gateway_image "$(sed -n 's/^GATEWAY_IMAGE=//p' <<<"$GATEWAY_ENV")" envoy-gateway envoy-gateway
gateway_image "$(sed -n 's/^ENVOY_IMAGE=//p' <<<"$GATEWAY_ENV")" envoy envoy

# Keep the store lean: dangling intermediate images go.
b rmi --prune >/dev/null 2>&1 || true

if [[ ${1:-} == --sizes ]]; then
  for name in "ghcr.io/modelrollout/controller:$TAG" "ghcr.io/modelrollout/inference-sidecar:$TAG" "ghcr.io/modelrollout/evidence:$TAG" "ghcr.io/modelrollout/models:$TAG"; do
    b images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$name" >&2
  done
fi
step "images built in $(( $(date +%s) - START ))s"
echo "IMAGES_DIR=$OUT"
