//! Published test vectors for each primitive this crate builds on, called
//! the way the crate calls them. If one of these fails, a dependency changed
//! behaviour and nothing else in the suite can be trusted.

use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

fn unhex(text: &str) -> Vec<u8> {
    let clean: String = text.split_whitespace().collect();
    hex::decode(clean).unwrap()
}

/// RFC 9106 §5.3: Argon2id, version 0x13, with secret and associated data.
#[test]
fn argon2id_rfc9106_section_5_3() {
    let params = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(AssociatedData::new(&[0x04; 12]).unwrap())
        .build()
        .unwrap();
    let argon2 =
        Argon2::new_with_secret(&[0x03; 8], Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut tag = [0u8; 32];
    argon2
        .hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag)
        .unwrap();
    assert_eq!(
        tag.to_vec(),
        unhex("0d 64 0d f5 8d 78 76 6c 08 c0 37 a3 4a 8b 53 c9 d0 1e f0 45 2d 75 b6 5e b5 25 20 e9 6b 01 e6 59")
    );
}

struct HkdfCase {
    ikm: &'static str,
    salt: &'static str,
    info: &'static str,
    prk: &'static str,
    okm: &'static str,
}

/// RFC 5869 Appendix A, test cases 1–3 (HKDF-SHA256).
#[test]
fn hkdf_sha256_rfc5869_cases_1_to_3() {
    let cases = [
        HkdfCase {
            ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            salt: "000102030405060708090a0b0c",
            info: "f0f1f2f3f4f5f6f7f8f9",
            prk: "077709362c2e32df0ddc3f0dc47bba63 90b6c73bb50f9c3122ec844ad7c2b3e5",
            okm: "3cb25f25faacd57a90434f64d0362f2a 2d2d0a90cf1a5a4c5db02d56ecc4c5bf
                  34007208d5b887185865",
        },
        HkdfCase {
            ikm: "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f
                  202122232425262728292a2b2c2d2e2f 303132333435363738393a3b3c3d3e3f
                  404142434445464748494a4b4c4d4e4f",
            salt: "606162636465666768696a6b6c6d6e6f 707172737475767778797a7b7c7d7e7f
                   808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f
                   a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
            info: "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf c0c1c2c3c4c5c6c7c8c9cacbcccdcecf
                   d0d1d2d3d4d5d6d7d8d9dadbdcdddedf e0e1e2e3e4e5e6e7e8e9eaebecedeeef
                   f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            prk: "06a6b88c5853361a06104c9ceb35b45c ef760014904671014a193f40c15fc244",
            okm: "b11e398dc80327a1c8e7f78c596a4934 4f012eda2d4efad8a050cc4c19afa97c
                  59045a99cac7827271cb41c65e590e09 da3275600c2f09b8367793a9aca3db71
                  cc30c58179ec3e87c14c01d5c1f3434f 1d87",
        },
        HkdfCase {
            ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            salt: "",
            info: "",
            prk: "19ef24a32c717b167f33a91d6f648bdf 96596776afdb6377ac434c1c293ccb04",
            okm: "8da4e775a563c18f715f802a063c5a31 b8a11f5c5ee1879ec3454e5f3c738d2d
                  9d201395faa4b61a96c8",
        },
    ];
    for (n, case) in cases.iter().enumerate() {
        let salt = unhex(case.salt);
        // Test case 3 has no salt, which HKDF treats as HashLen zero bytes.
        let salt = (!salt.is_empty()).then_some(salt.as_slice());
        let (prk, hkdf) = Hkdf::<Sha256>::extract(salt, &unhex(case.ikm));
        assert_eq!(prk.to_vec(), unhex(case.prk), "PRK of case {}", n + 1);
        let expected = unhex(case.okm);
        let mut okm = vec![0u8; expected.len()];
        hkdf.expand(&unhex(case.info), &mut okm).unwrap();
        assert_eq!(okm, expected, "OKM of case {}", n + 1);
    }
}

/// draft-irtf-cfrg-xchacha-03, Appendix A.3.1: AEAD_XChaCha20_Poly1305.
#[test]
fn xchacha20poly1305_draft_03_a_3_1() {
    let key = unhex("808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f");
    let nonce = unhex("404142434445464748494a4b4c4d4e4f 5051525354555657");
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";
    let ciphertext = unhex(
        "bd6d179d3e83d43b9576579493c0e939 572a1700252bfaccbed2902c21396cbb
         731c7f1b0b4aa6440bf3a82f4eda7e39 ae64c6708c54c216cb96b72e1213b452
         2f8c9ba40db5d945b11b69b982c1bb9e 3f3fac2bc369488f76b2383565d3fff9
         21f9664c97637da9768812f615c68b13 b52e",
    );
    let tag = unhex("c0875924c1c7987947deafd8780acf49");

    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key));
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(&sealed[..plaintext.len()], ciphertext.as_slice());
    assert_eq!(&sealed[plaintext.len()..], tag.as_slice());

    let opened = cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(opened, plaintext);
}
