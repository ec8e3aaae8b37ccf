//! The Yocto recipe in cross/yocto/ stays buildable: its crate list matches
//! Cargo.lock (checked by the generator script and, independently, here), and
//! the files the recipe installs from the source tree exist.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

const YOCTO_DIR: &str = "cross/yocto";
const INC_FILE: &str = "cross/yocto/mqtt-kinesis-bridge-crates.inc";
const REGENERATE: &str = "run `python3 cross/yocto/gen-crates.py` and commit the result";

/// The crates.io index, under both of Cargo's index protocols.
const CRATES_IO: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Lock {
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    package: ManifestPackage,
}

#[derive(Deserialize)]
struct ManifestPackage {
    version: String,
    license: String,
}

#[test]
fn crate_list_matches_cargo_lock() {
    let out = Command::new("python3")
        .arg("cross/yocto/gen-crates.py")
        .arg("--check")
        .current_dir(root())
        .output()
        .expect("run python3 cross/yocto/gen-crates.py --check (is python3 installed?)");
    assert!(
        out.status.success(),
        "gen-crates.py --check failed ({}); {REGENERATE}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// The .inc's crate entries as (name, version) → the `name=` parameter, and
/// its checksum flags as flag name → sha256.
fn parse_inc(text: &str) -> (BTreeMap<(String, String), String>, BTreeMap<String, String>) {
    let mut uris = BTreeMap::new();
    let mut sums = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("crate://crates.io/") {
            let entry = rest.trim_end_matches('\\').trim();
            let (path, params) = entry.split_once(';').unwrap_or((entry, ""));
            let (name, version) = path
                .split_once('/')
                .unwrap_or_else(|| panic!("malformed crate entry in the .inc: {line}"));
            let flag = params
                .split(';')
                .find_map(|p| p.strip_prefix("name="))
                .unwrap_or_default();
            let previous = uris.insert((name.to_string(), version.to_string()), flag.to_string());
            assert!(previous.is_none(), "crate listed twice in the .inc: {line}");
        } else if let Some(rest) = line.strip_prefix("SRC_URI[") {
            let (flag, value) = rest
                .split_once(".sha256sum]")
                .unwrap_or_else(|| panic!("malformed checksum line in the .inc: {line}"));
            let sum = value
                .trim()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            sums.insert(flag.to_string(), sum.to_string());
        }
    }
    (uris, sums)
}

/// Independent of gen-crates.py: every crates.io package of Cargo.lock is in the
/// .inc with its checksum, and the .inc lists nothing else.
#[test]
fn every_registry_crate_is_fetched_with_its_checksum() {
    let lock: Lock = toml::from_str(&read("Cargo.lock")).expect("parse Cargo.lock");
    let (mut uris, sums) = parse_inc(&read(INC_FILE));

    let mut problems = Vec::new();
    let mut registry_crates = 0;
    let mut wanted_flags = BTreeSet::new();
    for pkg in &lock.package {
        if !CRATES_IO.contains(&pkg.source.as_deref().unwrap_or_default()) {
            continue; // the root package: built from the source tree, not fetched
        }
        registry_crates += 1;
        let (name, version) = (&pkg.name, &pkg.version);
        let Some(checksum) = &pkg.checksum else {
            problems.push(format!("{name} {version}: no checksum in Cargo.lock"));
            continue;
        };
        let expected_flag = format!("{name}-{version}");
        wanted_flags.insert(expected_flag.clone());
        match uris.remove(&(name.clone(), version.clone())) {
            None => problems.push(format!("missing: {name} {version}")),
            Some(flag) if flag != expected_flag => problems.push(format!(
                "{name} {version}: SRC_URI entry has name={flag}, want name={expected_flag}"
            )),
            Some(_) => {}
        }
        match sums.get(&expected_flag) {
            None => problems.push(format!("missing: checksum for {name} {version}")),
            Some(sum) if sum != checksum => problems.push(format!(
                "stale: checksum of {name} {version} is {sum} in the .inc, {checksum} in Cargo.lock"
            )),
            Some(_) => {}
        }
    }
    for (name, version) in uris.keys() {
        problems.push(format!("extra: {name} {version} is not in Cargo.lock"));
    }
    for flag in sums.keys().filter(|f| !wanted_flags.contains(f.as_str())) {
        problems.push(format!("extra: checksum for {flag}, not in Cargo.lock"));
    }
    assert!(
        registry_crates > 0,
        "no crates.io packages found in Cargo.lock"
    );
    assert!(
        problems.is_empty(),
        "{INC_FILE} does not match Cargo.lock; {REGENERATE}:\n  {}",
        problems.join("\n  ")
    );
}

/// The one recipe in cross/yocto/, named for the crate's version.
fn recipe() -> (PathBuf, String) {
    let manifest: Manifest = toml::from_str(&read("Cargo.toml")).expect("parse Cargo.toml");
    let dir = root().join(YOCTO_DIR);
    let recipes: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bb"))
        .collect();
    assert_eq!(recipes.len(), 1, "want one .bb in {YOCTO_DIR}: {recipes:?}");
    let want = format!("mqtt-kinesis-bridge_{}.bb", manifest.package.version);
    assert!(
        recipes[0].ends_with(&want),
        "the recipe is {} but Cargo.toml's version wants {want}: rename it",
        recipes[0].display()
    );
    let text = std::fs::read_to_string(&recipes[0]).expect("read the recipe");
    (recipes[0].clone(), text)
}

/// Every `${S}/path` the recipe installs exists in the repository, and the
/// recipe pulls in the generated crate list.
#[test]
fn recipe_requires_the_crate_list_and_installs_files_that_exist() {
    let (path, text) = recipe();
    let bpn = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('_'))
        .map(|(bpn, _)| bpn)
        .expect("recipe named BPN_VERSION.bb");
    assert!(
        text.lines()
            .any(|l| l.trim() == "require ${BPN}-crates.inc"),
        "{} does not `require ${{BPN}}-crates.inc`",
        path.display()
    );
    let inc = path.with_file_name(format!("{bpn}-crates.inc"));
    assert!(inc.is_file(), "{} is missing", inc.display());

    let from_source: Vec<&str> = text
        .split("${S}/")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    for wanted in ["examples/gateway.toml", "cross/mqtt-kinesis-bridge.service"] {
        assert!(
            from_source.contains(&wanted),
            "the recipe does not install ${{S}}/{wanted}; it installs {from_source:?}"
        );
    }
    let missing: Vec<&&str> = from_source
        .iter()
        .filter(|p| !root().join(p).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the recipe installs files that are not in the repository: {missing:?}"
    );
}

/// LICENSE matches Cargo.toml, and LIC_FILES_CHKSUM's md5 is that of the lines
/// it names (BitBake's license QA would otherwise stop the build).
#[test]
fn recipe_license_checksum_matches_cargo_toml() {
    let (path, text) = recipe();
    let manifest: Manifest = toml::from_str(&read("Cargo.toml")).expect("parse Cargo.toml");
    let value = |var: &str| -> String {
        let prefix = format!("{var} = \"");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{} has no one-line {var}", path.display()))
            .to_string()
    };
    assert_eq!(
        value("LICENSE"),
        manifest.package.license,
        "LICENSE vs Cargo.toml"
    );

    let chksum = value("LIC_FILES_CHKSUM");
    let mut parts = chksum.split(';');
    let file = parts
        .next()
        .and_then(|f| f.strip_prefix("file://"))
        .expect("LIC_FILES_CHKSUM starts with file://");
    let params: BTreeMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
    let line_no = |key: &str| -> usize {
        params
            .get(key)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("LIC_FILES_CHKSUM needs a numeric {key}"))
    };
    let (begin, end) = (line_no("beginline"), line_no("endline"));
    let content = read(file);
    let selected: String = content
        .split_inclusive('\n')
        .skip(begin.saturating_sub(1))
        .take(end + 1 - begin)
        .collect();
    assert!(
        selected.contains(&manifest.package.license),
        "LIC_FILES_CHKSUM points at lines {begin}-{end} of {file}, which do not name the \
         license:\n{selected}"
    );

    let mut md5sum = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run md5sum");
    md5sum
        .stdin
        .take()
        .expect("md5sum stdin")
        .write_all(selected.as_bytes())
        .expect("write to md5sum");
    let out = md5sum.wait_with_output().expect("wait for md5sum");
    assert!(out.status.success(), "md5sum failed: {}", out.status);
    let actual = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        params.get("md5").copied().unwrap_or_default(),
        actual,
        "LIC_FILES_CHKSUM md5 is stale for lines {begin}-{end} of {file}:\n{selected}"
    );
}
