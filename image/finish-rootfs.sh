#!/bin/sh
# Finishes the root filesystem of the baas image, after the Debian packages of image/packages
# are installed in it:
#
#   image/finish-rootfs.sh ROOTFS BAAS RESTIC
#
# puts the binaries BAAS and RESTIC at ROOTFS/usr/local/bin/{baas,restic}, adds the non-root
# default user of image/config (65532:65532, "nonroot") with its home directory, makes /tmp
# writable for everyone (sticky), and removes apt's package lists and caches and the logs of the
# installation. Nothing else.
#
# It runs in two places and must do the same in both:
#   - Containerfile, inside debian:bookworm-slim, with ROOTFS=/;
#   - scripts/lib/images.sh, on the build host, on a root filesystem made by mmdebstrap.
# So it never chroots and uses only POSIX sh and coreutils, and it is idempotent.
set -eu

if [ "$#" -ne 3 ]; then
  echo "usage: $0 ROOTFS BAAS RESTIC" >&2
  exit 2
fi
rootfs=${1%/}   # "/" becomes "", so "$rootfs/usr" is "/usr"
baas=$2
restic=$3
here=$(dirname "$0")
# shellcheck source=image/config source-path=SCRIPTDIR/..
. "$here/config"

[ -d "$rootfs/etc" ] || { echo "$0: $1 is not a root filesystem (no /etc)" >&2; exit 1; }
for bin in "$baas" "$restic"; do
  [ -f "$bin" ] || { echo "$0: $bin does not exist" >&2; exit 1; }
done

# The two binaries: the operator and in-Job agent, and the restic it drives.
mkdir -p "$rootfs/usr/local/bin"
install -m 0755 "$baas" "$rootfs/usr/local/bin/baas"
install -m 0755 "$restic" "$rootfs/usr/local/bin/restic"

# The non-root default user. Written directly, not with useradd, which would need a chroot.
uid=${IMAGE_USER%%:*}
gid=${IMAGE_USER##*:}
name=$IMAGE_USER_NAME
home=/home/$name
grep -q "^$name:" "$rootfs/etc/group" || echo "$name:x:$gid:" >>"$rootfs/etc/group"
grep -q "^$name:" "$rootfs/etc/passwd" \
  || echo "$name:x:$uid:$gid:$name:$home:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
if [ -f "$rootfs/etc/shadow" ] && ! grep -q "^$name:" "$rootfs/etc/shadow"; then
  echo "$name:!:::::::" >>"$rootfs/etc/shadow"
fi
if [ -f "$rootfs/etc/gshadow" ] && ! grep -q "^$name:" "$rootfs/etc/gshadow"; then
  echo "$name:!::" >>"$rootfs/etc/gshadow"
fi
mkdir -p "$rootfs$home"
chown "$uid:$gid" "$rootfs$home"
chmod 0750 "$rootfs$home"

# restic and the agent may write temporary files as any user.
mkdir -p "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

# What the installation left behind and the image does not need.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
  "$rootfs"/var/log/apt/* "$rootfs"/var/log/dpkg.log "$rootfs"/var/log/alternatives.log
