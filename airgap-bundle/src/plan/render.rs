//! The plan's human form, rendered from the typed steps.

use super::Plan;

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "unknown until bundled".into(),
        Some(n) if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        Some(n) => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
    }
}

impl Plan {
    /// The human form: waves, then each step, then the capacity plan.
    pub fn render(&self) -> String {
        let mut s = format!(
            "deploy plan: {} on cluster {}\n",
            self.platform, self.cluster
        );
        for (i, w) in self.waves.iter().enumerate() {
            s.push_str(&format!("  wave {i}: {}\n", w.join(", ")));
        }
        for st in &self.steps {
            s.push_str(&format!(
                "\n[{}] {} (namespace {}){}\n",
                st.wave,
                st.component,
                st.namespace.as_deref().unwrap_or("-"),
                if st.depends_on.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", st.depends_on.join(", "))
                }
            ));
            s.push_str(&format!("  artifacts: {}\n", st.artifacts.len()));
            for (k, v) in &st.values {
                s.push_str(&format!("  {k} = {v}\n"));
            }
            for r in &st.releases {
                s.push_str(&format!("  {}\n", r.describe()));
            }
            for r in &st.readiness {
                s.push_str(&format!("  ready when: {r}\n"));
            }
            for n in &st.notes {
                s.push_str(&format!("  differs from upstream: {n}\n"));
            }
        }
        s.push_str(&format!(
            "\njoining: {} ({}); a node not listed joins with a day-2 seed (kpaas-agent node add)\n",
            self.join.describe(),
            self.listed_nodes.join(", ")
        ));
        for k in &self.skipped {
            s.push_str(&format!("\nskipped: {k}\n"));
        }
        let c = &self.capacity;
        s.push_str("\ncapacity:\n");
        for (k, t) in &c.by_kind {
            s.push_str(&format!(
                "  {k}: {} artifacts, {}\n",
                t.count,
                bytes(t.bytes)
            ));
        }
        s.push_str(&format!(
            "  bundle: {}\n  unverified artifacts: {}; supplied by the site: {}\n",
            bytes(c.bundle_bytes),
            c.unverified,
            c.supplied
        ));
        for n in &c.nodes {
            s.push_str(&format!(
                "  {} ({}): >= {} vCPU, >= {} GiB RAM, {}\n",
                n.node, n.role, n.vcpus, n.memory_gib, n.disk
            ));
        }
        s
    }
}
