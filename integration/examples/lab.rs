//! A private containerd with vigil's runtime and the test images, for trying things by hand:
//! `cargo run -p vigil-integration --example lab [-- 'extra vigil config line' ...]` (as
//! root). It prints the socket, namespace, audit log and state folder, then waits until
//! stdin closes (or Enter), and tears everything down.

use anyhow::Result;
use vigil_integration::{Containerd, Image, Options};

fn main() -> Result<()> {
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let opts = Options {
        vigil_config: extra.join("\n"),
        images: Image::ALL.to_vec(),
        raw_vigil_config: None,
    };
    let c = Containerd::start(&opts)?;
    println!("SOCK={}", c.socket().display());
    println!("NS={}", c.namespace());
    println!("AUDIT={}", c.audit_log().display());
    println!("STATE={}", c.vigil_state_dir().display());
    println!("CONFIG={}", c.vigil_config_path().display());
    println!("LOG={}", c.log_path().display());
    println!("ready; press Enter to tear down");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}
