//! The one error for an input file with many problems (catalog, cluster
//! file, node config): every problem is collected and reported at once,
//! each naming its field, so a user fixes a file in one pass.

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub struct Problems {
    /// The file (or the volume and file) the problems are in.
    pub file: String,
    pub problems: Vec<String>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.file, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_under_its_file() {
        let p = Problems {
            file: "cluster.yaml".into(),
            problems: vec!["nodes[0].ip: missing".into(), "name: empty".into()],
        };
        assert_eq!(
            p.to_string(),
            "cluster.yaml: 2 problem(s)\n  - nodes[0].ip: missing\n  - name: empty"
        );
    }
}
