//! Rebuilds the binary when a migration changes: `sqlx::migrate!` embeds the files at
//! compile time but does not tell cargo it read them, so an edited or added migration
//! would otherwise ship in the next build only by luck.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
