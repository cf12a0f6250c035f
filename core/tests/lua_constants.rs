//! The Lua edition writes its constants out again (a Redis Functions library cannot import
//! them): each one is checked here against rmq-core, where they are declared once, so the two
//! editions cannot drift.

use rmq_core::args::{MAX_HEADERS, NUMBER_ERRORS};
use rmq_core::queue::{DEDUP_TRIM_LIMIT, FETCH_MOVE_LIMIT, QUARANTINE_LIMIT};
use rmq_core::settings::{rule, Rule, DEFAULTS, MAX_FETCH_COUNT, MAX_NUMBER, NAMES};
use rmq_core::Error;

fn library() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../lua/rmq.lua")).expect("lua/rmq.lua")
}

/// The text of `local NAME = …`: its table up to the matching brace, or its line.
fn constant(lua: &str, name: &str) -> String {
    let start = lua.find(&format!("local {name} = ")).unwrap_or_else(|| panic!("no constant {name} in rmq.lua"));
    let rest = &lua[start..];
    let line = &rest[..rest.find('\n').unwrap()];
    if !line.contains('{') {
        return line.to_string();
    }
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return rest[..=i].to_string();
                }
            }
            _ => {}
        }
    }
    panic!("{name}: unclosed table")
}

fn number(lua: &str, name: &str) -> u64 {
    let c = constant(lua, name);
    let v = c.split('=').nth(1).unwrap().split("--").next().unwrap().trim();
    if let Some((m, e)) = v.split_once('e') {
        return m.parse::<u64>().unwrap() * 10u64.pow(e.parse().unwrap());
    }
    v.parse().unwrap_or_else(|_| panic!("{name} = {v} is not a number"))
}

#[test]
fn settings_defaults_names_and_rules_are_the_cores() {
    let lua = library();
    let names = constant(&lua, "SETTING_NAMES");
    let listed: Vec<&str> = names.split('\'').skip(1).step_by(2).collect();
    assert_eq!(listed, NAMES, "SETTING_NAMES in CONFIG GET's order");
    let defaults = constant(&lua, "DEFAULTS");
    let rules = constant(&lua, "SETTING_RULE");
    for name in NAMES {
        let want = format!("['{name}'] = {}", DEFAULTS.get(name));
        assert!(defaults.contains(&want), "DEFAULTS lacks {want}");
        let r = match rule(name) {
            Rule::Positive => "pos",
            Rule::NonNegative => "nonneg",
            Rule::Boolean => "bool",
        };
        assert!(rules.contains(&format!("['{name}'] = '{r}'")), "SETTING_RULE of {name} is not {r}");
    }
}

#[test]
fn limits_are_the_cores() {
    let lua = library();
    assert_eq!(number(&lua, "MAX_FETCH_COUNT"), MAX_FETCH_COUNT);
    assert_eq!(number(&lua, "MAX_NUMBER"), MAX_NUMBER);
    assert_eq!(number(&lua, "MAX_HEADERS"), MAX_HEADERS as u64);
    assert_eq!(number(&lua, "QUARANTINE_LIMIT"), QUARANTINE_LIMIT);
    assert_eq!(number(&lua, "BATCH"), FETCH_MOVE_LIMIT as u64);
    assert_eq!(number(&lua, "DEDUP_TRIM"), DEDUP_TRIM_LIMIT as u64);
}

#[test]
fn error_texts_are_the_cores() {
    let lua = library();
    let numbers = constant(&lua, "MSG_NUM");
    for (kw, text) in NUMBER_ERRORS {
        assert!(numbers.contains(&format!("{kw} = '{text}'")), "MSG_NUM.{kw} is not '{text}'");
    }
    // Fixed texts: each is written once in the library (after `ERR `, which `fail` adds).
    for e in [
        Error::InvalidQueueName,
        Error::InvalidId,
        Error::EmptyHeaderName,
        Error::InvalidConsumer,
        Error::DelayWithAt,
        Error::TwoNackActions,
        Error::DelayWithoutRetry,
        Error::QueueFull,
    ] {
        let text = e.to_string();
        let text = text.strip_prefix("ERR ").unwrap();
        assert!(lua.contains(&format!("'{text}'")) || lua.contains(&format!("'ERR {text}'")), "rmq.lua lacks '{text}'");
    }
    assert!(lua.contains(&format!("'{}'", Error::WrongType)), "WRONGTYPE text");
    let headers = Error::TooManyHeaders(MAX_HEADERS).to_string();
    assert_eq!(headers, "ERR a message has at most 1000 HEADERs");
    assert!(lua.contains("'a message has at most ' .. dec(MAX_HEADERS) .. ' HEADERs'"));
}
