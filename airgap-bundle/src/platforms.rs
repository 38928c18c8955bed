//! Platform catalogs shipped inside the binaries, so `--platform demo` works
//! anywhere without the source tree.

/// (name, catalog YAML)
pub const BUILTIN: &[(&str, &str)] = &[("demo", include_str!("../platforms/demo/catalog.yaml"))];

pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, y)| *y)
}
