//! The private PostgreSQL cluster: brought up in a fresh data folder, used, brought up
//! again (reused), stopped and removed.

use std::path::PathBuf;

use api::cluster::{ensure_running, ClusterError};
use sqlx::{Connection, PgConnection};

/// Removes the data folder even when the test fails half-way.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn brings_up_uses_reuses_and_stops_a_private_cluster() -> anyhow::Result<()> {
    let dir = PathBuf::from(format!(
        "/var/tmp/escrow-ledger-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let _cleanup = RemoveOnDrop(dir.clone());

    let cluster = match ensure_running(Some(dir.clone())).await {
        Ok(cluster) => cluster,
        Err(ClusterError::ProgramsNotFound) => {
            eprintln!("skipped: the PostgreSQL server programs are not installed");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    assert_eq!(cluster.data_dir, dir);
    assert_eq!(
        cluster.url,
        format!(
            "postgres://postgres@127.0.0.1:{}/escrow_ledger",
            cluster.port
        )
    );

    let result = async {
        let mut conn = PgConnection::connect(&cluster.url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        assert_eq!(one, 1);
        conn.close().await?;

        // A second call finds it running and returns the same cluster.
        let again = ensure_running(Some(dir.clone())).await?;
        assert_eq!(again.port, cluster.port);
        assert_eq!(again.url, cluster.url);
        anyhow::Ok(())
    }
    .await;

    cluster.stop()?;
    assert!(
        !dir.join("postmaster.pid").exists(),
        "the server is still running"
    );

    // Once stopped, it starts again from the same folder.
    let restarted = ensure_running(Some(dir.clone())).await?;
    let conn = PgConnection::connect(&restarted.url).await?;
    conn.close().await?;
    restarted.stop()?;
    // Stopping a stopped cluster is fine.
    cluster.stop()?;
    result
}

#[tokio::test]
async fn a_data_folder_out_of_the_server_users_reach_is_refused() -> anyhow::Result<()> {
    let is_root = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"));
    if !is_root {
        eprintln!("skipped: only root hands the cluster to another user");
        return Ok(());
    }
    let closed = PathBuf::from(format!(
        "/var/tmp/escrow-ledger-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let _cleanup = RemoveOnDrop(closed.clone());
    std::fs::create_dir(&closed)?;
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;

    match ensure_running(Some(closed.join("data"))).await {
        Err(ClusterError::Unreachable { blocker, .. }) => assert_eq!(blocker, closed),
        Err(ClusterError::ProgramsNotFound) => eprintln!("skipped: no PostgreSQL server programs"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    Ok(())
}
