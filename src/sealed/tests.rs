use super::*;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
const OTHER_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // bytes 32..64

fn key() -> SealKey {
    SealKey::from_base64(KEY).unwrap()
}

fn b64(n_bytes: usize) -> String {
    STANDARD.encode(vec![7u8; n_bytes])
}

/// A file under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> TempFile {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("mkb-sealed-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn seal_then_open_gives_the_password_back() {
    let key = key();
    for password in ["hunter2", "", "pässwörd 🔑 パスワード", " spaces kept "] {
        let value = key.seal(password);
        assert!(is_sealed(&value), "{value}");
        assert_eq!(key.open(&value).unwrap().expose(), password);
    }
}

#[test]
fn the_same_password_seals_differently_each_time() {
    let key = key();
    assert_ne!(key.seal("hunter2"), key.seal("hunter2"));
}

#[test]
fn a_generated_key_is_read_back_and_differs_each_time() {
    let text = SealKey::generate();
    assert_eq!(text.len(), 44);
    let key = SealKey::from_base64(&text).unwrap();
    assert_eq!(key.open(&key.seal("x")).unwrap().expose(), "x");
    assert_ne!(text, SealKey::generate());
}

#[test]
fn another_key_cannot_open() {
    let value = key().seal("hunter2");
    let other = SealKey::from_base64(OTHER_KEY).unwrap();
    assert_eq!(other.open(&value), Err(OpenError::Undecryptable));
    assert_eq!(
        OpenError::Undecryptable.to_string(),
        "sealed value cannot be decrypted: wrong key or damaged value"
    );
}

#[test]
fn any_changed_byte_is_detected() {
    let key = key();
    let value = key.seal("hunter2");
    let bytes = STANDARD.decode(&value[PREFIX.len()..]).unwrap();
    // Nonce, ciphertext and tag alike.
    for byte_idx in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[byte_idx] ^= 0x01;
        let damaged = format!("{PREFIX}{}", STANDARD.encode(&damaged));
        assert_eq!(
            key.open(&damaged),
            Err(OpenError::Undecryptable),
            "byte {byte_idx}"
        );
    }
}

#[test]
fn malformed_values_name_what_is_wrong() {
    let check = |value: &str, expected: OpenError| {
        assert_eq!(key().open(value), Err(expected), "{value}");
    };
    check("hunter2", OpenError::NotSealed);
    check("enc:v2:AAAA", OpenError::NeedsRow);
    check("enc:v3:AAAA", OpenError::NotSealed);
    check(" enc:v1:AAAA", OpenError::NotSealed);
    check("enc:v1:not base64!", OpenError::NotBase64);
    check("enc:v1:AAA", OpenError::NotBase64);
    check(
        &format!("{PREFIX}{}", b64(27)),
        OpenError::TooShort { n_bytes: 27 },
    );
    check(PREFIX, OpenError::TooShort { n_bytes: 0 });
    // Nonce and tag but no ciphertext: an empty password's length, yet forged.
    check(&format!("{PREFIX}{}", b64(28)), OpenError::Undecryptable);
}

#[test]
fn authentic_bytes_that_are_not_text_are_refused() {
    let key = key();
    let value = key.seal_with(PREFIX, AAD, &[0xff, 0xfe]);
    assert_eq!(key.open(&value), Err(OpenError::NotUtf8));
}

#[test]
fn keys_of_the_wrong_size_or_form_are_refused() {
    let check = |text: &str, expected: KeyError| {
        assert_eq!(SealKey::from_base64(text).unwrap_err(), expected, "{text}");
    };
    let wrong_length = |n_bytes| KeyError::WrongLength {
        origin: KeyOrigin::Text,
        n_bytes,
    };
    check(&b64(31), wrong_length(31));
    check(&b64(33), wrong_length(33));
    check("", wrong_length(0));
    let not_base64 = || KeyError::NotBase64 {
        origin: KeyOrigin::Text,
    };
    check("not a key", not_base64());
    check(&KEY.replace('=', ""), not_base64());

    let message = SealKey::from_base64(&b64(31)).unwrap_err().to_string();
    assert!(message.contains("31 bytes, not 32"), "{message}");
    assert!(message.contains("mqtt-kinesis-bridge new-key"), "{message}");
}

#[test]
fn surrounding_whitespace_around_a_key_is_ignored() {
    assert!(SealKey::from_base64(&format!("  {KEY}\r\n")).is_ok());
}

#[test]
fn load_reads_a_key_file_with_a_trailing_newline() {
    let file = TempFile::new("newline", &format!("{KEY}\n"));
    let loaded = SealKey::load(Some(&file.0), None).unwrap().unwrap();
    assert_eq!(loaded.open(&key().seal("pw")).unwrap().expose(), "pw");
}

#[test]
fn load_prefers_the_file_over_the_environment() {
    let file = TempFile::new("preferred", KEY);
    let loaded = SealKey::load(Some(&file.0), Some(OTHER_KEY.to_owned()))
        .unwrap()
        .unwrap();
    assert_eq!(loaded.open(&key().seal("pw")).unwrap().expose(), "pw");
}

#[test]
fn load_reads_the_environment_value() {
    let loaded = SealKey::load(None, Some(format!("{KEY}\n")))
        .unwrap()
        .unwrap();
    assert_eq!(loaded.open(&key().seal("pw")).unwrap().expose(), "pw");
}

#[test]
fn load_without_file_or_environment_gives_none() {
    assert!(SealKey::load(None, None).unwrap().is_none());
}

#[test]
fn load_errors_say_which_key_source_is_wrong() {
    let missing = std::env::temp_dir().join("mkb-sealed-no-such-key-file");
    let error = SealKey::load(Some(&missing), None).unwrap_err();
    assert!(matches!(&error, KeyError::Read { path, .. } if *path == missing));
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot read key file {}: ", missing.display())),
        "{message}"
    );

    let file = TempFile::new("short", &b64(16));
    let error = SealKey::load(Some(&file.0), None).unwrap_err();
    assert_eq!(
        error,
        KeyError::WrongLength {
            origin: KeyOrigin::File(file.0.clone()),
            n_bytes: 16
        }
    );
    assert!(error
        .to_string()
        .contains(&format!("key file {}", file.0.display())));

    let error = SealKey::load(None, Some("not a key".to_owned())).unwrap_err();
    assert_eq!(error.to_string(), format!("key in {KEY_ENV} is not base64 of 32 bytes; make one with `mqtt-kinesis-bridge new-key`"));
}

#[test]
fn nothing_printed_holds_the_key_or_the_password() {
    let key = key();
    let value = key.seal("hunter2");
    let damaged = value.replacen('A', "B", 1).replacen('Q', "R", 1);
    let mut texts = vec![format!("{key:?}")];
    for value in [
        value.as_str(),
        damaged.as_str(),
        "hunter2",
        "enc:v1:hunter2!",
    ] {
        if let Err(error) = key.open(value) {
            texts.push(format!("{error} {error:?}"));
        }
    }
    texts.push(format!("{:?}", key.open(&value).unwrap()));
    let near_key = KEY.replacen('A', "", 1);
    for text in [near_key.as_str(), "hunter2!!", &KEY[..40]] {
        let error = SealKey::from_base64(text).unwrap_err();
        texts.push(format!("{error} {error:?}"));
    }
    assert_eq!(texts[0], "SealKey(***)");
    for text in &texts {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains(&KEY[..8]), "{text}");
    }
}

fn row(broker_id: BrokerId, column: &str) -> Binding<'_> {
    Binding { broker_id, column }
}

#[test]
fn a_v2_value_opens_only_in_its_row_and_column() {
    let key = key();
    let value = key.seal_for("hunter2", row(7, "mqtt_password"));
    assert!(value.starts_with(PREFIX_V2), "{value}");
    assert!(is_sealed(&value));
    let (secret, format) = key.open_for(&value, row(7, "mqtt_password")).unwrap();
    assert_eq!((secret.expose(), format), ("hunter2", Format::V2));
    for elsewhere in [
        row(8, "mqtt_password"),
        row(7, "client_key"),
        row(70, "mqtt_password"),
    ] {
        assert_eq!(
            key.open_for(&value, elsewhere),
            Err(OpenError::NotForHere),
            "{elsewhere:?}"
        );
    }
    let other = SealKey::from_base64(OTHER_KEY).unwrap();
    assert_eq!(
        other.open_for(&value, row(7, "mqtt_password")),
        Err(OpenError::NotForHere)
    );
    assert!(OpenError::NotForHere
        .to_string()
        .contains("sealed for another broker row or column"));
    // Without a row it cannot open at all.
    assert_eq!(key.open(&value), Err(OpenError::NeedsRow));
}

#[test]
fn a_v1_value_still_opens_anywhere_and_says_it_is_v1() {
    let key = key();
    let value = key.seal("hunter2");
    for binding in [row(1, "mqtt_password"), row(2, "client_key")] {
        let (secret, format) = key.open_for(&value, binding).unwrap();
        assert_eq!((secret.expose(), format), ("hunter2", Format::V1));
    }
}

#[test]
fn a_v2_value_cut_or_garbled_names_what_is_wrong() {
    let key = key();
    let here = row(7, "mqtt_password");
    assert_eq!(
        key.open_for("enc:v2:not base64!", here),
        Err(OpenError::NotBase64)
    );
    assert_eq!(
        key.open_for(&format!("{PREFIX_V2}{}", b64(20)), here),
        Err(OpenError::TooShort { n_bytes: 20 })
    );
    assert_eq!(key.open_for("plain", here), Err(OpenError::NotSealed));
}

#[test]
fn a_key_file_must_be_a_small_private_regular_file() {
    use std::os::unix::fs::PermissionsExt;
    // A directory, a device, an oversized file: named, never read whole.
    for (path, what) in [
        (std::env::temp_dir(), "is not a regular file"),
        (PathBuf::from("/dev/zero"), "is not a regular file"),
    ] {
        let error = SealKey::load(Some(&path), None).unwrap_err();
        assert_eq!(
            error,
            KeyError::NotAKeyFile {
                path: path.clone(),
                what: what.into()
            }
        );
    }
    let big = TempFile::new("big", &"A".repeat(5000));
    let message = SealKey::load(Some(&big.0), None).unwrap_err().to_string();
    assert!(message.contains("is 5000 bytes, not a key"), "{message}");

    // Readable by others: refused (the override is an environment variable,
    // tested on the binary in tests/it/cli_sealed.rs, not set here).
    let open = TempFile::new("open", KEY);
    std::fs::set_permissions(&open.0, std::fs::Permissions::from_mode(0o640)).unwrap();
    let error = SealKey::load(Some(&open.0), None).unwrap_err();
    assert_eq!(
        error,
        KeyError::OpenToOthers {
            path: open.0.clone(),
            mode: 0o640
        }
    );
    assert!(error.to_string().contains("chmod 600"));
}
