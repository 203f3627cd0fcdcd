//! Flag parsing for the modes: `--name value`, `--name=value` and switches,
//! each mode naming the flags it accepts so a typo fails instead of being
//! silently measured with the default.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

pub struct Flags {
    values: HashMap<String, String>,
    switches: HashSet<String>,
}

impl Flags {
    pub fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Self, String> {
        let mut flags = Self {
            values: HashMap::new(),
            switches: HashSet::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (name, None),
            };
            if switches.contains(&name) && inline.is_none() {
                flags.switches.insert(name.to_owned());
            } else if valued.contains(&name) {
                let value = inline
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| format!("--{name} needs a value"))?;
                flags.values.insert(name.to_owned(), value);
            } else {
                return Err(format!("unknown flag --{name}"));
            }
        }
        Ok(flags)
    }

    pub fn has(&self, switch: &str) -> bool {
        self.switches.contains(switch)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v}: not a valid value")),
        }
    }
}

/// The server's CPU list (`--server-cores` or `--server-core`, default
/// `0`) and wrk's (`--client-core`, default `1`).
pub fn pinning(flags: &Flags) -> (String, String) {
    let server = flags
        .str("server-cores")
        .or(flags.str("server-core"))
        .unwrap_or("0");
    let client = flags.str("client-core").unwrap_or("1");
    (server.to_owned(), client.to_owned())
}

/// How many CPUs a `taskset -c` list names ("0", "0,1", "0-3,6").
pub fn cpu_count(list: &str) -> Result<usize, String> {
    let bad = || format!("{list:?} is not a CPU list like 0 or 0,1 or 0-3");
    let mut count = 0;
    for part in list.split(',') {
        count += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if b < a {
                    return Err(bad());
                }
                b - a + 1
            }
            None => {
                part.parse::<usize>().map_err(|_| bad())?;
                1
            }
        };
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_spellings_and_switches() {
        let flags = Flags::parse(
            &strings(&["--duration", "5", "--only=outpost,native", "--json"]),
            &["duration", "only"],
            &["json"],
        )
        .unwrap();
        assert_eq!(flags.get("duration", 10u64).unwrap(), 5);
        assert_eq!(flags.str("only"), Some("outpost,native"));
        assert!(flags.has("json"));
        assert_eq!(flags.get("connections", 64u32).unwrap(), 64);
    }

    #[test]
    fn typos_fail() {
        assert!(Flags::parse(&strings(&["--durtion", "5"]), &["duration"], &[]).is_err());
        assert!(Flags::parse(&strings(&["--duration"]), &["duration"], &[]).is_err());
        assert!(Flags::parse(&strings(&["5"]), &["duration"], &[]).is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_count("0").unwrap(), 1);
        assert_eq!(cpu_count("0,1").unwrap(), 2);
        assert_eq!(cpu_count("0-3,6").unwrap(), 5);
        assert!(cpu_count("a").is_err());
        assert!(cpu_count("3-1").is_err());
    }
}
