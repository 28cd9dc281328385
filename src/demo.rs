//! `burrow demo`: placeholder replaced below.
pub async fn run(_frp_dir: Option<std::path::PathBuf>) -> i32 {
    0
}
