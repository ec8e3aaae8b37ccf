use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn md5_matches_the_rfc_1321_test_suite() {
    let suite = [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (
            "abcdefghijklmnopqrstuvwxyz",
            "c3fcd3d76192e4007dfb496cca67e13b",
        ),
        (
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "d174ab98d277d9f5a5611c2c9f419d9f",
        ),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ];
    for (input, expected) in suite {
        assert_eq!(hex(&md5(input.as_bytes())), expected, "{input:?}");
    }
    // Lengths around the padding boundary (values from Python's hashlib).
    for (len, expected) in [
        (55, "04364420e25c512fd958a70738aa8f72"),
        (56, "668a72d5ba17f08e62dabcafad6db14b"),
        (64, "c1bb4f81d892b2d57947682aeb252456"),
        (120, "fb98667f98096de92620b64f46e1c5b5"),
        (1000, "398533d48111e9f664b1f64cb10c4b63"),
    ] {
        assert_eq!(hex(&md5(&vec![b'x'; len])), expected, "{len} bytes");
    }
}

#[test]
fn md5_each_gives_each_input_its_own_digest_whatever_their_lengths() {
    // Lengths around every padding boundary, mixed so that lanes end at
    // different blocks, take waiting inputs, and one is left to finish alone.
    let lengths: Vec<usize> = (0..200)
        .chain([447, 448, 511, 512, 1000, 4096, 51_200])
        .collect();
    let inputs: Vec<Vec<u8>> = lengths
        .iter()
        .map(|&len| (0..len).map(|i| (i * 31 + len) as u8).collect())
        .collect();
    for count in [0, 1, 2, 3, 4, 5, 7, 9, inputs.len()] {
        for order in [false, true] {
            let mut chosen: Vec<&[u8]> = inputs.iter().take(count).map(Vec::as_slice).collect();
            if order {
                chosen.reverse();
            }
            let digests = md5_each(&chosen);
            assert_eq!(digests.len(), chosen.len());
            for (input, digest) in chosen.iter().zip(&digests) {
                assert_eq!(*digest, md5(input), "{} bytes among {count}", input.len());
            }
        }
    }
}

#[test]
fn md5_each_matches_the_rfc_suite_in_lanes() {
    let inputs: [&[u8]; 5] = [
        b"",
        b"abc",
        b"message digest",
        b"abcdefghijklmnopqrstuvwxyz",
        b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
    ];
    let digests: Vec<String> = md5_each(&inputs).iter().map(|d| hex(d)).collect();
    assert_eq!(
        digests,
        [
            "d41d8cd98f00b204e9800998ecf8427e",
            "900150983cd24fb0d6963f7d28e17f72",
            "f96b697d7cb7938d525a2f31aaf161d0",
            "c3fcd3d76192e4007dfb496cca67e13b",
            "57edf4a22be3c955ac49da2e2107b67a",
        ]
    );
}
