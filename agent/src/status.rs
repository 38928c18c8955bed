//! `kpaas-agent status`: each step's state from the journal, or every
//! event of every boot from the stream.

use crate::{events, journal};
use anyhow::Result;
use std::path::Path;

pub fn print(state_dir: &Path, json: bool, all_events: bool) -> Result<()> {
    if all_events {
        let all = events::read_all(state_dir)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            for e in all {
                println!("{} {:<10} {:?} {}", e.at, e.step, e.kind, e.detail);
            }
        }
        return Ok(());
    }
    let rows = journal::Journal::open(state_dir)?.status();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in rows {
            println!("{:<10} {:<8} {:<21} {}", r.step, r.state, r.at, r.detail);
        }
    }
    Ok(())
}
