//! Before anything is written to a target: who it is, every refusal at once, and the
//! operator's "yes". Shared by `p6os flash` and `p6os config drive` ([`check_and_confirm`]); an
//! interface that asks in its own way takes [`check_target`] and shows [`Checked::info`].

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use super::identity::{self, Identity};
use super::target::{self, Force, Refusal, TargetInfo, TargetKind};

/// The target as checked: what it is (shown before the confirmation) and who it is (what the
/// write compares with the descriptor it opens).
#[derive(Debug, Clone)]
pub struct Checked {
    pub info: TargetInfo,
    pub identity: Identity,
}

/// Go, or every reason not to.
#[derive(Debug, Clone)]
pub enum TargetCheck {
    Ready(Box<Checked>),
    Refused(Vec<Refusal>),
}

/// Whether the operator is asked before the write (`--yes` says no).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Ask,
    Yes,
}

/// Identifies `target`, inspects it and applies [`target::refusals`] for a write of `need`
/// bytes, then checks it is still the one identified first: what was inspected is what is
/// shown and recorded. A missing target is the `NotFound` refusal, not an error.
pub fn check_target(target: &Path, need: u64, force: Force) -> io::Result<TargetCheck> {
    // Who the target is, first: the checks below, what is shown and what is written must all
    // be that one (a disk swapped meanwhile is not written).
    let first = match Identity::of_path(target) {
        Ok(identity) => identity,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(TargetCheck::Refused(vec![Refusal::NotFound(target.into())]))
        }
        Err(e) => return Err(e),
    };
    let info = target::inspect(target)?;
    let refusals = target::refusals(&info, need, force);
    if !refusals.is_empty() {
        return Ok(TargetCheck::Refused(refusals));
    }
    let identity = identity::still_the_same(target, &first)?;
    Ok(TargetCheck::Ready(Box::new(Checked { info, identity })))
}

/// The command line's way: [`check_target`], each refusal printed on stderr (the target named
/// first), then "yes" asked on the terminal, unless `confirm` is `Yes` or the target is a
/// regular file. `Some`: the confirmed identity to write to; `None`: nothing may be written,
/// and stderr says why, ending with "nothing was written". `writing` names what goes onto the
/// target, in the question.
pub fn check_and_confirm(
    target: &Path,
    need: u64,
    force: Force,
    confirm: Confirm,
    writing: &str,
) -> io::Result<Option<Identity>> {
    let checked = match check_target(target, need, force)? {
        TargetCheck::Ready(checked) => checked,
        TargetCheck::Refused(refusals) => {
            for r in &refusals {
                // Messages that start with "it" are about the target: name it first.
                let text = r.to_string();
                if text.starts_with("it ") {
                    eprintln!("error: {}: {text}", target.display());
                } else {
                    eprintln!("error: {text}");
                }
            }
            eprintln!("nothing was written");
            return Ok(None);
        }
    };
    if confirm == Confirm::Yes || checked.info.kind == TargetKind::RegularFile {
        return Ok(Some(checked.identity));
    }
    if !io::stdin().is_terminal() {
        eprintln!(
            "error: no terminal to confirm on: pass --yes to write to {}\nnothing was written",
            target.display()
        );
        return Ok(None);
    }
    let description = target::describe(&checked.info);
    eprint!(
        "{}",
        identity::prompt(&description, &checked.identity, writing)
    );
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        eprintln!("nothing was written");
        return Ok(None);
    }
    Ok(Some(checked.identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_target_is_a_refusal() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("no-such.img");
        let TargetCheck::Refused(refusals) = check_target(&missing, 1, Force::No).unwrap() else {
            panic!("a missing target was accepted");
        };
        assert_eq!(refusals, [Refusal::NotFound(missing)]);
    }

    #[test]
    fn a_regular_file_is_ready_and_a_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("drive.img");
        std::fs::write(&file, b"").unwrap();
        let TargetCheck::Ready(checked) = check_target(&file, 1 << 30, Force::No).unwrap() else {
            panic!("a regular file was refused");
        };
        assert_eq!(checked.info.kind, TargetKind::RegularFile);
        assert_eq!(checked.identity, Identity::of_path(&file).unwrap());
        // No question for a file, whatever `confirm` says.
        let confirmed = check_and_confirm(&file, 1, Force::No, Confirm::Ask, "x").unwrap();
        assert_eq!(confirmed, Some(checked.identity));
        let refused = check_target(d.path(), 1, Force::No).unwrap();
        assert!(
            matches!(&refused, TargetCheck::Refused(r) if matches!(r[..], [Refusal::NotABlockDeviceOrFile(_)])),
            "{refused:?}"
        );
        assert_eq!(
            check_and_confirm(d.path(), 1, Force::No, Confirm::Yes, "x").unwrap(),
            None
        );
    }
}
