//! The Debian package (issue 19): cross/deb.sh's amd64 package through lintian,
//! its control fields and file list, and dpkg installing, upgrading, removing
//! and purging it in throw-away roots.
//!
//! Every dpkg call here takes `--root` and `--log` inside a temp dir, so this
//! machine's own dpkg database and log are never read or written. The
//! maintainer scripts run on the host with DPKG_ROOT set
//! (`--force-script-chrootless`); a recording `systemctl` first on PATH shows
//! they leave the host's systemd alone. The ARM packages are checked by
//! cross/test.sh (CI), not here.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::support::{TempDir, TestResult};

const TARGET: &str = "x86_64-unknown-linux-gnu";
const PACKAGE: &str = "mqtt-kinesis-bridge";
const USER: &str = "mqtt-kinesis-bridge";
const CONFFILE: &str = "/etc/mqtt-kinesis-bridge/gateway.toml";
const BINARY: &str = "/usr/bin/mqtt-kinesis-bridge";
const UNIT: &str = "/lib/systemd/system/mqtt-kinesis-bridge.service";
const SYSUSERS: &str = "/usr/lib/sysusers.d/mqtt-kinesis-bridge.conf";
const DOC: &str = "/usr/share/doc/mqtt-kinesis-bridge";
const SPOOL_DIR: &str = "/var/lib/mqtt-kinesis-bridge";

/// The package as Cargo.toml's version, and a rebuild with a later version to
/// upgrade to; built once for all the tests here.
struct Packages {
    version: String,
    first: PathBuf,
    upgrade_version: String,
    upgrade: PathBuf,
}

fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        // The version cargo built this test with is Cargo.toml's.
        let version = env!("CARGO_PKG_VERSION").to_owned();
        // "+" sorts after the end of a version in Debian: 0.1.0+upgrade1 > 0.1.0.
        let upgrade_version = format!("{version}+upgrade1");
        let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deb");
        let first = build_package(&out_dir, None);
        let upgrade = build_package(&out_dir, Some(&upgrade_version));
        assert!(
            first.ends_with(format!("{PACKAGE}_{version}_amd64.deb")),
            "cross/deb.sh wrote {}",
            first.display()
        );
        Packages {
            version,
            first,
            upgrade_version,
            upgrade,
        }
    })
}

/// Runs cross/deb.sh (which runs cross/build.sh: the size-tuned release binary),
/// niced: the other tests wait on deadlines and must not starve meanwhile.
fn build_package(out_dir: &Path, version: Option<&str>) -> PathBuf {
    let mut command = Command::new("nice");
    command
        .args(["-n", "19", "bash", "cross/deb.sh", TARGET])
        .current_dir(repo_path(""))
        .env("DEB_OUTDIR", out_dir)
        .env_remove("DEB_VERSION");
    // What cargo sets for this test process only. Build scripts watch some of
    // these (ring: CARGO_MANIFEST_DIR), so passing them on would make the
    // release build in the same target dir start again from scratch.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    if let Some(version) = version {
        command.env("DEB_VERSION", version);
    }
    let output = command.output().expect("run bash cross/deb.sh");
    assert!(
        output.status.success(),
        "cross/deb.sh {TARGET} failed: {}",
        said(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(
        deb.is_file(),
        "cross/deb.sh printed {stdout:?}, not a package"
    );
    deb
}

/// lintian may warn (docs/debian.md lists what it says and why), but finds no error.
#[test]
fn lintian_finds_no_errors() {
    let output = Command::new("lintian")
        .arg(&packages().first)
        .output()
        .expect("run lintian (Debian package lintian; .ci/setup installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");
    assert!(output.status.success(), "lintian: {}", said(&output));
}

/// The control fields, the conffile list, the maintainer scripts, and every
/// file with its mode, owner and content.
#[test]
fn the_package_holds_the_binary_unit_sysusers_config_and_docs() -> TestResult {
    let packages = packages();
    let deb = &packages.first;
    let fields = control_fields(&run_ok(Command::new("dpkg-deb").arg("--field").arg(deb)));
    for (field, want) in [
        ("Package", PACKAGE),
        ("Version", packages.version.as_str()),
        ("Architecture", "amd64"),
        ("Section", "net"),
        ("Priority", "optional"),
    ] {
        assert_eq!(fields.get(field).map(String::as_str), Some(want), "{field}");
    }
    let maintainer = &fields["Maintainer"];
    assert!(
        maintainer.contains(" <") && maintainer.ends_with('>'),
        "Maintainer: {maintainer}"
    );
    assert!(
        fields["Description"].contains("Kinesis"),
        "{}",
        fields["Description"]
    );
    assert!(fields.contains_key("Installed-Size"), "{fields:?}");

    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), CONFFILE, "the conffiles list");
    for script in ["postinst", "prerm", "postrm"] {
        let text = run_ok(Command::new("dpkg-deb").arg("--info").arg(deb).arg(script));
        assert!(text.starts_with("#!/bin/sh\n"), "{script}: {text}");
        assert!(text.contains("\nset -e\n"), "{script} does not set -e");
    }

    let mut want: BTreeMap<String, &str> = [
        (BINARY, "-rwxr-xr-x"),
        (UNIT, "-rw-r--r--"),
        (SYSUSERS, "-rw-r--r--"),
        (CONFFILE, "-rw-r-----"),
        (
            "/usr/share/doc/mqtt-kinesis-bridge/README.md.gz",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/mqtt-kinesis-bridge/changelog.gz",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/mqtt-kinesis-bridge/copyright", "-rw-r--r--"),
        (
            "/usr/share/lintian/overrides/mqtt-kinesis-bridge",
            "-rw-r--r--",
        ),
    ]
    .into_iter()
    .map(|(path, mode)| (path.to_string(), mode))
    .collect();
    let catalog_sql = catalog_sql()?;
    for name in &catalog_sql {
        want.insert(format!("{DOC}/catalog/{name}"), "-rw-r--r--");
    }
    let listing = run_ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        // drwxr-xr-x root/root         0 2026-11-23 14:57 ./usr/bin/
        let columns: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _size, _date, _time, path] = columns[..] else {
            panic!("unexpected dpkg-deb --contents line: {line}");
        };
        assert_eq!(owner, "root/root", "{line}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{line}");
        } else {
            files.insert(path.trim_start_matches('.').to_string(), mode);
        }
    }
    assert_eq!(files, want, "the package's files and modes");

    // What is inside is what the repository holds.
    let tree = TempDir::new("deb-contents");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(tree.path()));
    let in_tree = |path: &str| tree.path().join(path.trim_start_matches('/'));
    let copyright = format!("{DOC}/copyright");
    for (packaged, source) in [
        (UNIT, "cross/mqtt-kinesis-bridge.service"),
        (SYSUSERS, "cross/mqtt-kinesis-bridge.sysusers"),
        (CONFFILE, "examples/gateway.toml"),
        (copyright.as_str(), "cross/deb/copyright"),
    ] {
        assert_eq!(
            std::fs::read_to_string(in_tree(packaged))?,
            read_repo(source),
            "{packaged} differs from {source}"
        );
    }
    for name in &catalog_sql {
        assert_eq!(
            std::fs::read_to_string(in_tree(&format!("{DOC}/catalog/{name}")))?,
            read_repo(&format!("buffer-schema/catalog/{name}")),
            "catalog/{name}"
        );
    }
    let readme = run_ok(
        Command::new("gzip")
            .arg("-dc")
            .arg(in_tree(&format!("{DOC}/README.md.gz"))),
    );
    assert_eq!(readme, read_repo("README.md"), "README.md.gz");

    // Depends: libc6 and nothing else, at the newest glibc the binary needs.
    let glibc = newest_glibc(&in_tree(BINARY));
    assert_eq!(fields["Depends"], format!("libc6 (>= {glibc})"));
    Ok(())
}

/// Issue 19: a first install leaves the service alone with the config 0640
/// root:mqtt-kinesis-bridge; an upgrade keeps the operator's edited config;
/// remove keeps the config and the spool, purge deletes them.
/// `dpkg -s` says the package is installed at `version`.
#[track_caller]
fn assert_installed(status: &str, version: &str) {
    assert!(
        status.contains("\nStatus: install ok installed\n"),
        "{status}"
    );
    assert!(
        status.contains(&format!("\nVersion: {version}\n")),
        "{status}"
    );
}

#[test]
fn installs_then_upgrades_keeping_the_edited_config_then_removes_and_purges() -> TestResult {
    let packages = packages();
    let root = ThrowawayRoot::new("deb-lifecycle", &[]);
    root.dpkg("--install", &packages.first);

    let status = root.status().expect("installed");
    assert_installed(&status, &packages.version);
    let config_md5 = md5(&repo_path("examples/gateway.toml"));
    assert_eq!(conffiles(&status), vec![format!("{CONFFILE} {config_md5}")]);

    let gid = root.user_and_group()?;
    root.assert_mode(BINARY, 0o755, 0);
    root.assert_mode(UNIT, 0o644, 0);
    root.assert_mode(SYSUSERS, 0o644, 0);
    root.assert_mode(&format!("{DOC}/copyright"), 0o644, 0);
    root.assert_mode(CONFFILE, 0o640, gid);
    let version = run_ok(Command::new(root.path(BINARY)).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("mqtt-kinesis-bridge {}", packages.version)
    );

    // The operator edits the config and adds credentials; the service has spooled.
    let config = std::fs::read_to_string(root.path(CONFFILE))?;
    let edited = config.replace(
        "stream = \"telemetry\"",
        "stream = \"edited-by-the-operator\"",
    );
    assert_ne!(
        config, edited,
        "examples/gateway.toml has no stream = \"telemetry\""
    );
    std::fs::write(root.path(CONFFILE), &edited)?;
    let aws_env = root.path("/etc/mqtt-kinesis-bridge/aws.env");
    std::fs::write(&aws_env, "AWS_ACCESS_KEY_ID=AKIDTEST\n")?;
    std::fs::create_dir_all(root.path(SPOOL_DIR))?;
    let spool = root.path(&format!("{SPOOL_DIR}/spool.db"));
    std::fs::write(&spool, "records")?;

    root.dpkg("--install", &packages.upgrade);
    let status = root.status().expect("upgraded");
    assert_installed(&status, &packages.upgrade_version);
    assert_eq!(
        std::fs::read_to_string(root.path(CONFFILE))?,
        edited,
        "the upgrade replaced the operator's config"
    );
    for suffix in [".dpkg-new", ".dpkg-dist", ".dpkg-old"] {
        let leftover = root.path(&format!("{CONFFILE}{suffix}"));
        assert!(
            !leftover.exists(),
            "{} after the upgrade",
            leftover.display()
        );
    }
    root.assert_mode(CONFFILE, 0o640, gid);

    root.dpkg("--remove", Path::new(PACKAGE));
    let status = root.status().expect("config-files are left");
    assert!(
        status.contains("\nStatus: deinstall ok config-files\n"),
        "{status}"
    );
    assert!(!root.path(BINARY).exists(), "remove left the binary");
    assert!(!root.path(UNIT).exists(), "remove left the unit");
    assert_eq!(std::fs::read_to_string(root.path(CONFFILE))?, edited);
    assert!(aws_env.exists(), "remove deleted aws.env");
    assert!(spool.exists(), "remove deleted the spool");

    root.dpkg("--purge", Path::new(PACKAGE));
    assert_eq!(root.status(), None, "purge left a record");
    assert!(
        !root.path("/etc/mqtt-kinesis-bridge").exists(),
        "purge left /etc/mqtt-kinesis-bridge"
    );
    assert!(!root.path(SPOOL_DIR).exists(), "purge left the spool");
    // The user stays: files elsewhere may still carry its id.
    assert_eq!(root.user_and_group()?, gid);
    root.assert_no_systemctl_calls();
    Ok(())
}

/// Without systemd-sysusers (other init systems, trimmed images) the postinst
/// creates the same user with useradd, and a reinstall finds it there.
#[test]
fn without_systemd_sysusers_useradd_creates_the_user() -> TestResult {
    let root = ThrowawayRoot::new("deb-useradd", &["systemd-sysusers"]);
    root.dpkg("--install", &packages().first);
    let gid = root.user_and_group()?;
    root.assert_mode(CONFFILE, 0o640, gid);
    root.dpkg("--install", &packages().first);
    assert_eq!(root.user_and_group()?, gid);
    root.assert_no_systemctl_calls();
    Ok(())
}

/// A directory dpkg installs into with `--root`, with its own database and log.
struct ThrowawayRoot {
    dir: TempDir,
    /// PATH for dpkg and the maintainer scripts: the recording `systemctl`
    /// first, then this machine's programs.
    search_path: String,
}

impl ThrowawayRoot {
    /// `hidden`: programs the maintainer scripts must not find on PATH.
    fn new(name: &str, hidden: &[&str]) -> ThrowawayRoot {
        let dir = TempDir::new(name);
        let admin = dir.join("root/var/lib/dpkg");
        for sub in ["info", "updates"] {
            std::fs::create_dir_all(admin.join(sub)).expect("create the dpkg database");
        }
        for file in ["status", "available"] {
            std::fs::write(admin.join(file), "").expect("create the dpkg database");
        }
        std::fs::create_dir_all(dir.join("root/var/log")).expect("create var/log");

        let fake_bin = dir.join("fake-bin");
        std::fs::create_dir_all(&fake_bin).expect("create fake-bin");
        let calls = dir.join("systemctl-calls");
        let systemctl = format!("#!/bin/sh\necho \"$*\" >> '{}'\nexit 1\n", calls.display());
        write_executable(&fake_bin.join("systemctl"), &systemctl);
        let mut search_path = vec![fake_bin.display().to_string()];
        if hidden.is_empty() {
            search_path.push(std::env::var("PATH").unwrap_or_default());
        } else {
            // This machine's programs but the hidden ones, linked one by one.
            let bin = dir.join("bin");
            std::fs::create_dir_all(&bin).expect("create bin");
            for from in ["/usr/bin", "/bin"] {
                for entry in std::fs::read_dir(from).expect("list the system's programs") {
                    let entry = entry.expect("read a dir entry");
                    let name = entry.file_name();
                    let link = bin.join(&name);
                    if hidden.iter().any(|h| name == *h) || link.exists() {
                        continue;
                    }
                    std::os::unix::fs::symlink(entry.path(), link).expect("link a program");
                }
            }
            search_path.extend([bin.display().to_string(), "/usr/sbin:/sbin".to_string()]);
        }
        ThrowawayRoot {
            dir,
            search_path: search_path.join(":"),
        }
    }

    /// An absolute path inside the root.
    fn path(&self, absolute: &str) -> PathBuf {
        self.dir.join("root").join(absolute.trim_start_matches('/'))
    }

    /// `dpkg --root=… ACTION PACKAGE`, which must succeed.
    fn dpkg(&self, action: &str, package: &Path) {
        let mut command = Command::new("dpkg");
        command
            .arg(format!("--root={}", self.path("/").display()))
            // dpkg.cfg names the host's log; this one is the root's.
            .arg(format!(
                "--log={}",
                self.path("/var/log/dpkg.log").display()
            ))
            // Not chrooted: the scripts run here with DPKG_ROOT set. The root
            // has no libc6 to satisfy Depends, nor ldconfig on PATH. A host
            // dpkg.cfg.d may path-exclude docs (container images): include all.
            .args([
                "--force-not-root",
                "--force-bad-path",
                "--force-script-chrootless",
                "--force-depends",
                "--path-include=*",
            ])
            .arg(action)
            .arg(package)
            .env("PATH", &self.search_path)
            .stdin(Stdio::null());
        run_ok(&mut command);
    }

    /// `dpkg-query -s` in the root, or None when dpkg knows nothing of the package.
    fn status(&self) -> Option<String> {
        let output = Command::new("dpkg-query")
            .arg(format!("--root={}", self.path("/").display()))
            .args(["--status", PACKAGE])
            .output()
            .expect("run dpkg-query");
        output
            .status
            .success()
            .then(|| format!("\n{}", String::from_utf8_lossy(&output.stdout)))
    }

    /// The service user's group id, after checking the user is a system user
    /// with the unit's home and no shell.
    fn user_and_group(&self) -> Result<u32, Box<dyn std::error::Error>> {
        let entry = |file: &str| -> Result<Vec<String>, Box<dyn std::error::Error>> {
            let text = std::fs::read_to_string(self.path(file))?;
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{USER}:")))
                .ok_or_else(|| format!("no {USER} in {file}:\n{text}"))?;
            Ok(line.split(':').map(str::to_string).collect())
        };
        let user = entry("/etc/passwd")?;
        let group = entry("/etc/group")?;
        let uid: u32 = user[2].parse()?;
        assert!((1..1000).contains(&uid), "not a system user: {user:?}");
        assert_eq!(user[3], group[2], "the user's primary group");
        assert_eq!(user[5], SPOOL_DIR, "home");
        assert_eq!(user[6], "/usr/sbin/nologin", "shell");
        Ok(group[2].parse()?)
    }

    fn assert_mode(&self, absolute: &str, mode: u32, gid: u32) {
        let metadata = std::fs::symlink_metadata(self.path(absolute))
            .unwrap_or_else(|e| panic!("{absolute} in the root: {e}"));
        assert!(metadata.is_file(), "{absolute} is not a file");
        assert_eq!(
            metadata.mode() & 0o7777,
            mode,
            "{absolute}: mode {:o}",
            metadata.mode()
        );
        assert_eq!(
            (metadata.uid(), metadata.gid()),
            (0, gid),
            "{absolute}: owner"
        );
    }

    fn assert_no_systemctl_calls(&self) {
        let calls = std::fs::read_to_string(self.dir.join("systemctl-calls")).unwrap_or_default();
        assert_eq!(
            calls, "",
            "a maintainer script called systemctl under DPKG_ROOT"
        );
    }
}

/// The package's `Conffiles:` entries, as "PATH MD5".
fn conffiles(status: &str) -> Vec<String> {
    status
        .lines()
        .skip_while(|l| *l != "Conffiles:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .collect()
}

/// `Field: value` pairs of a control file; continuation lines join the value.
fn control_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            let value: &mut String = fields.get_mut(&last).expect("a continuation line first");
            value.push('\n');
            value.push_str(line);
        } else if let Some((name, value)) = line.split_once(':') {
            last = name.to_string();
            fields.insert(last.clone(), value.trim().to_string());
        }
    }
    fields
}

/// The newest `GLIBC_x.y` symbol version an ELF file needs, as "x.y".
fn newest_glibc(binary: &Path) -> String {
    let symbols = run_ok(Command::new("objdump").arg("-T").arg(binary));
    let mut versions: Vec<Vec<u32>> = symbols
        .split("GLIBC_")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit() && c != '.')
                .next()
                .unwrap_or_default()
                .split('.')
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let newest = versions.pop().expect("GLIBC_ symbols in the binary");
    newest
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn catalog_sql() -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_path("buffer-schema/catalog"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sql") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn md5(path: &Path) -> String {
    let output = run_ok(Command::new("md5sum").arg(path));
    output
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write a script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod a script");
}

/// Runs `command`, which must succeed, and returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", said(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn said(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_repo(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
