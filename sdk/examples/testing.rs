//! Unit-testing code behind flags with [`TestData`]: no server, flags changed live.
//! `cargo test -p flagstaff --example testing` runs the tests below;
//! `cargo run -p flagstaff --example testing` runs `main`.

use flagstaff::{Client, Context, TestData};

/// The code under test: a price that depends on a flag.
fn shipping_cost(flags: &Client, user: &str, country: &str) -> u32 {
    let ctx = Context::new(user).with("country", country);
    if flags.bool_value("free-shipping", &ctx, false) {
        0
    } else {
        flags.number_value("shipping-cost", &ctx, 499.0) as u32
    }
}

fn main() {
    let data = TestData::new();
    let flags = data.client();
    println!("default: {}", shipping_cost(&flags, "user-1", "NL"));
    data.set_bool("free-shipping", true);
    println!(
        "free shipping on: {}",
        shipping_cost(&flags, "user-1", "NL")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipping_is_free_when_the_flag_says_so() {
        let data = TestData::new();
        let flags = data.client();
        assert_eq!(shipping_cost(&flags, "user-1", "NL"), 499);
        data.set_number("shipping-cost", 299.0);
        assert_eq!(shipping_cost(&flags, "user-1", "NL"), 299);
        data.set_bool("free-shipping", true);
        assert_eq!(shipping_cost(&flags, "user-1", "NL"), 0);
    }

    #[test]
    fn free_shipping_only_in_the_eu() {
        let data = TestData::new();
        data.set_flag_text(
            r#"
key: free-shipping
kind: boolean
variants: { "on": true, "off": false }
off_variant: "off"
enabled: true
rules:
  - id: eu
    conditions: [{ attribute: country, op: in, values: [NL, DE, FR] }]
    serve: { variant: "on" }
default: { variant: "off" }
"#,
        )
        .expect("a valid flag");
        let flags = data.client();
        assert_eq!(shipping_cost(&flags, "user-1", "NL"), 0);
        assert_eq!(shipping_cost(&flags, "user-1", "US"), 499);
    }
}
