//! Reading the files the command line names: bounded in size, refusing directories, a
//! UTF-8 byte-order mark accepted on text documents, and every error naming the file and
//! never its content.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use secrecy::SecretString;
use zeroize::{Zeroize, Zeroizing};

use crate::task::Failure;

/// Read at most `cap` bytes of `path`; a larger file is refused. The buffer is zeroised if
/// the read fails part-way, since value files hold secrets.
pub(crate) fn read(path: &Path, what: &str, cap: u64) -> Result<Vec<u8>, Failure> {
    let fail =
        |why: String| Failure::invalid(format!("cannot read {what} {}: {why}", path.display()));
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if meta.is_dir() {
        return Err(fail("it is a directory".into()));
    }
    // One allocation for a regular file, so no copy of a value is left behind by a regrow.
    let hint = if meta.is_file() {
        meta.len().min(cap)
    } else {
        0
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(
        usize::try_from(hint).unwrap_or(0).saturating_add(1),
    ));
    // Read one byte past the cap to tell "exactly cap" from "more": a device or a pipe has
    // no length to check up front.
    file.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| fail(e.to_string()))?;
    if buf.len() as u64 > cap {
        return Err(fail(format!("it is larger than {cap} bytes")));
    }
    Ok(std::mem::take(&mut *buf))
}

/// Read a text document (a template, an input or connector document): UTF-8, with a
/// leading byte-order mark removed.
pub(crate) fn read_text(path: &Path, what: &str, cap: u64) -> Result<Zeroizing<String>, Failure> {
    let bytes = read(path, what, cap)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        e.into_bytes().zeroize();
        Failure::invalid(format!("{what} {} is not UTF-8", path.display()))
    })?;
    Ok(Zeroizing::new(strip_bom(text)))
}

/// Remove a leading UTF-8 byte-order mark, which editors on Windows write and which would
/// otherwise make a JSON document look like a bash script, and a script's first word
/// unrunnable.
pub(crate) fn strip_bom(mut text: String) -> String {
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    text
}

/// Read a secret (a password, a passphrase, key text) from a file. One trailing newline,
/// as `echo pw > file` leaves, is not part of it.
pub(crate) fn read_secret(path: &Path, what: &str, cap: u64) -> Result<SecretString, Failure> {
    let bytes = Zeroizing::new(read(path, what, cap)?);
    Ok(SecretString::from(secret_text(&bytes).ok_or_else(
        || Failure::invalid(format!("{what} {} is not UTF-8", path.display())),
    )?))
}

/// A secret file's bytes as text without one trailing newline (`\n` or `\r\n`); `None` if
/// they are not UTF-8.
pub(crate) fn secret_text(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_and_clear_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345678").unwrap();
        assert_eq!(read(&p, "value file", 8).unwrap(), b"12345678");
        let e = read(&p, "value file", 7).unwrap_err();
        assert!(e.message.contains("larger than 7 bytes"), "{}", e.message);
        assert!(!e.message.contains("1234"), "{}", e.message);
        let e = read(dir.path(), "template", 8).unwrap_err();
        assert!(e.message.contains("is a directory"), "{}", e.message);
        let e = read(&dir.path().join("missing"), "template", 8).unwrap_err();
        assert!(e.message.contains("missing"), "{}", e.message);
        // A device without a length is still bounded.
        let e = read(Path::new("/dev/zero"), "value file", 1024).unwrap_err();
        assert!(
            e.message.contains("larger than 1024 bytes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_byte_order_mark_is_removed_once() {
        assert_eq!(strip_bom("\u{feff}{\"a\":1}".into()), "{\"a\":1}");
        assert_eq!(strip_bom("\u{feff}\u{feff}x".into()), "\u{feff}x");
        assert_eq!(strip_bom("x\u{feff}".into()), "x\u{feff}");
    }
}
