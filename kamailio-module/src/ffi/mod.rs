//! The boundary with Kamailio, and the only `unsafe` code in the crate.
//!
//! - `exports`: the symbols Kamailio's loader reads and every function it
//!   calls (modparams, `mod_init`, `child_init`, the RPC);
//! - `guard`: the one panic guard all of them run through;
//! - `logger`: the `log` facade routed to Kamailio's logger;
//! - `loadcheck`: names both versions when loaded into another Kamailio;
//! - `dispatcher`: the stock dispatcher's loader and in-memory list;
//! - `shm`: a lock-guarded value in Kamailio's shared memory;
//! - `rpc`: a safe reply builder over `rpc_t`.
//!
//! Every `unsafe` block carries a `SAFETY:` comment naming the rules of
//! `kamailio-module/SAFETY.md` it relies on, such as `[single-writer]`; the
//! test below keeps the two in agreement.

#![allow(unsafe_code)]

mod dispatcher;
mod exports;
mod guard;
mod loadcheck;
mod logger;
mod rpc;
mod shm;

#[cfg(test)]
mod tests {
    /// The module's sources with unsafe code, by name.
    const SOURCES: [(&str, &str); 6] = [
        ("dispatcher.rs", include_str!("dispatcher.rs")),
        ("exports.rs", include_str!("exports.rs")),
        ("guard.rs", include_str!("guard.rs")),
        ("logger.rs", include_str!("logger.rs")),
        ("rpc.rs", include_str!("rpc.rs")),
        ("shm.rs", include_str!("shm.rs")),
    ];
    const SAFETY_MD: &str = include_str!("../../SAFETY.md");

    /// The rules named at the start of the `SAFETY:` comment right above
    /// line `at` (at most a few lines of the same statement in between).
    fn rules_above(lines: &[&str], at: usize) -> Option<Vec<String>> {
        let is_comment = |l: &&&str| l.trim_start().starts_with("//");
        let above = &lines[..at];
        let code_between = above.iter().rev().take_while(|l| !is_comment(l)).count();
        if code_between > 3 {
            return None;
        }
        let block: Vec<&str> = above[..above.len() - code_between]
            .iter()
            .rev()
            .take_while(is_comment)
            .copied()
            .collect();
        let first = block.last()?.trim_start().strip_prefix("// SAFETY:")?;
        let mut rules = Vec::new();
        let mut rest = first.trim_start();
        while let Some(tail) = rest.strip_prefix('[') {
            let (rule, after) = tail.split_once(']')?;
            rules.push(rule.to_owned());
            rest = after.trim_start();
        }
        Some(rules)
    }

    #[test]
    fn every_unsafe_block_names_rules_safety_md_defines() {
        let mut blocks = 0;
        for (file, text) in SOURCES {
            let lines: Vec<&str> = text.lines().collect();
            for (at, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if !code.contains("unsafe {") && !code.contains("unsafe impl") {
                    continue;
                }
                blocks += 1;
                let rules = rules_above(&lines, at)
                    .filter(|rules| !rules.is_empty())
                    .unwrap_or_else(|| {
                        panic!("{file}:{}: no `// SAFETY: [rule]` comment above", at + 1)
                    });
                for rule in rules {
                    assert!(
                        SAFETY_MD.contains(&format!("`[{rule}]`")),
                        "{file}:{}: SAFETY.md defines no rule [{rule}]",
                        at + 1
                    );
                }
            }
        }
        assert!(
            blocks > 20,
            "only {blocks} unsafe blocks found: is the scan broken?"
        );
    }
}
