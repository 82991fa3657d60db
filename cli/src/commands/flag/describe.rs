//! How a flag reads in one line, in what every `flag` command says: its state (`on`, `off`),
//! what it serves (`on 12.5% / off 87.5%`) and its variants' names.

use flagstaff_engine::{format_percent, Flag, Serve};

/// `on` or `off`.
pub fn state(flag: &Flag) -> &'static str {
    if flag.enabled {
        "on"
    } else {
        "off"
    }
}

/// The flag's variant names, comma-separated, for errors that name a variant it lacks.
pub fn variant_names(flag: &Flag) -> String {
    flag.variants
        .0
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `on`, or `on 12.5% / off 87.5%`, or with another bucketing attribute `... by team`.
pub fn serve_summary(serve: &Serve) -> String {
    match serve {
        Serve::Variant(v) => v.clone(),
        Serve::Split(split) => {
            let shares: Vec<String> = split
                .weights
                .iter()
                .map(|w| format!("{} {}", w.variant, format_percent(w.weight)))
                .collect();
            let by = if split.bucket_by == "key" {
                String::new()
            } else {
                format!(" by {}", split.bucket_by)
            };
            format!("{}{by}", shares.join(" / "))
        }
    }
}
