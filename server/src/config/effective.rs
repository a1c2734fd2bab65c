//! What the configuration turned out to be: every setting's effective value and where it came
//! from, printed by `--print-config` as TOML that `--config` accepts, with secrets redacted.
//! The README's settings table is generated here too, from the same definition.

use std::any::TypeId;
use std::fmt;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::file::FileSettings;
use super::{CONFIG_ID, is_setting};

/// What a redacted value prints as.
pub(super) const PLACEHOLDER: &str = "<redacted>";

/// An option whose name has one of these words (or its plural) is a secret.
const SECRET_WORDS: &[&str] = &["secret", "key", "password", "token"];

/// Where a setting's effective value came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A `SWITCHBOARD_*` environment variable.
    Env,
    /// The `--config` file.
    File,
    /// The built-in default (or unset).
    Default,
}

impl Source {
    /// The word `--print-config` uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }

    fn of(arg: &Arg, matches: &ArgMatches, file: Option<&FileSettings>) -> Source {
        match matches.value_source(arg.get_id().as_str()) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            // File values are clap defaults; which defaults came from the file, the file knows.
            Some(ValueSource::DefaultValue)
                if file.is_some_and(|file| file.sets(arg.get_id().as_str())) =>
            {
                Source::File
            }
            _ => Source::Default,
        }
    }
}

/// How a value is written in TOML (a string is always accepted, but typed reads better).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        if super::is_on_off(arg) {
            return Kind::Bool;
        }
        let ty = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ];
        if integers.iter().any(|id| ty == *id) {
            Kind::Integer
        } else {
            Kind::Text
        }
    }

    /// `raw` as a TOML value of this kind; a string when it does not fit the kind.
    fn toml(self, raw: &str) -> String {
        match (self, raw.parse::<i64>()) {
            (Kind::Bool, _) if raw == "true" || raw == "false" => raw.to_owned(),
            (Kind::Integer, Ok(n)) => n.to_string(),
            _ => toml::Value::String(raw.to_owned()).to_string(),
        }
    }
}

/// One setting's outcome; its values are already redacted.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    env: Option<String>,
    source: Source,
    /// The effective values, as TOML; `None` when unset.
    value: Option<String>,
    /// What unset means, from the help text.
    unset: Option<String>,
}

/// Every setting's effective value (secrets redacted) and source; its `Display` is the TOML
/// that `--print-config` prints.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The config file and how it was named.
    file: Option<(PathBuf, Source)>,
    settings: Vec<Setting>,
}

impl Effective {
    /// Record what `matches` holds for every setting of the (built) `command`.
    pub(super) fn new(
        command: &Command,
        matches: &ArgMatches,
        file: Option<&FileSettings>,
    ) -> Effective {
        let settings = command
            .get_arguments()
            .filter(|arg| is_setting(arg))
            .map(|arg| {
                let id = arg.get_id().as_str();
                let kind = Kind::of(arg);
                let value = matches.get_raw(id).map(|raw| {
                    let values: Vec<String> = raw
                        .map(|v| {
                            if is_secret(arg) {
                                toml::Value::String(PLACEHOLDER.to_owned()).to_string()
                            } else {
                                kind.toml(&redact_url(&v.to_string_lossy()))
                            }
                        })
                        .collect();
                    if matches!(arg.get_action(), ArgAction::Append) {
                        format!("[{}]", values.join(", "))
                    } else {
                        values.join(", ")
                    }
                });
                Setting {
                    key: arg.get_long().unwrap_or(id).to_owned(),
                    env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                    source: Source::of(arg, matches, file),
                    value,
                    unset: split_default(&help_text(arg)).1,
                }
            })
            .collect();
        let file = file.map(|file| {
            let source = match matches.value_source(CONFIG_ID) {
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Flag,
            };
            (file.path().to_owned(), source)
        });
        Effective { file, settings }
    }

    /// Where the setting with this key (its long flag name) came from.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.source)
    }
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# switchboard --print-config: the effective configuration, as TOML that --config \
             accepts.\n\
             # Precedence: flag > environment variable > config file > default (each line names \
             the winner).\n\
             # Secrets print as {PLACEHOLDER:?}, which --config refuses unless a flag or variable \
             overrides it."
        )?;
        match &self.file {
            Some((path, source)) => writeln!(
                f,
                "# Config file: {} (named by {})",
                path.display(),
                source.as_str()
            )?,
            None => writeln!(f, "# Config file: none")?,
        }
        for setting in &self.settings {
            match &setting.value {
                Some(value) => {
                    write!(f, "{} = {value} # {}", setting.key, setting.source.as_str())?;
                    match (&setting.env, setting.source) {
                        (Some(env), Source::Env) => writeln!(f, " {env}")?,
                        _ => writeln!(f)?,
                    }
                }
                None => match &setting.unset {
                    Some(meaning) => {
                        writeln!(f, "# {} is unset [default: {meaning}]", setting.key)?
                    }
                    None => writeln!(f, "# {} is unset", setting.key)?,
                },
            }
        }
        Ok(())
    }
}

/// Whether the option is a secret: its name has a word like `secret`, `key`, `password` or
/// `token`.
pub(super) fn is_secret(arg: &Arg) -> bool {
    arg.get_long().is_some_and(|long| {
        long.split('-').any(|word| {
            SECRET_WORDS
                .iter()
                .any(|secret| word == *secret || word.strip_suffix('s') == Some(secret))
        })
    })
}

/// `value` with a URL's password (`scheme://user:<redacted>@host`) and the values of query
/// parameters that name a secret (`?password=<redacted>`) replaced; anything else unchanged.
fn redact_url(value: &str) -> String {
    let Some(start) = value.find("://").map(|i| i + 3) else {
        return value.to_owned();
    };
    let (head, rest) = value.split_at(start);
    // Up to the last `@`: a password with a raw `@`, `/` or `?` in it is still hidden whole
    // (at worst more than the password is).
    let rest = match rest.rfind('@').map(|at| rest.split_at(at)) {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{PLACEHOLDER}{host}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _))
                        if SECRET_WORDS
                            .iter()
                            .any(|word| name.to_ascii_lowercase().contains(word)) =>
                    {
                        format!("{name}={PLACEHOLDER}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest,
    };
    format!("{head}{rest}")
}

/// The option's help, on one line.
fn help_text(arg: &Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(|help| help.to_string())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split a help text into its meaning and the `[default: …]` it states for an option without a
/// clap default (`[default: one per core]`).
fn split_default(help: &str) -> (String, Option<String>) {
    const OPEN: &str = "[default: ";
    let Some(open) = help.rfind(OPEN) else {
        return (help.to_owned(), None);
    };
    let Some(len) = help[open..].find(']') else {
        return (help.to_owned(), None);
    };
    let default = help[open + OPEN.len()..open + len].trim().to_owned();
    let meaning = format!("{}{}", help[..open].trim_end(), &help[open + len + 1..]);
    (meaning, Some(default))
}

/// The README's settings table: one row per option of the (built) `command`, in definition
/// order.
#[cfg(test)]
pub(super) fn settings_markdown(command: &Command) -> String {
    let mut out =
        String::from("| flag | environment variable | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
            continue;
        }
        let (meaning, stated) = split_default(&help_text(arg));
        let env = arg.get_env().map_or("—".to_owned(), |env| {
            format!("`{}`", env.to_string_lossy())
        });
        let defaults = arg.get_default_values();
        let default = if arg.get_help_heading() == Some(super::ACTIONS) {
            "—".to_owned()
        } else if let Some(stated) = stated {
            stated
        } else if defaults.is_empty() {
            "unset".to_owned()
        } else {
            defaults
                .iter()
                .map(|d| match d.to_string_lossy() {
                    d if d.is_empty() => "`\"\"`".to_owned(),
                    d => format!("`{d}`"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cell = |text: &str| text.replace('|', "\\|");
        out.push_str(&format!(
            "| `--{long}` | {env} | {} | {} |\n",
            cell(&default),
            cell(&meaning)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted() {
        let cases = [
            (
                "postgres://app:hunter2@db:5432/sb",
                "postgres://app:<redacted>@db:5432/sb",
            ),
            (
                "redis://:s3cret@redis:6379/0",
                "redis://:<redacted>@redis:6379/0",
            ),
            ("redis://:pa/ss@word@redis", "redis://:<redacted>@redis"),
            (
                "postgres://db/sb?user=app&password=hunter2&sslmode=require",
                "postgres://db/sb?user=app&password=<redacted>&sslmode=require",
            ),
            ("redis://redis:6379", "redis://redis:6379"),
            (
                "sqlite://switchboard.db?mode=rwc",
                "sqlite://switchboard.db?mode=rwc",
            ),
            ("0.0.0.0:3000", "0.0.0.0:3000"),
        ];
        for (value, redacted) in cases {
            assert_eq!(redact_url(value), redacted, "{value}");
        }
    }

    #[test]
    fn secrets_are_named_by_words() {
        for (long, secret) in [
            ("jwt-secret", true),
            ("api-key", true),
            ("hook-secret", true),
            ("cluster-keys", true),
            ("db-password", true),
            ("admin-token", true),
            ("jwt-leeway-secs", false),
            ("keyspace", false),
            ("listen", false),
        ] {
            assert_eq!(is_secret(&Arg::new("x").long(long)), secret, "{long}");
        }
    }

    #[test]
    fn stated_defaults_are_split_from_the_meaning() {
        assert_eq!(
            split_default("HTTP worker threads [default: one per core]."),
            (
                "HTTP worker threads.".to_owned(),
                Some("one per core".to_owned())
            )
        );
        assert_eq!(
            split_default("Required `iss` claim, when set."),
            ("Required `iss` claim, when set.".to_owned(), None)
        );
    }
}
