#!/usr/bin/env bash
# Builds a stripped release binary for one target without Docker, using
# Debian's cross gcc (see .cargo/config.toml), and copies it to dist/.
#   bash cross/build.sh aarch64-unknown-linux-gnu
#   bash cross/build.sh armv7-unknown-linux-gnueabihf
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/build.sh TARGET}

case "$target" in
    aarch64-unknown-linux-gnu) packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    armv7-unknown-linux-gnueabihf) packages=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    *) echo "cross/build.sh: unsupported target $target" >&2; exit 2 ;;
esac
missing=()
for pkg in "${packages[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

cargo build --locked --release --target "$target"
mkdir -p dist
cp "target/$target/release/mqtt-kinesis-bridge" "dist/mqtt-kinesis-bridge-$target"
ls -l "dist/mqtt-kinesis-bridge-$target"
