//! The User-based Security Model for the notifications this agent sends (RFC 3414, RFC
//! 7860, RFC 3826): keys from passwords, localized to an engine; HMAC-SHA-96 and
//! HMAC-SHA-256-192 authentication; AES-128-CFB privacy.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Authentication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// usmHMACSHAAuthProtocol (HMAC-SHA-1-96).
    Sha,
    /// usmHMAC192SHA256AuthProtocol.
    Sha256,
}

impl Auth {
    /// Length of the authentication parameter in a message.
    pub fn mac_len(self) -> usize {
        match self {
            Auth::Sha => 12,
            Auth::Sha256 => 24,
        }
    }

    fn hash(self, data: &[&[u8]]) -> Vec<u8> {
        match self {
            Auth::Sha => digest::<Sha1>(data),
            Auth::Sha256 => digest::<Sha256>(data),
        }
    }
}

fn digest<D: Digest>(data: &[&[u8]]) -> Vec<u8> {
    let mut h = D::new();
    data.iter().for_each(|d| h.update(d));
    h.finalize().to_vec()
}

/// RFC 3414 A.2: the password repeated to 1 MiB, hashed.
pub fn password_key(auth: Auth, password: &[u8]) -> Vec<u8> {
    match auth {
        Auth::Sha => stretch::<Sha1>(password),
        Auth::Sha256 => stretch::<Sha256>(password),
    }
}

/// Hashes the repeated password 64 bytes at a time, as RFC 3414 A.2.1 does: a 1 MiB
/// buffer, freed at once, would stay resident in the allocator's arena.
fn stretch<D: Digest>(password: &[u8]) -> Vec<u8> {
    const TOTAL: usize = 1 << 20;
    let mut h = D::new();
    if !password.is_empty() {
        let mut stream = password.iter().copied().cycle();
        for _ in 0..TOTAL / 64 {
            h.update(std::array::from_fn::<u8, 64, _>(|_| {
                stream.next().unwrap_or(0)
            }));
        }
    }
    h.finalize().to_vec()
}

/// The key localized to an engine: H(Ku || engineID || Ku).
pub fn localize(auth: Auth, key: &[u8], engine_id: &[u8]) -> Vec<u8> {
    auth.hash(&[key, engine_id, key])
}

/// The keys of one user at one engine.
#[derive(Clone)]
pub struct Keys {
    pub auth: Auth,
    pub auth_key: Vec<u8>,
    pub priv_key: [u8; 16],
}

impl Keys {
    pub fn new(auth: Auth, auth_password: &str, priv_password: &str, engine_id: &[u8]) -> Keys {
        let auth_key = localize(
            auth,
            &password_key(auth, auth_password.as_bytes()),
            engine_id,
        );
        let p = localize(
            auth,
            &password_key(auth, priv_password.as_bytes()),
            engine_id,
        );
        let mut priv_key = [0u8; 16];
        priv_key.copy_from_slice(&p[..16]);
        Keys {
            auth,
            auth_key,
            priv_key,
        }
    }

    /// The truncated HMAC of a whole message (its authentication parameter zeroed).
    pub fn mac(&self, message: &[u8]) -> Vec<u8> {
        let mut full = match self.auth {
            Auth::Sha => {
                let mut m = <Hmac<Sha1> as Mac>::new_from_slice(&self.auth_key)
                    .expect("HMAC takes keys of any length");
                m.update(message);
                m.finalize().into_bytes().to_vec()
            }
            Auth::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.auth_key)
                    .expect("HMAC takes keys of any length");
                m.update(message);
                m.finalize().into_bytes().to_vec()
            }
        };
        full.truncate(self.auth.mac_len());
        full
    }

    fn iv(boots: u32, time: u32, salt: &[u8; 8]) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..4].copy_from_slice(&boots.to_be_bytes());
        iv[4..8].copy_from_slice(&time.to_be_bytes());
        iv[8..].copy_from_slice(salt);
        iv
    }

    /// AES-128-CFB with the IV of RFC 3826 (boots, time, salt).
    pub fn encrypt(&self, boots: u32, time: u32, salt: &[u8; 8], data: &[u8]) -> Vec<u8> {
        let mut buf = data.to_vec();
        cfb_mode::Encryptor::<aes::Aes128>::new(
            &self.priv_key.into(),
            &Self::iv(boots, time, salt).into(),
        )
        .encrypt(&mut buf);
        buf
    }

    pub fn decrypt(&self, boots: u32, time: u32, salt: &[u8; 8], data: &[u8]) -> Vec<u8> {
        let mut buf = data.to_vec();
        cfb_mode::Decryptor::<aes::Aes128>::new(
            &self.priv_key.into(),
            &Self::iv(boots, time, salt).into(),
        )
        .decrypt(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 3414 A.3.2 (SHA) and RFC 7860 (SHA-256): "maplesyrup" localized to engine
    /// 000000000000000000000002.
    #[test]
    fn rfc_key_localization_vectors() {
        let engine = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let ku = password_key(Auth::Sha, b"maplesyrup");
        assert_eq!(hex(&ku), "9fb5cc0381497b3793528939ff788d5d79145211");
        assert_eq!(
            hex(&localize(Auth::Sha, &ku, &engine)),
            "6695febc9288e36282235fc7151f128497b38f3f"
        );
        let ku = password_key(Auth::Sha256, b"maplesyrup");
        assert_eq!(
            hex(&localize(Auth::Sha256, &ku, &engine)),
            "8982e0e549e866db361a6b625d84cccc11162d453ee8ce3a6445c2d6776f0f8b"
        );
    }

    #[test]
    fn aes_round_trip() {
        let k = Keys::new(
            Auth::Sha256,
            "authpass1",
            "privpass1",
            b"\x80\x00\x1f\x88\x04abc",
        );
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let c = k.encrypt(7, 1000, &salt, b"scoped pdu bytes, any length");
        assert_ne!(&c[..], b"scoped pdu bytes, any length");
        assert_eq!(
            k.decrypt(7, 1000, &salt, &c),
            b"scoped pdu bytes, any length"
        );
        assert_eq!(k.mac(b"message").len(), 24);
    }
}
