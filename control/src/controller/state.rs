//! What the controller keeps across switch restarts, in a small JSON file: the epoch it last
//! stamped with, and the keys that are hot.
//!
//! - **The epoch**: versions are `epoch << 48 | counter`, and the counter starts from 0 when
//!   the program is loaded. A restarted switch that stamped with the same epoch again would
//!   give new writes versions below the ones the stores hold, and the stores would answer
//!   them without applying them. So every start takes a new epoch, larger than every earlier
//!   one, and saves it before any packet is stamped.
//! - **The hot keys**: a key is saved before it enters the directory and forgotten after it
//!   has left it, so that the list always covers every key whose newest version may be away
//!   from its home. A restarted switch brings those homes up to date before it forwards
//!   anything (`Controller::recover`).
//!
//! Every change is written to a temporary file, synced and renamed over the old one: a crash
//! leaves the old state or the new one, never half of either.

use anyhow::{Context, Result, bail, ensure};
use pegasus_common::wire;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// The epoch the switch stamps with now (or last did).
    pub epoch: u16,
    /// Hot keys, hex-encoded (keys are bytes).
    pub hot_keys: BTreeSet<String>,
}

impl SavedState {
    /// The hot keys that decode to keys the protocol can carry, and the entries that do not
    /// (not hex, or longer than a key may be), each with why.
    pub fn keys(&self) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
        let mut keys = Vec::with_capacity(self.hot_keys.len());
        let mut bad = Vec::new();
        for entry in &self.hot_keys {
            match decode_hex(entry).and_then(|key| {
                ensure!(
                    key.len() <= wire::MAX_KEY_LEN,
                    "a key of {} bytes (at most {})",
                    key.len(),
                    wire::MAX_KEY_LEN
                );
                Ok(key)
            }) {
                Ok(key) => keys.push(key),
                Err(e) => bad.push((entry.clone(), format!("{e:#}"))),
            }
        }
        (keys, bad)
    }
}

/// What [`StateFile::begin`] found and decided.
#[derive(Debug)]
pub struct Begun {
    pub file: StateFile,
    /// The epoch to stamp with.
    pub epoch: u16,
    /// Keys that were hot when the switch last stopped.
    pub previously_hot: Vec<Vec<u8>>,
    /// Whether a switch ran before with this state file.
    pub restarted: bool,
}

/// The state file of a running switch.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: Mutex<SavedState>,
}

impl StateFile {
    /// Starts a new epoch: at least `requested`, and larger than the one saved at `path` (if
    /// any). Saves it before returning, with the hot keys of the previous run, which are also
    /// returned (their homes may need bringing up to date).
    pub fn begin(path: &Path, requested: u16) -> Result<Begun> {
        let previous = match std::fs::read(path) {
            Ok(bytes) => Some(
                serde_json::from_slice::<SavedState>(&bytes)
                    .with_context(|| format!("{} is not a switch state file", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let epoch = match &previous {
            None => requested,
            Some(p) if p.epoch == u16::MAX => bail!(
                "{} says epoch {} was used: no larger epoch is left (versions would go back)",
                path.display(),
                p.epoch
            ),
            Some(p) => requested.max(p.epoch + 1),
        };
        let mut state = SavedState {
            epoch,
            hot_keys: previous
                .as_ref()
                .map(|p| p.hot_keys.clone())
                .unwrap_or_default(),
        };
        // A bad entry (written by hand, or by an older version) is reported and left out: the
        // switch must still start, and no key it names can have been hot.
        let (previously_hot, bad) = state.keys();
        for (entry, why) in &bad {
            tracing::warn!(entry = %entry, "skipping a bad hot key in {}: {why}", path.display());
            state.hot_keys.remove(entry);
        }
        save(path, &state)?;
        Ok(Begun {
            file: StateFile {
                path: path.to_owned(),
                state: Mutex::new(state),
            },
            epoch,
            previously_hot,
            restarted: previous.is_some(),
        })
    }

    /// Records that the switch stamps with `epoch` from now on (a rack that became a chain's
    /// head takes a newer one); saved before returning, so that a restart takes a larger one.
    pub fn set_epoch(&self, epoch: u16) -> Result<()> {
        let mut state = self.state.lock().expect("state mutex poisoned");
        ensure!(
            epoch >= state.epoch,
            "the version epoch goes back from {} to {epoch}",
            state.epoch
        );
        state.epoch = epoch;
        save(&self.path, &state)
    }

    /// Records that `key` is (about to be) hot, or no longer is; saved before returning.
    pub fn set_hot(&self, key: &[u8], hot: bool) -> Result<()> {
        let mut state = self.state.lock().expect("state mutex poisoned");
        let changed = if hot {
            state.hot_keys.insert(encode_hex(key))
        } else {
            state.hot_keys.remove(&encode_hex(key))
        };
        if changed {
            save(&self.path, &state)?;
        }
        Ok(())
    }

    /// The state as saved.
    pub fn saved(&self) -> SavedState {
        self.state.lock().expect("state mutex poisoned").clone()
    }
}

/// Writes `state` to `path` atomically (temporary file, sync, rename, sync of the directory).
fn save(path: &Path, state: &SavedState) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(state)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        bail!("odd-length hex key {text:?}");
    }
    bytes
        .chunks_exact(2)
        .map(|pair| {
            digit(pair[0])
                .zip(digit(pair[1]))
                .map(|(high, low)| high << 4 | low)
                .with_context(|| format!("bad hex key {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pegasus-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("switch.json")
    }

    #[test]
    fn every_start_takes_a_larger_epoch_and_keeps_the_hot_keys() {
        let path = scratch("epochs");
        let begun = StateFile::begin(&path, 1).unwrap();
        let file = begun.file;
        assert_eq!(begun.epoch, 1, "a first start takes the requested epoch");
        assert!(begun.previously_hot.is_empty() && !begun.restarted);
        file.set_hot(b"user0", true).unwrap();
        file.set_hot(b"\x00\xffbin", true).unwrap();
        file.set_hot(b"user1", true).unwrap();
        file.set_hot(b"user1", false).unwrap();
        drop(file);
        let begun = StateFile::begin(&path, 1).unwrap();
        let (epoch, mut keys) = (begun.epoch, begun.previously_hot);
        assert!(begun.restarted);
        assert_eq!(epoch, 2, "a restart never reuses an epoch");
        keys.sort();
        assert_eq!(keys, vec![b"\x00\xffbin".to_vec(), b"user0".to_vec()]);
        let begun = StateFile::begin(&path, 9).unwrap();
        assert_eq!(begun.epoch, 9, "a larger requested epoch is taken as it is");
        assert_eq!(begun.file.saved().epoch, 9);
        assert_eq!(StateFile::begin(&path, 3).unwrap().epoch, 10);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn bad_hot_keys_are_skipped_and_the_switch_still_starts() {
        let path = scratch("bad-keys");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let too_long = encode_hex(&[b'k'; wire::MAX_KEY_LEN + 1]);
        let fine = encode_hex(b"user7");
        let text =
            format!(r#"{{"epoch": 4, "hot_keys": ["{too_long}", "zz", "abc", "éé", "{fine}"]}}"#);
        std::fs::write(&path, text).unwrap();
        let begun = StateFile::begin(&path, 1).unwrap();
        assert_eq!(begun.epoch, 5);
        assert_eq!(begun.previously_hot, vec![b"user7".to_vec()]);
        assert_eq!(
            begun.file.saved().hot_keys,
            BTreeSet::from([fine]),
            "the bad entries are gone from the file too"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_last_epoch_and_a_damaged_file_are_refused() {
        let path = scratch("refused");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, br#"{"epoch": 65535, "hot_keys": []}"#).unwrap();
        let err = StateFile::begin(&path, 1).unwrap_err();
        assert!(format!("{err:#}").contains("no larger epoch"), "{err:#}");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(StateFile::begin(&path, 1).is_err());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
