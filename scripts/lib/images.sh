#!/usr/bin/env bash
# Builds the project's container images without a registry or a container engine, as
# docker-archive tarballs for `ctr -n k8s.io images import`:
#
#   scripts/lib/images.sh build [NAME...]   # default: all; prints "<ref> <tarball>" per image
#   scripts/lib/images.sh list [NAME...]    # the same lines, without building anything
#   scripts/lib/images.sh check             # Containerfile agrees with image/ (check_containerfile)
#   scripts/lib/images.sh clean             # removes the cached images and root filesystems
#
# NAME is one of the names below or its ref. The refs are printed fully qualified, as
# containerd names them after an import; pods may use the short form (baas:dev).
#
#   baas                    docker.io/library/baas:dev      the shipped image, from image/
#   pause                   docker.io/baas-test/pause:dev   containerd's sandbox_image
#   busybox                 docker.io/baas-test/busybox:dev test pods, local-path helper pods
#   mariadb                 docker.io/baas-test/mariadb:dev Debian's mariadb-server
#   local-path-provisioner  docker.io/baas-test/local-path-provisioner:v<version>
#   k8up                    docker.io/baas-test/k8up:v<version>  K8up's Job image, for scripts/bench-peers
#
# The baas image is defined once, in image/ (packages, config, finish-rootfs.sh), which
# Containerfile uses too: here on a Debian root filesystem from mmdebstrap, there on
# debian:bookworm-slim. Its binaries: ${BAAS_IMAGE_BINARY:-${CARGO_TARGET_DIR:-target}/release/baas}
# (not built here: run `cargo build --release` first) and restic from build-go-tool.sh.
#
# Everything is cached under ${BAAS_CACHE_DIR:-~/.cache/baas}/images: each tarball
# (<name>.tar) with the content hash of its inputs (<name>.key), and the Debian root
# filesystems (rootfs/<name>-<hash>, keyed by their package list), so that a new baas binary
# only repacks the image (seconds) and mmdebstrap (1-3 minutes) runs once per package list.
# Builds are atomic (a work directory, then mv) and locked per image.
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SELF")/../.." && pwd)"
DEF="$REPO/image"
CACHE_DIR="${BAAS_CACHE_DIR:-$HOME/.cache/baas}"
IMAGES_DIR="$CACHE_DIR/images"
NAMES=(pause busybox local-path-provisioner mariadb baas k8up)
# shellcheck source=image/config source-path=SCRIPTDIR/../..
. "$DEF/config"

log() { echo "[images] $*" >&2; }
die() { echo "[images] error: $*" >&2; exit 1; }

TMPS=()
cleanup() {
  local t
  for t in "${TMPS[@]}"; do rm -rf "$t"; done
}
trap cleanup EXIT

# 16 hex digits of the sha256 of stdin
digest() { sha256sum | cut -c1-16; }
# content hashes of files, without their names (a checkout elsewhere has the same keys)
contents() { local f; for f in "$@"; do sha256sum <"$f" | cut -d' ' -f1; done; }
# the packages of a package list file, one a line
packages_of() { sed -e 's/#.*//' "$1" | tr -s '[:blank:]' '\n' | sed '/^$/d'; }
size_of() { du -sh --apparent-size "$1" | cut -f1; }

# The version of local-path-provisioner that build-go-tool.sh pins (versions live there only).
lpp_version() { pinned_version LOCAL_PATH; }

# pinned_version NAME: the version of NAME_VERSION in build-go-tool.sh, or of BAAS_NAME_VERSION
pinned_version() {
  local var="BAAS_$1_VERSION" v
  v="${!var:-}"
  if [[ -z $v ]]; then
    v="$(sed -n "s/^$1_VERSION=\"\${BAAS_$1_VERSION:-\([^}]*\)}\".*/\1/p" \
      "$REPO/scripts/lib/build-go-tool.sh")"
  fi
  [[ -n $v ]] || die "cannot read $1_VERSION from scripts/lib/build-go-tool.sh"
  echo "v$v"
}

ref_of() {
  case "$1" in
    baas) echo "docker.io/library/baas:dev" ;;
    pause | busybox | mariadb) echo "docker.io/baas-test/$1:dev" ;;
    local-path-provisioner) echo "docker.io/baas-test/local-path-provisioner:$(lpp_version)" ;;
    k8up) echo "docker.io/baas-test/k8up:$(pinned_version K8UP)" ;;
  esac
}

# name_of NAME-OR-REF: the image's name
name_of() {
  local a="${1#docker.io/}" n
  a="${a#library/}"
  a="${a#baas-test/}"
  a="${a%%:*}"
  for n in "${NAMES[@]}"; do
    if [[ $a == "$n" ]]; then
      echo "$n"
      return
    fi
  done
  die "unknown image '$1' (known: ${NAMES[*]})"
}

# new_work NAME: sets WORK to a new work directory holding an empty image ($WORK/oci:img) and
# its unpacked bundle, whose root filesystem $WORK/bundle/rootfs the caller fills.
new_work() {
  mkdir -p "$IMAGES_DIR"
  WORK="$(mktemp -d "$IMAGES_DIR/.work-$1.XXXXXX")"
  TMPS+=("$WORK")
  log "$1: building"
  umoci init --layout "$WORK/oci"
  umoci new --image "$WORK/oci:img"
  umoci unpack --image "$WORK/oci:img" "$WORK/bundle" >/dev/null
}

# pack NAME REF KEY UMOCI-CONFIG-ARG...: the filled root filesystem of $WORK as a single-layer
# image with that configuration, written atomically to $IMAGES_DIR/NAME.tar (and NAME.key).
pack() {
  local name="$1" ref="$2" key="$3"
  shift 3
  umoci repack --image "$WORK/oci:img" "$WORK/bundle"
  umoci config --image "$WORK/oci:img" "$@"
  umoci gc --layout "$WORK/oci"
  TMPDIR="$WORK" skopeo --insecure-policy copy --quiet \
    "oci:$WORK/oci:img" "docker-archive:$WORK/image.tar:$ref"
  mv -f "$WORK/image.tar" "$IMAGES_DIR/$name.tar"
  echo "$key" >"$WORK/key"
  mv -f "$WORK/key" "$IMAGES_DIR/$name.key"
  rm -rf "$WORK"
  BUILT=1
}

fresh() { [[ -f $IMAGES_DIR/$1.tar && -f $IMAGES_DIR/$1.key && "$(cat "$IMAGES_DIR/$1.key")" == "$2" ]]; }

# debian_rootfs NAME DEST DPKG-CFG... -- PACKAGE...: copies into DEST a Debian root filesystem
# (minbase, merged /usr, without the files that debian:*-slim leaves out and those that the
# further dpkg configuration files DPKG-CFG... exclude) with PACKAGE... installed, made once
# by mmdebstrap and cached under a hash of the package list, the dpkg configuration and this
# function.
debian_rootfs() {
  local name="$1" dest="$2"
  shift 2
  local cfgs=("$DEF/slim.dpkg.cfg") dpkgopts include dir="$IMAGES_DIR/rootfs" key out fd tmp start cfg
  while [[ $1 != -- ]]; do cfgs+=("$1"); shift; done
  shift
  include="$(printf '%s\n' "$@" | sort -u | paste -sd, -)"
  key="$({
    echo "$IMAGE_SUITE $(dpkg --print-architecture) $include"
    declare -f debian_rootfs
    cat "${cfgs[@]}"
  } | digest)"
  out="$dir/$name-$key"
  mkdir -p "$dir"
  exec {fd}>"$dir/.$name.lock"
  flock "$fd"
  if [[ ! -d $out ]]; then
    log "$name: making a Debian $IMAGE_SUITE root filesystem with $include (mmdebstrap, 1-3 min; log: $dir/$name.log)"
    start=$SECONDS
    tmp="$dir/.tmp-$name-$key.$$"
    TMPS+=("$tmp")
    rm -rf "$tmp"
    dpkgopts=()
    for cfg in "${cfgs[@]}"; do dpkgopts+=("--dpkgopt=$cfg"); done
    # /etc/resolv.conf and /etc/hostname are the build host's; runtimes provide their own.
    mmdebstrap --variant=minbase --include="$include" \
      "${dpkgopts[@]}" \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
      "$IMAGE_SUITE" "$tmp" >"$dir/$name.log" 2>&1 \
      || { tail -n 20 "$dir/$name.log" >&2; die "mmdebstrap failed; see $dir/$name.log"; }
    mv "$tmp" "$out"
    find "$dir" -mindepth 1 -maxdepth 1 -name "$name-*" ! -path "$out" -exec rm -rf {} +
    log "$name: Debian root filesystem made in $((SECONDS - start))s ($(size_of "$out"))"
  fi
  cp -a "$out/." "$dest/"
  exec {fd}>&-
}

# busybox_rootfs DEST: static busybox at /bin/busybox with its applets linked in /bin, like
# the official busybox image, plus root and nobody.
BUSYBOX=/bin/busybox
busybox_rootfs() {
  local d="$1"
  mkdir -p "$d"/{bin,dev,etc,proc,root,sys,tmp,var}
  chmod 0700 "$d/root"
  chmod 1777 "$d/tmp"
  install -m 0755 "$BUSYBOX" "$d/bin/busybox"
  chroot "$d" /bin/busybox --install -s /bin
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$d/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$d/etc/group"
}

check_busybox() {
  [[ -x $BUSYBOX ]] || die "$BUSYBOX is missing: apt-get install busybox-static"
  if readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    die "$BUSYBOX is not static: apt-get install busybox-static"
  fi
}

# Each build_NAME REF: returns at once when the tarball is up to date.

build_baas() {
  local ref="$1" bin restic key packages
  bin="${BAAS_IMAGE_BINARY:-${CARGO_TARGET_DIR:-$REPO/target}/release/baas}"
  [[ -f $bin ]] || die "no baas binary at $bin: run 'cargo build --release' first (or set BAAS_IMAGE_BINARY)"
  restic="$("$REPO/scripts/lib/build-go-tool.sh" restic)"
  mapfile -t packages < <(packages_of "$DEF/packages")
  key="$({
    contents "$SELF" "$DEF/packages" "$DEF/config" "$DEF/finish-rootfs.sh" "$DEF/slim.dpkg.cfg"
    contents "$bin" "$restic"
  } | digest)"
  fresh baas "$key" && return
  new_work baas
  debian_rootfs baas "$WORK/bundle/rootfs" -- "${packages[@]}"
  # as the Containerfile's build stage does
  strip --strip-all -o "$WORK/baas" "$bin"
  sh "$DEF/finish-rootfs.sh" "$WORK/bundle/rootfs" "$WORK/baas" "$restic"
  pack baas "$ref" "$key" \
    --config.entrypoint="$IMAGE_ENTRYPOINT" --config.user="$IMAGE_USER" --config.env="PATH=$IMAGE_PATH"
}

# K8up's Job image as its Dockerfile makes it (k8up as the entrypoint, restic beside it, user
# 65532, a writable /.cache), on the baas image's Debian base with the same restic, so that the
# agents compared differ only in the agent.
build_k8up() {
  local ref="$1" bin restic key packages root
  bin="$("$REPO/scripts/lib/build-go-tool.sh" k8up)"
  restic="$("$REPO/scripts/lib/build-go-tool.sh" restic)"
  mapfile -t packages < <(packages_of "$DEF/packages")
  key="$({
    contents "$SELF" "$DEF/packages" "$DEF/slim.dpkg.cfg"
    contents "$bin" "$restic"
  } | digest)"
  fresh k8up "$key" && return
  new_work k8up
  root="$WORK/bundle/rootfs"
  debian_rootfs baas "$root" -- "${packages[@]}"
  install -D -m 0755 "$bin" "$root/usr/local/bin/k8up"
  install -D -m 0755 "$restic" "$root/usr/local/bin/restic"
  mkdir -p "$root/.cache" "$root/tmp"
  chmod 0777 "$root/.cache"
  chmod 1777 "$root/tmp"
  pack k8up "$ref" "$key" --config.entrypoint=k8up --config.user=65532 \
    --config.env="PATH=$IMAGE_PATH" --config.env=RESTIC_BINARY=/usr/local/bin/restic
}

build_pause() {
  local ref="$1" key
  key="$({
    contents "$SELF" "$DEF/test/pause.c"
    gcc --version | head -n 1
  } | digest)"
  fresh pause "$key" && return
  new_work pause
  gcc -static -Os -Wall -Werror -o "$WORK/bundle/rootfs/pause" "$DEF/test/pause.c"
  strip --strip-all "$WORK/bundle/rootfs/pause"
  # the user of the upstream pause image
  pack pause "$ref" "$key" --config.entrypoint=/pause --config.user=65535:65535
}

build_busybox() {
  local ref="$1" key
  check_busybox
  key="$(contents "$SELF" "$BUSYBOX" | digest)"
  fresh busybox "$key" && return
  new_work busybox
  busybox_rootfs "$WORK/bundle/rootfs"
  pack busybox "$ref" "$key" --config.cmd=sh --config.env="PATH=$IMAGE_PATH"
}

build_local-path-provisioner() {
  local ref="$1" key bin
  check_busybox
  bin="$("$REPO/scripts/lib/build-go-tool.sh" local-path-provisioner)"
  key="$(contents "$SELF" "$BUSYBOX" "$bin" | digest)"
  fresh local-path-provisioner "$key" && return
  new_work local-path-provisioner
  busybox_rootfs "$WORK/bundle/rootfs"
  install -D -m 0755 "$bin" "$WORK/bundle/rootfs/usr/bin/local-path-provisioner"
  # as upstream's image: ENTRYPOINT ["local-path-provisioner"]
  pack local-path-provisioner "$ref" "$key" \
    --config.entrypoint=local-path-provisioner --config.env="PATH=$IMAGE_PATH"
}

build_mariadb() {
  local ref="$1" key packages root
  mapfile -t packages < <(packages_of "$DEF/test/mariadb.packages")
  key="$(contents "$SELF" "$DEF"/test/mariadb.* "$DEF/test/mariadb-entrypoint.sh" "$DEF/slim.dpkg.cfg" | digest)"
  fresh mariadb "$key" && return
  new_work mariadb
  root="$WORK/bundle/rootfs"
  debian_rootfs mariadb "$root" "$DEF/test/mariadb.dpkg.cfg" -- "${packages[@]}"
  # mariadb-server's postinst initialised a data directory (114 MB); the entrypoint makes a
  # fresh one on first start, in the image or on an empty PVC.
  find "$root/var/lib/mysql" -mindepth 1 -delete
  # the mysql* names of the binaries that mariadb.dpkg.cfg leaves out
  find "$root/usr/bin" -xtype l \( -name 'mysql*' -o -name 'mariadb*' \) -delete
  install -m 0755 "$DEF/test/mariadb-entrypoint.sh" "$root/usr/local/bin/mariadb-entrypoint.sh"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/apt/* \
    "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log
  pack mariadb "$ref" "$key" \
    --config.entrypoint=/usr/local/bin/mariadb-entrypoint.sh --config.env="PATH=$IMAGE_PATH" \
    --config.exposedports=3306/tcp
}

build() {
  local names=("$@") name ref fd start
  ((${#names[@]})) || names=("${NAMES[@]}")
  for name in "${names[@]}"; do name_of "$name" >/dev/null; done
  ((EUID == 0)) || die "building images needs root (mmdebstrap, chroot, umoci)"
  mkdir -p "$IMAGES_DIR"
  for name in "${names[@]}"; do
    name="$(name_of "$name")"
    ref="$(ref_of "$name")"
    start=$SECONDS
    BUILT=""
    exec {fd}>"$IMAGES_DIR/.$name.lock"
    flock "$fd"
    "build_$name" "$ref"
    exec {fd}>&-
    if [[ -n $BUILT ]]; then
      log "$name: built $ref in $((SECONDS - start))s ($(size_of "$IMAGES_DIR/$name.tar"))"
    fi
    echo "$ref $IMAGES_DIR/$name.tar"
  done
}

list() {
  local names=("$@") name
  ((${#names[@]})) || names=("${NAMES[@]}")
  for name in "${names[@]}"; do
    name="$(name_of "$name")"
    echo "$(ref_of "$name") $IMAGES_DIR/$name.tar"
  done
}

# The files that src/ includes at compile time (include_str!, include_bytes!, include!),
# relative to the repository. Unit tests (tests.rs, tests/) are not part of a release build.
compile_time_includes() {
  local file path
  grep -rnoP --include='*.rs' --exclude='tests.rs' --exclude-dir='tests' 'include(_str|_bytes)?!\(\s*"\K[^"]+' "$REPO/src" \
    | while IFS=: read -r file _ path; do
      realpath -m --relative-to="$REPO" "$(dirname "$file")/$path"
    done
  grep -rhoP --include='*.rs' --exclude='tests.rs' --exclude-dir='tests' 'CARGO_MANIFEST_DIR"\)\s*,\s*"/?\K[^"]+' "$REPO/src" || true
}

# check_containerfile: fails when Containerfile's final stage differs from image/ (base suite,
# USER, ENTRYPOINT, PATH; packages and finishing must come from image/packages and
# image/finish-rootfs.sh), when its build stage does not copy every file the compilation
# reads, or when it builds restic other than through scripts/lib/build-go-tool.sh.
check_containerfile() {
  local cf="$REPO/Containerfile" problems=() lines final build restic value t top src needed
  [[ -f $cf ]] || die "no $cf"
  # logical lines: comments dropped, continuation lines joined
  lines="$(sed -e '/^[[:space:]]*#/d' "$cf" | sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba' -e '}')"
  # stage N's lines, as "N<TAB>line"
  lines="$(awk '/^[[:space:]]*FROM[[:space:]]/{n++} n{print n "\t" $0}' <<<"$lines")"
  final="$(awk -F'\t' -v n="$(grep -c $'^[0-9]*\tFROM ' <<<"$lines" || true)" '$1==n{print $2}' <<<"$lines")"
  build="$(awk -F'\t' 'index($2,"cargo build"){print $1; exit}' <<<"$lines")"
  restic="$(awk -F'\t' '$2 ~ /build-go-tool\.sh restic([^-_.a-zA-Z0-9]|$)/{print $1; exit}' <<<"$lines")"
  stage() { awk -F'\t' -v n="$1" '$1==n{print $2}' <<<"$lines"; }
  last() { grep -E "^[[:space:]]*$1[[:space:]]" <<<"$final" | tail -n 1 | sed -E "s/^[[:space:]]*$1[[:space:]]+//; s/[[:space:]]+\$//"; }

  value="$(grep -E '^[[:space:]]*FROM[[:space:]]' <<<"$final" | awk '{print $2}' || true)"
  [[ $value =~ ^(docker\.io/(library/)?)?debian:$IMAGE_SUITE-slim$ ]] \
    || problems+=("the final stage is FROM $value, not debian:$IMAGE_SUITE-slim (IMAGE_SUITE in image/config)")
  value="$(last USER || true)"
  [[ $value == "$IMAGE_USER" ]] || problems+=("USER is '$value', image/config says IMAGE_USER=$IMAGE_USER")
  value="$(last ENTRYPOINT | tr -d ' ' || true)"
  [[ $value == "[\"$IMAGE_ENTRYPOINT\"]" ]] \
    || problems+=("ENTRYPOINT is '$value', image/config says [\"$IMAGE_ENTRYPOINT\"]")
  value="$(grep -oP '^\s*ENV\s+(.*\s)?PATH=\K\S+' <<<"$final" | tail -n 1 | tr -d '"' || true)"
  [[ $value == "$IMAGE_PATH" ]] || problems+=("ENV PATH is '$value', image/config says $IMAGE_PATH")
  if grep -qE '^[[:space:]]*CMD[[:space:]]' <<<"$final"; then
    problems+=("the final stage sets CMD; the locally built image has none")
  fi
  # image/ mounted into the final stage: where?
  t="$(grep -oP -- '--mount=\S*' <<<"$final" | grep -E '(^|,)(source|src)=(\./)?image/?(,|$)' \
    | grep -v 'from=' | grep -oP '(^|,)(target|dst|destination)=\K[^,]+' | head -n 1 || true)"
  if [[ -z $t ]]; then
    problems+=("the final stage does not bind-mount image/ (RUN --mount=type=bind,source=image,target=...)")
  else
    t="${t%/}"
    grep -qF "$t/packages" <<<"$final" || problems+=("the final stage does not install the packages of image/packages ($t/packages)")
    grep -qF "$t/finish-rootfs.sh" <<<"$final" || problems+=("the final stage does not run image/finish-rootfs.sh ($t/finish-rootfs.sh)")
  fi
  if [[ -z $build ]]; then
    problems+=("no stage runs 'cargo build'")
  else
    grep -qF 'cargo build --release --locked' <<<"$(stage "$build")" \
      || problems+=("the build stage does not run 'cargo build --release --locked'")
    value="$(stage "$build" | grep -E '^[[:space:]]*FROM[[:space:]]' | awk '{print $2}' || true)"
    [[ $value == *-"$IMAGE_SUITE" ]] \
      || problems+=("the build stage is FROM $value: baas links against glibc, build it on $IMAGE_SUITE")
    # every source of every COPY of the build stage, without ./ and trailing /
    src="$(stage "$build" | { grep -E '^[[:space:]]*COPY[[:space:]]' || true; } | while read -r _ args; do
      read -ra a <<<"$args"
      for ((i = 0; i < ${#a[@]} - 1; i++)); do
        [[ ${a[i]} == --* ]] || { t="${a[i]#./}"; echo "${t%/}"; }
      done
    done)"
    needed=(Cargo.toml Cargo.lock src)
    [[ -f $REPO/build.rs ]] && needed+=(build.rs)
    # build settings (the allocator's) that the tests' builds have and the image's must too
    [[ -f $REPO/.cargo/config.toml ]] && needed+=(.cargo)
    mapfile -t -O "${#needed[@]}" needed < <(compile_time_includes | cut -d/ -f1 | sort -u)
    for top in "${needed[@]}"; do
      grep -qxF "$top" <<<"$src" \
        || problems+=("the build stage does not COPY $top, which the compilation reads")
    done
  fi
  if [[ -z $restic ]]; then
    problems+=("no stage builds restic with scripts/lib/build-go-tool.sh")
  else
    grep -qE '^[[:space:]]*COPY[[:space:]].*scripts/lib/build-go-tool\.sh' <<<"$(stage "$restic")" \
      || problems+=("the restic stage does not COPY scripts/lib/build-go-tool.sh")
    value="$(stage "$restic" | grep -E '^[[:space:]]*FROM[[:space:]]' | grep -oP 'golang:\K[0-9.]+' || true)"
    t="$(go env GOVERSION 2>/dev/null | grep -oP '^go\K[0-9]+\.[0-9]+' || true)"
    if [[ -n $value && -n $t && $value != "$t" && $value != "$t".* ]]; then
      log "warning: Containerfile builds restic with Go $value, this machine has Go $t (restic version shows it)"
    fi
  fi

  if ((${#problems[@]})); then
    printf 'Containerfile: %s\n' "${problems[@]}" >&2
    return 1
  fi
  log "Containerfile agrees with image/ (user $IMAGE_USER, entrypoint $IMAGE_ENTRYPOINT, packages: $(packages_of "$DEF/packages" | paste -sd' ' -))"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  list) shift; list "$@" ;;
  check) check_containerfile ;;
  clean)
    log "removing $IMAGES_DIR"
    rm -rf "$IMAGES_DIR"
    ;;
  *)
    sed -n '2,9p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
