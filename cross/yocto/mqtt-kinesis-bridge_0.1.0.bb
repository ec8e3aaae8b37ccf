SUMMARY = "MQTT to AWS Kinesis Data Streams gateway with a disk-backed spool"
DESCRIPTION = "Moves IoT telemetry from many MQTT brokers into AWS Kinesis Data \
Streams, through a disk-backed spool."

# Targets the cargo class of Yocto 6.0 (wrynose): Cargo.toml asks for
# rust-version 1.94, and wrynose is the first release whose rust is new enough.
# Older releases (scarthgap ships 1.75) need a newer Rust from another layer.

LICENSE = "Apache-2.0"
# The repository has no LICENSE file yet, so the checksum covers the license
# line of Cargo.toml: if that line changes, license QA stops the build until
# someone looks at this recipe again.
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=2507bd5f0713f05419cd2f22fa06fe62"

# Where to fetch this repository from. There is no public URL to put here, so
# set both in local.conf, a distro config or a .bbappend, for example:
#   MQTT_KINESIS_BRIDGE_GIT_URI = "git://git.example.com/acme/mqtt-kinesis-bridge.git;protocol=https;branch=main"
#   MQTT_KINESIS_BRIDGE_SRCREV = "<full 40-character commit id>"
# Pin a commit, not AUTOREV: the crate list in mqtt-kinesis-bridge-crates.inc
# matches one Cargo.lock, and cargo builds --frozen (offline) from it.
MQTT_KINESIS_BRIDGE_GIT_URI ??= ""
MQTT_KINESIS_BRIDGE_SRCREV ??= ""

SRC_URI = "${MQTT_KINESIS_BRIDGE_GIT_URI}"
SRCREV = "${MQTT_KINESIS_BRIDGE_SRCREV}"
S = "${UNPACKDIR}/${BB_GIT_DEFAULT_DESTSUFFIX}"

# Unset placeholders would otherwise surface as an obscure fetcher error; skip
# the recipe with a message that says what to set.
python __anonymous() {
    for var in ("MQTT_KINESIS_BRIDGE_GIT_URI", "MQTT_KINESIS_BRIDGE_SRCREV"):
        if not d.getVar(var):
            raise bb.parse.SkipRecipe("%s is not set (see the top of %s)" % (var, d.getVar("FILE")))
}

# One crate:// entry and checksum per crates.io package in Cargo.lock. It is
# generated in the source repository by cross/yocto/gen-crates.py (and checked
# by CI), not by the cargo-update-recipe-crates class, so it can be kept in
# sync without a Yocto build. Must come after the SRC_URI assignment above.
require ${BPN}-crates.inc

inherit cargo systemd useradd

# Build the binary only: the crate is also a library (src/lib.rs, used by its
# tests), and cargo_do_install would otherwise ship its .rlib too.
CARGO_BUILD_FLAGS:append = " --bin ${BPN}"

# Cargo.toml's release profile strips the binary. Let Yocto strip it instead,
# which keeps symbols for the -dbg package and avoids the already-stripped QA
# error.
export CARGO_PROFILE_RELEASE_STRIP = "false"

# The unit runs the gateway as this user (User=/Group=). The useradd class is
# the Yocto way to create it when the package is installed; the .sysusers file
# next to the unit is for installs by hand and is not shipped here.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --no-create-home \
    --home-dir ${localstatedir}/lib/${BPN} --shell /bin/false ${BPN}"

SYSTEMD_SERVICE:${PN} = "${BPN}.service"
# Enabled at boot by default; an image that keeps the example config unchanged
# will see the service fail until a real config is installed.
SYSTEMD_AUTO_ENABLE:${PN} ?= "enable"

# cargo_do_install already put the binary in ${bindir}.
do_install:append() {
    # Group-readable only: the database URL may carry a password.
    install -d ${D}${sysconfdir}/${BPN}
    install -m 0640 -g ${BPN} ${S}/examples/gateway.toml ${D}${sysconfdir}/${BPN}/gateway.toml

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/cross/mqtt-kinesis-bridge.service ${D}${systemd_system_unitdir}/${BPN}.service
    # No /var/lib/${BPN} here: the unit's StateDirectory= creates the spool
    # directory, owned by the service user, at first start.
}

# Keep local edits to the config across package upgrades.
CONFFILES:${PN} = "${sysconfdir}/${BPN}/gateway.toml"
