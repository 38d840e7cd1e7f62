//! The reaper waits for every child of the process, so it is tested in a process of its own.

use std::process::Command;
use std::time::Duration;

use vigil_shim::runc::Spawner;
use vigil_shim::service::reaper::Reaper;

#[tokio::test]
async fn reaps_spawned_children_and_reports_strangers() {
    let (reaper, mut others) = Reaper::start().unwrap();

    // A spawned child that dies at once is still matched to its waiter.
    let quick = reaper
        .spawn(Command::new("sh").args(["-c", "exit 7"]))
        .unwrap();
    assert_eq!(quick.wait().await.unwrap(), 7);
    let killed = reaper
        .spawn(Command::new("sh").args(["-c", "kill -9 $$"]))
        .unwrap();
    assert_eq!(killed.wait().await.unwrap(), 137);

    // A child not started through the reaper ends up on the exit stream.
    #[expect(
        clippy::zombie_processes,
        reason = "the reaper under test waits for it"
    )]
    let stranger = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    let pid = stranger.id() as i32;
    let exit = tokio::time::timeout(Duration::from_secs(10), others.recv())
        .await
        .expect("the stranger's exit arrives")
        .expect("the stream stays open");
    assert_eq!((exit.pid, exit.code), (pid, 3));
}
