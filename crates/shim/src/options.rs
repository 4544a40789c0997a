//! The runtime options containerd sends with a task: the `options` table of a
//! runtime in containerd's config (`SystemdCgroup`, `NoPivotRoot`,
//! `NoNewKeyring`), encoded as the runc shim's protobuf message. The shim reads
//! the same message, so a RuntimeClass written for the runc shim works here.

/// What strata takes from the options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub systemd_cgroup: bool,
}

/// `containerd.runc.v1.Options` (containerd's runc shim and CRI).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
/// The older `containerd.linux.runc.RuncOptions`.
const LEGACY_OPTIONS: &str = "containerd.linux.runc.RuncOptions";

/// Decodes options of a known type; other types carry nothing for strata.
pub fn parse(type_url: &str, value: &[u8]) -> Result<RuntimeOptions, String> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    // Field numbers of the booleans, per message type.
    let (no_pivot, no_keyring, systemd) = match name {
        RUNC_OPTIONS => (Some(1), Some(2), 9),
        LEGACY_OPTIONS => (None, None, 4),
        _ => return Ok(RuntimeOptions::default()),
    };
    let mut out = RuntimeOptions::default();
    for (field, v) in fields(value).map_err(|e| format!("runtime options ({name}): {e}"))? {
        let Some(flag) = v else { continue };
        if Some(field) == no_pivot {
            out.no_pivot_root = flag != 0;
        } else if Some(field) == no_keyring {
            out.no_new_keyring = flag != 0;
        } else if field == systemd {
            out.systemd_cgroup = flag != 0;
        }
    }
    Ok(out)
}

/// The fields of a protobuf message: number and, for varints, the value.
fn fields(mut b: &[u8]) -> Result<Vec<(u64, Option<u64>)>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, Some(varint(&mut b)?))),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                b = b.get(n..).ok_or("a fixed-size field is cut short")?;
                out.push((field, None));
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "a length does not fit")?;
                b = b.get(len..).ok_or("a length-delimited field is cut short")?;
                out.push((field, None));
            }
            w => return Err(format!("field {field} has wire type {w}, which the message cannot have")),
        }
    }
    Ok(out)
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or("a varint is cut short")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint is longer than 10 bytes".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_as_containerd_encodes_them() {
        // binary_name = "strata" (6), systemd_cgroup = true (9), no_new_keyring (2),
        // io_uid = 300 (4, a two-byte varint).
        let mut msg = vec![0x32, 6];
        msg.extend_from_slice(b"strata");
        msg.extend_from_slice(&[0x48, 1, 0x10, 1, 0x20, 0xac, 0x02]);
        let o = parse("containerd.runc.v1.Options", &msg).expect("parse");
        assert_eq!(o, RuntimeOptions { no_pivot_root: false, no_new_keyring: true, systemd_cgroup: true });
        let legacy = parse("types.containerd.io/containerd.linux.runc.RuncOptions", &[0x20, 1]).expect("legacy");
        assert!(legacy.systemd_cgroup);
        assert_eq!(parse("example.Other", &[0xff]).expect("ignored"), RuntimeOptions::default());
        assert!(parse(RUNC_OPTIONS, &[0x48]).is_err(), "cut short");
        assert!(parse(RUNC_OPTIONS, &[0x32, 9, b'x']).is_err(), "length past the end");
        assert!(parse(RUNC_OPTIONS, &[0x4b]).is_err(), "wire type 3");
    }
}
