//! `--name value` command-line flags; every flag takes exactly one value.

use std::collections::HashMap;
use std::str::FromStr;

pub struct Flags {
    values: HashMap<String, String>,
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Flags, String> {
        let mut values = HashMap::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("expected a --flag, got {arg:?}"))?;
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_owned(), value.clone());
        }
        Ok(Flags { values })
    }

    /// A typo in a flag must fail, not silently bench the default.
    pub fn allow_only(&self, names: &[&str]) -> Result<(), String> {
        match self
            .values
            .keys()
            .find(|name| !names.contains(&name.as_str()))
        {
            Some(name) => Err(format!(
                "unknown flag --{name} (known: --{})",
                names.join(", --")
            )),
            None => Ok(()),
        }
    }

    pub fn optional<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.values
            .get(name)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| format!("--{name}: cannot read {value:?}"))
            })
            .transpose()
    }

    pub fn required<T: FromStr>(&self, name: &str) -> Result<T, String> {
        self.optional(name)?
            .ok_or_else(|| format!("--{name} is required"))
    }

    pub fn or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.optional(name)?.unwrap_or(default))
    }
}
