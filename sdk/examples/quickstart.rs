//! Evaluates the bundled example environment the way a service would:
//! `cargo run -p flagstaff --example quickstart`.

use flagstaff::{Client, Context};

fn main() -> Result<(), flagstaff::Error> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/production.yaml");
    let client = Client::from_export_file(path)?;

    for (key, country, plan) in [
        ("user-1", "US", "free"),
        ("user-42", "NL", "pro"),
        ("user-77", "DE", "enterprise"),
    ] {
        let ctx = Context::new(key)
            .with("country", country)
            .with("plan", plan);
        let checkout = client.bool_value("checkout-v2", &ctx, false);
        let banner = client.string_value("welcome-banner", &ctx, "Welcome");
        let page = client.number_value("search-page-size", &ctx, 10.0);
        let reason = client.with_bool_detail("checkout-v2", &ctx, false, |d| d.reason.to_string());
        println!("{key:8} {country} {plan:10} checkout-v2={checkout:<5} ({reason}) banner={banner:?} page-size={page}");
    }
    Ok(())
}
