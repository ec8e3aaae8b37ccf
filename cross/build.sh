#!/usr/bin/env bash
# Builds a stripped release binary for one gateway target, without Docker, and
# copies it to dist/mqtt-kinesis-bridge-TARGET.
#   bash cross/build.sh aarch64-unknown-linux-gnu      # needs glibc 2.31+ (Bullseye, Yocto 3.1+)
#   bash cross/build.sh armv7-unknown-linux-gnueabihf  # needs glibc 2.31+
#   bash cross/build.sh aarch64-unknown-linux-musl     # static, needs no libc
#   bash cross/build.sh x86_64-unknown-linux-gnu       # this machine
# ARM targets link with zig (cargo-zigbuild), which can pin an old glibc and
# link the bundled SQLite against musl; Debian's cross gcc cannot do either.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/build.sh TARGET}
# The oldest glibc the gnu builds may need: Raspberry Pi OS Bullseye has 2.31.
GLIBC=${GLIBC:-2.31}

log() { printf '[build] %s\n' "$*" >&2; }

case "$target" in
    aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf) zig_target="$target.$GLIBC" ;;
    aarch64-unknown-linux-musl) zig_target="$target" ;;
    x86_64-unknown-linux-gnu) zig_target="" ;;
    *) echo "cross/build.sh: unsupported target $target" >&2; exit 2 ;;
esac

if [ -n "$zig_target" ]; then
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    # zig from PyPI (the ziglang wheel) and cargo-zigbuild from crates.io.
    python3 -c "import ziglang" 2>/dev/null || { log "pip install ziglang"; pip install -q ziglang; }
    command -v cargo-zigbuild >/dev/null || { log "cargo install cargo-zigbuild"; cargo install --locked -q cargo-zigbuild; }
    cargo zigbuild --locked --release --target "$zig_target"
else
    cargo build --locked --release --target "$target"
fi
mkdir -p dist
# Cargo's output directory: CARGO_TARGET_DIR when set (relative to the repository), else target/.
cp "${CARGO_TARGET_DIR:-target}/$target/release/mqtt-kinesis-bridge" "dist/mqtt-kinesis-bridge-$target"
ls -l "dist/mqtt-kinesis-bridge-$target"
