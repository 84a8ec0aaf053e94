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
    let b = random_bytes::<16>();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    uuid_from_hex(&hex)
}

/// 32 hex digits (random ones, as the store keeps them) as a version-4 UUID: lowercase, dashed,
/// with the version and variant bits set. Missing digits count as `0`.
pub fn uuid_from_hex(hex: &str) -> String {
    let mut digits: Vec<u8> = hex
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| b.to_ascii_lowercase())
        .chain(std::iter::repeat(b'0'))
        .take(32)
        .collect();
    digits[12] = b'4';
    digits[16] = b"89ab"[(char::from(digits[16]).to_digit(16).unwrap_or(0) & 3) as usize];
    let hex = String::from_utf8(digits).expect("ascii");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A release's id (the Platform API's `id`): its app's UUID with the last group replaced by the
/// version, so that no table has to keep it and [`release_version_of`] reads it back.
pub fn release_uuid(app_uuid: &str, version: u32) -> String {
    format!("{}-{version:012x}", app_prefix(app_uuid))
}

/// The version [`release_uuid`] put into `id`, when `id` is a release id of the app `app_uuid`.
pub fn release_version_of(app_uuid: &str, id: &str) -> Option<u32> {
    let last = id.to_ascii_lowercase();
    let last = last.strip_prefix(app_prefix(app_uuid))?.strip_prefix('-')?;
    if last.len() != 12 {
        return None;
    }
    u32::try_from(u64::from_str_radix(last, 16).ok()?).ok()
}

/// A process type's formation id, made like [`release_uuid`] from a hash of the type (the top
/// bit set, which no release version reaches).
pub fn formation_uuid(app_uuid: &str, process_type: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in process_type.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let last = (hash & 0x7fff_ffff_ffff) | 0x8000_0000_0000;
    format!("{}-{last:012x}", app_prefix(app_uuid))
}

fn app_prefix(app_uuid: &str) -> &str {
    app_uuid.get(..23).unwrap_or(app_uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_formation_ids_come_from_the_app_id() {
        let app = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
        let v3 = release_uuid(app, 3);
        assert_eq!(v3, "1b4e28ba-2fa1-41d2-883f-000000000003");
        assert_eq!(release_version_of(app, &v3), Some(3));
        assert_eq!(release_version_of(app, &v3.to_uppercase()), Some(3));
        assert_eq!(
            release_version_of(app, "1b4e28ba-2fa1-41d2-883f-00000000003"),
            None
        );
        assert_eq!(
            release_version_of("aaaaaaaa-2fa1-41d2-883f-0016d3cca427", &v3),
            None
        );
        let web = formation_uuid(app, "web");
        assert!(web.starts_with("1b4e28ba-2fa1-41d2-883f-"), "{web}");
        assert!(
            matches!(&web[24..25], "8" | "9" | "a" | "b" | "c" | "d" | "e" | "f"),
            "{web}"
        );
        assert_ne!(web, formation_uuid(app, "worker"));
        assert_eq!(release_version_of(app, &web), None);
        assert_eq!(uuid_from_hex("00"), "00000000-0000-4000-8000-000000000000");
    }

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
