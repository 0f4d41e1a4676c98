//! Sets `EBB_GIT_COMMIT` for `ebb_build_info`: the variable of that name when the build has it
//! (an image built without `.git`), else `git rev-parse HEAD`, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=EBB_GIT_COMMIT");
    let commit = std::env::var("EBB_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=EBB_GIT_COMMIT={}", commit.trim());
}

/// `git rev-parse HEAD`, and rerun when HEAD or the branch it names moves.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    // A path that does not exist would rerun the script at every build: name only those that do.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(head)
}
