#!/usr/bin/env bash
# Builds and tests one ARM target on this x86_64 machine under qemu-user:
# the unit tests (`cargo test --lib`, linked by Debian's cross gcc and run by the
# qemu runner in .cargo/config.toml), then cross/build.sh's release binary
# through cross/smoke.sh, then (gnu targets) the Debian package cross/deb.sh
# makes from it: its Architecture and Depends, and its binary under qemu.
#   bash cross/test.sh aarch64-unknown-linux-gnu
#   bash cross/test.sh armv7-unknown-linux-gnueabihf
#   bash cross/test.sh aarch64-unknown-linux-musl   # smoke test only, see below
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/test.sh TARGET}

case "$target" in
    aarch64-unknown-linux-gnu)
        packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
        qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
        deb_arch=arm64 ;;
    armv7-unknown-linux-gnueabihf)
        packages=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
        qemu=(qemu-arm -L /usr/arm-linux-gnueabihf)
        deb_arch=armhf ;;
    aarch64-unknown-linux-musl)
        # Debian's gcc cannot link the bundled SQLite against musl, so no unit
        # tests here; the static binary runs under qemu with no libraries at all.
        packages=()
        qemu=(qemu-aarch64) ;;
    *) echo "cross/test.sh: unsupported target $target" >&2; exit 2 ;;
esac
packages+=(qemu-user)
missing=()
for pkg in "${packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

if [[ $target != *musl ]]; then
    echo "== $target: unit tests under ${qemu[0]}"
    cargo test --locked --lib --target "$target"
fi
echo "== $target: release build"
bash cross/build.sh "$target"
if [[ $target == *gnu* ]]; then
    # The artifact must start on Bullseye-era systems (glibc 2.31).
    newest=$(objdump -T "dist/mqtt-kinesis-bridge-$target" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
    echo "== $target: needs $newest"
    printf '%s\n%s\n' "${newest#GLIBC_}" "${GLIBC:-2.31}" | sort -CV ||
        { echo "cross/test.sh: $target needs $newest, newer than glibc ${GLIBC:-2.31}" >&2; exit 1; }
fi
echo "== $target: smoke test under ${qemu[0]}"
bash cross/smoke.sh "dist/mqtt-kinesis-bridge-$target" "${qemu[@]}"

if [[ $target == *gnu* ]]; then
    echo "== $target: Debian package"
    deb=$(bash cross/deb.sh "$target")
    dpkg-deb --info "$deb"
    arch=$(dpkg-deb --field "$deb" Architecture)
    [ "$arch" = "$deb_arch" ] || { echo "cross/test.sh: $deb has Architecture $arch, not $deb_arch" >&2; exit 1; }
    # libc6 at the glibc the build pins, or newer if the binary needed more.
    depends=$(dpkg-deb --field "$deb" Depends)
    floor=$(printf '%s\n%s\n' "${newest#GLIBC_}" "${GLIBC:-2.31}" | sort -V | tail -n1)
    [ "$depends" = "libc6 (>= $floor)" ] ||
        { echo "cross/test.sh: $deb depends on '$depends', not libc6 (>= $floor)" >&2; exit 1; }
    unpacked=$(mktemp -d)
    trap 'rm -rf "$unpacked"' EXIT
    dpkg-deb -x "$deb" "$unpacked"
    packaged_version=$("${qemu[@]}" "$unpacked/usr/bin/mqtt-kinesis-bridge" --version)
    [[ $packaged_version == "mqtt-kinesis-bridge "* ]] ||
        { echo "cross/test.sh: the packaged binary printed: $packaged_version" >&2; exit 1; }
    echo "deb: ok: $deb ($(stat -c %s "$deb") bytes), $arch, $depends, $packaged_version"
fi
