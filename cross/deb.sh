#!/usr/bin/env bash
# Builds the Debian package for one gnu target from cross/build.sh's binary:
#   bash cross/deb.sh aarch64-unknown-linux-gnu      # dist/mqtt-kinesis-bridge_VERSION_arm64.deb
#   bash cross/deb.sh armv7-unknown-linux-gnueabihf  # dist/mqtt-kinesis-bridge_VERSION_armhf.deb
#   bash cross/deb.sh x86_64-unknown-linux-gnu       # dist/mqtt-kinesis-bridge_VERSION_amd64.deb
# Prints the package's path on stdout; the build's output goes to stderr.
# Environment (all optional):
#   DEB_VERSION     the package version; default: Cargo.toml's version
#   DEB_OUTDIR      where the .deb goes; default: dist
#   DEB_MAINTAINER  the Maintainer field; default: the project's placeholder below
# Plain dpkg-deb, no debhelper: the tree is staged in a temporary directory with
# explicit modes, owned by root in the archive (--root-owner-group). The
# maintainer scripts are cross/deb/{postinst,prerm,postrm}; docs/debian.md says
# what they do and why.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/deb.sh TARGET}

case "$target" in
    aarch64-unknown-linux-gnu) arch=arm64 ;;
    armv7-unknown-linux-gnueabihf) arch=armhf ;;
    x86_64-unknown-linux-gnu) arch=amd64 ;;
    *) echo "cross/deb.sh: no Debian package for $target (gnu targets only)" >&2; exit 2 ;;
esac

cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$cargo_version" ] || { echo "cross/deb.sh: no version in Cargo.toml" >&2; exit 1; }
# A Cargo pre-release (0.2.0-rc.1) must sort before its release: Debian's ~ does that.
version=${DEB_VERSION:-${cargo_version//-/\~}}
outdir=${DEB_OUTDIR:-dist}
maintainer=${DEB_MAINTAINER:-mqtt-kinesis-bridge maintainers <mqtt-kinesis-bridge@example.com>}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

bash cross/build.sh "$target" >&2
binary=dist/mqtt-kinesis-bridge-$target

# One timestamp for every file and the changelog, so that a rebuild of the same
# commit gives the same package. Set after the build: build scripts watch this
# variable, and a changed value would rebuild ring and SQLite.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Depends: the newest glibc symbol version the binary links against, and for
# the ARM builds at least the glibc cross/build.sh pins (2.31): that is what they
# are built and tested against. The amd64 build links against this machine's
# glibc. libc6 brings libgcc-s1, the one other library the binary loads.
glibc=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
[ -n "$glibc" ] || { echo "cross/deb.sh: $binary has no GLIBC_ symbols" >&2; exit 1; }
glibc=${glibc#GLIBC_}
if [ "$arch" != amd64 ]; then
    glibc=$(printf '%s\n%s\n' "$glibc" "${GLIBC:-2.31}" | sort -V | tail -n1)
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
doc=$root/usr/share/doc/mqtt-kinesis-bridge
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/lib/sysusers.d" "$root/etc/mqtt-kinesis-bridge" "$doc/catalog" \
    "$root/usr/share/lintian/overrides"

install -m 0755 "$binary" "$root/usr/bin/mqtt-kinesis-bridge"
install -m 0644 cross/mqtt-kinesis-bridge.service "$root/lib/systemd/system/"
install -m 0644 cross/mqtt-kinesis-bridge.sysusers "$root/usr/lib/sysusers.d/mqtt-kinesis-bridge.conf"
# 0640: the database URL may hold a password. root:root here; the postinst gives
# it to the group mqtt-kinesis-bridge once that exists.
install -m 0640 examples/gateway.toml "$root/etc/mqtt-kinesis-bridge/gateway.toml"
install -m 0644 buffer-schema/catalog/*.sql "$doc/catalog/"
install -m 0644 cross/deb/copyright "$doc/copyright"
install -m 0644 cross/deb/lintian-overrides "$root/usr/share/lintian/overrides/mqtt-kinesis-bridge"
gzip -9n < README.md > "$doc/README.md.gz"
# A native package (the packaging is part of the source): changelog.gz, not
# changelog.Debian.gz. The history itself is git's.
{
    echo "mqtt-kinesis-bridge ($version) stable; urgency=medium"
    echo
    echo "  * Built from commit $commit of the mqtt-kinesis-bridge source tree."
    echo "    The changes are in its git history."
    echo
    echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.gz"
chmod 0644 "$doc/README.md.gz" "$doc/changelog.gz"

for script in postinst prerm postrm; do
    install -m 0755 "cross/deb/$script" "$root/DEBIAN/$script"
done
echo /etc/mqtt-kinesis-bridge/gateway.toml > "$root/DEBIAN/conffiles"
# dpkg keeps the conffile's checksum itself; md5sums lists the other files.
(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: mqtt-kinesis-bridge
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: libc6 (>= $glibc)
Section: net
Priority: optional
Description: MQTT to AWS Kinesis Data Streams gateway with a disk spool
 mqtt-kinesis-bridge reads the active MQTT brokers from a central PostgreSQL
 catalog, keeps one MQTT session per broker, writes every message to a
 disk-backed SQLite spool, and drains the spool to AWS Kinesis Data Streams.
 The spool is the source of truth: the gateway may be offline for hours or
 lose power without losing what it accepted.
 .
 The service is installed disabled. Edit /etc/mqtt-kinesis-bridge/gateway.toml,
 run "mqtt-kinesis-bridge check --config /etc/mqtt-kinesis-bridge/gateway.toml",
 then "systemctl enable --now mqtt-kinesis-bridge".
CONTROL
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
deb=$outdir/mqtt-kinesis-bridge_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
ls -l "$deb" >&2
echo "$deb"
