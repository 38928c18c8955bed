//! Platform catalogs shipped inside the binaries, so `--platform demo` works
//! anywhere without the source tree.

/// (name, catalog YAML)
pub const BUILTIN: &[(&str, &str)] = &[
    ("demo", include_str!("../platforms/demo/catalog.yaml")),
    // The demo's next version (platform `demo`, serial 2): the update.
    (
        "demo-0.2.0",
        include_str!("../platforms/demo-0.2.0/catalog.yaml"),
    ),
    (
        "k-paas-1.4.1",
        include_str!("../platforms/k-paas-1.4.1/catalog.yaml"),
    ),
];

pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, y)| *y)
}
