//! The `--config` file: TOML whose keys are the long flag names (`ping-interval-ms`; the
//! `snake_case` spelling `ping_interval_ms` is accepted too). Each value is turned into the text
//! the flag would take, checked by clap's own parser for that flag, and then handed to clap as
//! the setting's default, below the flag and the environment variable.

use std::error::Error as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::effective::{PLACEHOLDER, is_secret};
use super::{CONFIG_ID, ConfigError, is_setting};

/// One setting read from the file.
#[derive(Debug, Clone)]
struct FileValue {
    /// The clap id (the field name).
    id: String,
    /// The key as written in the file, for messages.
    key: String,
    /// The values as the flag would receive them.
    raw: Vec<String>,
    /// How else to set it: `--flag or SWITCHBOARD_VARIABLE`.
    elsewhere: String,
}

/// The settings of one config file, every key known and every value valid.
#[derive(Debug, Clone)]
pub(super) struct FileSettings {
    path: PathBuf,
    values: Vec<FileValue>,
}

impl FileSettings {
    /// Read `path` and check it against `command`: each key must be a setting, said once, and
    /// each value one that clap accepts for that setting. Every problem is reported, not only
    /// the first.
    pub(super) fn read(path: &Path, command: &Command) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|source| ConfigError::Syntax {
            path: path.to_owned(),
            source,
        })?;
        // Built, so that every argument has its action and value parser filled in.
        let mut built = command.clone();
        built.build();
        let mut problems = Vec::new();
        let mut values: Vec<FileValue> = Vec::new();
        for (key, value) in &table {
            let arg = match find(&built, key) {
                Some(arg) if is_setting(arg) => arg,
                Some(arg) if arg.get_id() == CONFIG_ID => {
                    problems.push(format!(
                        "`{key}`: a config file cannot name another one \
                         (use --config or SWITCHBOARD_CONFIG)"
                    ));
                    continue;
                }
                Some(_) => {
                    problems.push(format!("`{key}` is a command-line action, not a setting"));
                    continue;
                }
                None => {
                    problems.push(format!(
                        "unknown key `{key}` (keys are the long flag names, see --help)"
                    ));
                    continue;
                }
            };
            let id = arg.get_id().as_str();
            if let Some(other) = values.iter().find(|v| v.id == id) {
                problems.push(format!(
                    "`{key}` and `{}` are the same setting; keep one",
                    other.key
                ));
                continue;
            }
            match raw_values(arg, value).and_then(|raw| check(command, arg, &raw).map(|()| raw)) {
                Ok(raw) => values.push(FileValue {
                    id: id.to_owned(),
                    key: key.clone(),
                    raw,
                    elsewhere: {
                        let long = arg.get_long().unwrap_or(id);
                        match arg.get_env() {
                            Some(env) => format!("--{long} or {}", env.to_string_lossy()),
                            None => format!("--{long}"),
                        }
                    },
                }),
                // A secret's value is not repeated in the message.
                Err(why) if is_secret(arg) => problems.push(format!("`{key}`: {why}")),
                Err(why) => problems.push(format!("`{key}` = {value}: {why}")),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Settings {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(FileSettings {
            path: path.to_owned(),
            values,
        })
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file sets the argument with this id.
    pub(super) fn sets(&self, id: &str) -> bool {
        self.values.iter().any(|v| v.id == id)
    }

    /// `command` with the file's values as defaults: clap then takes the flag, else the
    /// variable, else the file's value.
    pub(super) fn apply(&self, command: Command) -> Command {
        self.values.iter().fold(command, |command, v| {
            command.mut_arg(&v.id, |arg| arg.default_values(&v.raw))
        })
    }

    /// Refuse a `--print-config` placeholder that would become the real value (a copied
    /// output whose secret nothing overrides).
    pub(super) fn check_placeholders(&self, matches: &ArgMatches) -> Result<(), ConfigError> {
        let problems: Vec<String> = self
            .values
            .iter()
            .filter(|v| v.raw.iter().any(|raw| raw.contains(PLACEHOLDER)))
            .filter(|v| matches.value_source(&v.id) == Some(ValueSource::DefaultValue))
            .map(|v| {
                format!(
                    "`{}` holds the placeholder {PLACEHOLDER:?} that --print-config writes \
                     for secrets: put the real value here, or set it with {}",
                    v.key, v.elsewhere
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Settings {
                path: self.path.clone(),
                problems,
            })
        }
    }
}

/// The argument a file key names: its long flag name, or that name in `snake_case`.
fn find<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long()
            .is_some_and(|long| long == key || long.replace('-', "_") == key)
    })
}

/// The text the flag would take for this TOML value. On/off flags take booleans only; other
/// settings take strings and numbers (which their parser then checks), and a list where the
/// flag may repeat.
fn raw_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let on_off = super::is_on_off(arg);
    match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(|item| scalar(item, on_off)).collect()
        }
        toml::Value::Array(_) => Err("takes one value, not a list".to_owned()),
        value => scalar(value, on_off).map(|raw| vec![raw]),
    }
}

fn scalar(value: &toml::Value, on_off: bool) -> Result<String, String> {
    match value {
        toml::Value::Boolean(b) if on_off => Ok(b.to_string()),
        _ if on_off => Err("takes true or false".to_owned()),
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(_) => Err("takes a string or a number, not true/false".to_owned()),
        _ => Err("takes a string or a number".to_owned()),
    }
}

/// Let clap parse `raw` as this setting's default, exactly as it will when the file is applied
/// (its variable removed, so that a variable set now cannot hide a bad value).
fn check(command: &Command, arg: &Arg, raw: &[String]) -> Result<(), String> {
    let probe = command
        .clone()
        .mut_arg(arg.get_id(), |arg| arg.env(None).default_values(raw));
    match probe.try_get_matches_from(["switchboard"]) {
        Ok(_) => Ok(()),
        Err(err) => Err(match err.source() {
            Some(why) => format!("invalid value: {why}"),
            None => {
                // clap's own text, minus its prefix and its "try --help" footer.
                let text = err.to_string();
                let text = text.trim_start_matches("error: ");
                text.split("\n\n")
                    .next()
                    .unwrap_or(text)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }),
    }
}
