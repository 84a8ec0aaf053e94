//! Names and randomness for dynos: network names that are never reused, hostnames (UUIDs).

pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A random number in 0..1 from the kernel's randomness.
pub fn random_unit() -> f64 {
    let bytes = random_bytes::<8>();
    (u64::from_ne_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // getrandom never fails for small buffers once the pool is initialised.
    let _ = getrandom(&mut buf);
    buf
}

/// The kernel's random bytes, as `getrandom(2)` gives them (this crate has no unsafe code).
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A random (version 4) UUID: the dyno's hostname, as on Heroku.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn base36_names_fit_a_dyno_name() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        // Milliseconds until the year 2100 fit in 9 digits: name ≤ 11 characters.
        assert!(base36(4_102_444_800_000).len() <= 9);
    }
}
