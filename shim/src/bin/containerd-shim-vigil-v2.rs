//! containerd-shim-vigil-v2: containerd starts it for `runtime_type = "io.containerd.vigil.v2"`.

use std::time::Duration;

use vigil_shim::service::{framework_config, ShimService, RUNTIME_ID};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args
        .iter()
        .skip(1)
        .any(|a| a == "-v" || a == "-version" || a == "--version")
    {
        println!(
            "{}:\n  Version: {}",
            env!("CARGO_BIN_NAME"),
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: start async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(containerd_shim::asynchronous::run::<ShimService>(
        RUNTIME_ID,
        Some(framework_config()),
    ));
    // Copy tasks blocked on a client's fifo must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(500));
}
