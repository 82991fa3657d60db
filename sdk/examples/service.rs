//! A service using Flagstaff: connects to flagstaffd, waits briefly for the live flags, then
//! evaluates on every "request" and reports the client's state as it changes.
//!
//! ```sh
//! cargo run --release -p flagstaff-server --bin flagstaffd            # in one terminal
//! FLAGSTAFF_SDK_KEY=fs_... cargo run -p flagstaff --example service   # in another
//! ```
//! `FLAGSTAFF_ENDPOINT` (default `http://127.0.0.1:7878`) and `FLAGSTAFF_SDK_KEY` (an sdk
//! token of the environment to serve) configure it. Without a server it serves the bundled
//! example file, as a service would serve its bootstrap file.

use std::time::Duration;

use flagstaff::{Client, Context};

#[tokio::main]
async fn main() -> Result<(), flagstaff::Error> {
    let endpoint =
        std::env::var("FLAGSTAFF_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:7878".into());
    let sdk_key = std::env::var("FLAGSTAFF_SDK_KEY").unwrap_or_default();
    let client = Client::builder(endpoint, sdk_key)
        .application("example-service")
        .bootstrap_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/production.yaml"
        ))
        .build()?;

    // Serve at once either way: on the live flags, or on the bootstrap file meanwhile.
    if let Err(e) = client.wait_ready(Duration::from_secs(2)).await {
        println!("serving the bootstrap file for now: {e}");
    }
    let mut last = None;
    for request in 0..10 {
        let ctx = Context::new(format!("user-{request}")).with("country", "NL");
        let detail = client.bool_detail("checkout-v2", &ctx, false);
        println!(
            "request {request}: checkout-v2 = {} ({})",
            detail.value, detail.reason
        );
        let status = client.status();
        if last.as_ref() != Some(&status) {
            println!(
                "client: {:?} from {:?} at revision {}",
                status.state, status.source, status.revision
            );
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client.close();
    Ok(())
}
