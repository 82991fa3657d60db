//! How a flag reads in one line, in what every `flag` command says: its state (`on`, `off`),
//! what it serves (`on 12.5% / off 87.5%`) and its variants' names.

use flagstaff_engine::Flag;

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

pub use flagstaff_engine::serve_summary;
